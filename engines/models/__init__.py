"""The engines' neural networks, each with its config dataclass beside it."""
