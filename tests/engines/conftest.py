from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_seeded() -> Iterator[None]:
    """Engine tests use small tensors: on a shared 2-core machine a second intra-op thread only adds
    contention (measured 10-20x slower). Seeded, so every test starts from the same random state."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
