"""The facade: :class:`GaussianDiffusion`, the familiar one-object API over the plain modules."""

from .edits import eval_mode, normalize, unnormalize
from .gaussian import GaussianDiffusion

__all__ = ["GaussianDiffusion", "eval_mode", "normalize", "unnormalize"]
