"""Training: checkpoints that record how they were made (checkpoint), a generic resumable trainer
(loop, with curves and torch.distributed data parallelism), per-model recipes and YAML configs
(recipes, configs/), and the `voxsight train` / `voxsight models` commands (cli)."""
