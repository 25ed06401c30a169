"""``ddpm distill``: progressive distillation of a trained run into a few-step student."""

from __future__ import annotations

import argparse
import sys

from .options import add_config_options, config_overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..distill.settings import option_helps

    distill = sub.add_parser(
        "distill",
        help="progressive distillation: a student that samples in a few steps (Salimans & Ho 2022)",
        description="Distil a trained run into a student that samples in --to-steps deterministic DDIM steps, "
        "halving the teacher's to_steps * 2**rounds steps in each of --rounds rounds. The student is a run "
        "directory (ddpm sample/eval/viz take it); every round's student is kept as a checkpoint.",
    )
    source = distill.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", metavar="TEACHER", help="the teacher: a run directory or checkpoint")
    source.add_argument("--resume", metavar="RUN", help="continue a student's run exactly")
    distill.add_argument("--out", metavar="DIR", help="the student's run directory (default: runs/<teacher>-distill-<time>)")
    distill.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    add_config_options(distill, only=option_helps())
    distill.set_defaults(handler=cmd_distill)


def cmd_distill(args: argparse.Namespace) -> int:
    from ..distill import progressive_distillation
    from ..training.loop import TrainingInterrupted

    try:
        result = progressive_distillation(args.run, out=args.out, settings=config_overrides(args), resume=args.resume,
                                          overwrite=args.overwrite, log=print, progress=None)
    except TrainingInterrupted as stop:
        print(f"ddpm: {stop}", file=sys.stderr)
        return 130
    for steps, path in sorted(result.students.items(), reverse=True):
        print(f"{steps}-step student: {path}")
    if result.finished:
        print(f"draw images with: ddpm sample --run {result.run_dir}")
    return 0
