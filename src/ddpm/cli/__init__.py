"""The ``ddpm`` command: argument parsing only; every command is a library call.

Each command's parser sits beside its handler (train, distill, sample, eval, edit: inpaint and
img2img, viz, serve, import, export); :mod:`.options` holds what they share. :func:`main` turns the library's
errors into one sentence and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from .._version import __version__
from ..errors import DDPMError
from . import distill, edit, export, interop, sample, serve, train, viz
from . import eval as evaluate  # not to shadow the builtin
from .options import Parser, config_overrides


def build_parser() -> Parser:
    parser = Parser(
        prog="ddpm",
        description="Denoising Diffusion Probabilistic Models: train on images, then sample new ones.",
    )
    parser.add_argument("--version", action="version", version=f"torch-ddpm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    train.add_parser(sub)
    distill.add_parser(sub)
    sample.add_parser(sub)
    evaluate.add_parser(sub)
    edit.add_parsers(sub)
    viz.add_parser(sub)
    serve.add_parser(sub)
    interop.add_parser(sub)
    export.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except DDPMError as err:
        print(f"ddpm: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # torch.OutOfMemoryError is one; CPU and MPS allocators say so in words
        text = str(err)
        if "out of memory" not in text and "can't allocate memory" not in text:
            raise
        print("ddpm: error: out of memory; lower --batch-size (or --num-samples), or use a smaller model", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only directory, a missing permission
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"ddpm: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddpm: interrupted", file=sys.stderr)
        return 130


__all__ = ["Path", "build_parser", "config_overrides", "main"]
