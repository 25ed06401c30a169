"""``ddpm export onnx`` and ``ddpm export web``: a run's network as ONNX, and a static page that
draws from it in the reader's browser (needs the export extra)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="export a run: its network as ONNX, or a static web page that samples in the browser",
                            description="Export a run's network (EMA weights by default) as ONNX, or as a static web "
                            "page that draws images in the reader's browser. Needs the export extra: "
                            'pip install ".[export]".')
    kinds = export.add_subparsers(dest="kind", metavar="KIND", parser_class=type(export), required=True)
    onnx = kinds.add_parser("onnx", help="the network as an ONNX file, checked with onnxruntime",
                            description="Write the run's network as ONNX (inputs x, t and class or prompt; a dynamic "
                            "batch), checked with onnxruntime against PyTorch within 1e-4.")
    add_common(onnx)
    onnx.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    onnx.set_defaults(handler=cmd_onnx)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="DIR", help="a run directory (its latest checkpoint) or a checkpoint")
    parser.add_argument("--prompt", action="append", metavar="TEXT",
                        help="a prompt the graph offers (repeat for several); text-conditional runs only")
    parser.add_argument("--no-ema", action="store_true", help="the raw weights instead of the EMA")


def cmd_onnx(args: argparse.Namespace) -> int:
    from ..export import export_onnx

    export_onnx(args.run, args.out, prompts=args.prompt, use_ema=not args.no_ema)
    return 0
