"""Progressive distillation (Salimans & Ho 2022): students that sample in 1 to 4 steps.

A student starts as a copy of its teacher and learns to take in ONE deterministic DDIM step what
the teacher takes in two; it then teaches the next student, halving the steps each round.

- :func:`progressive_distillation` (``ddpm distill``): rounds in a run directory, resumable exactly;
- :class:`RoundTrainer`: one round's optimisation, for any teacher function and student network;
- ``target.py``: the two-step target and the loss weights; ``grids.py``: the halving of the grids.
"""

from .grids import halve, round_grids
from .run import DistillResult, progressive_distillation
from .target import WEIGHTINGS, loss_weight, step_triples, student_loss, teacher_target
from .trainer import RoundTrainer

__all__ = [
    "DistillResult",
    "RoundTrainer",
    "WEIGHTINGS",
    "halve",
    "loss_weight",
    "progressive_distillation",
    "round_grids",
    "step_triples",
    "student_loss",
    "teacher_target",
]
