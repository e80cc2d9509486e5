"""Importers of released checkpoints into our models: key mapping and weight-norm folding."""
