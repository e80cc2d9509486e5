"""Data-parallel training over torch.distributed: one process per device, started by torchrun.

torchrun describes the process group in RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT);
without them training is a single process and every function here is a no-op. Backend: nccl when the
processes use CUDA, gloo on CPU.

Gradients are averaged by `average_gradients` (one flat all-reduce per step) rather than by wrapping the
model in DistributedDataParallel: DDP only synchronises through the wrapper's forward, and our loss
functions call models' other methods (encoders, a denoiser inside a diffusion loss) and read their
configs; our models are small, so overlapping the reduce with the backward pass would buy little.
A parameter a process did not use counts as a zero gradient there, so the reduce always matches across
processes; one that no process used keeps no gradient, as it would in one process.

Batches (`ShardedBatchSampler`): each global batch is the next `batch_size × world_size` indices of a
permutation drawn from (seed, epoch), and process r takes its r-th slice, so with a batch-mean loss N
processes take the same steps as one process with N times the batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """The process that writes files and shows progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched() -> bool:
    """Started by torchrun (or anything else that sets its environment) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str = "auto") -> Context:
    """This process's place in the group (joining it when launched by torchrun) and its device:
    "auto" is this process's CUDA device when there is one, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    use_cuda = device.startswith("cuda")
    if not launched():
        return Context(device=torch.device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return Context(rank, world, local, torch.device("cuda", local) if use_cuda else torch.device("cpu"))


def teardown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_module(module: nn.Module, ctx: Context) -> None:
    """Every process starts from rank 0's parameters and buffers."""
    if ctx.enabled:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(params: list[nn.Parameter], ctx: Context) -> None:
    """Replace each gradient by its mean over the processes (module docstring)."""
    if not ctx.enabled or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    used = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([*(g.reshape(-1) for g in grads), used])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for p, used_somewhere in zip(params, flat[-len(params):].tolist(), strict=True):
        p.grad = flat[offset:offset + p.numel()].view_as(p) if used_somewhere else None
        offset += p.numel()


def mean_over_processes(values: dict[str, float], ctx: Context) -> dict[str, float]:
    """Each value averaged over the processes (every process must pass the same keys)."""
    if not ctx.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return dict(zip(keys, (t / ctx.world_size).tolist(), strict=True))


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (seed, rank, step, ...)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


class ShardedBatchSampler(Sampler[list[int]]):
    """This process's batches of one epoch (module docstring); `start` skips batches already trained."""

    def __init__(self, n_items: int, batch_size: int, ctx: Context, seed: int, epoch: int,
                 start: int = 0) -> None:
        global_batch = batch_size * ctx.world_size
        if n_items < global_batch:
            raise ValueError(f"the data set has {n_items} items, fewer than one global batch "
                             f"({batch_size} × {ctx.world_size} processes)")
        self.n_items, self.batch_size, self.ctx = n_items, batch_size, ctx
        self.seed, self.epoch, self.start = seed, epoch, start
        self.batches = n_items // global_batch

    def __len__(self) -> int:
        return max(0, self.batches - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(self.n_items, generator=g)
        global_batch = self.batch_size * self.ctx.world_size
        for b in range(self.start, self.batches):
            lo = b * global_batch + self.ctx.rank * self.batch_size
            yield order[lo:lo + self.batch_size].tolist()
