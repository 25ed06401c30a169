"""The ``ddpm`` command: argument parsing only; every command is a library call."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import __version__
from .errors import DDPMError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddpm",
        description="Denoising Diffusion Probabilistic Models: train on images, then sample new ones.",
    )
    parser.add_argument("--version", action="version", version=f"torch-ddpm {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except DDPMError as err:
        print(f"ddpm: error: {err}", file=sys.stderr)
        return 2
