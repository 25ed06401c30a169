"""``ddpm export onnx`` and ``ddpm export web``: a run's network as ONNX, and a static page that
draws from it in the reader's browser (needs the export extra)."""

from __future__ import annotations

import argparse

from .options import add_sampling_options, sampling_settings


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

    web = kinds.add_parser("web", help="a static folder (index.html, the sampler in JavaScript, model.onnx)",
                           description="Write a static folder that any web server can host: a page that draws images "
                           "with the run's sampler in the reader's browser (onnxruntime-web, WebAssembly).")
    add_common(web)
    web.add_argument("--out", required=True, metavar="DIR", help="the folder to write (new or empty)")
    add_sampling_options(web, ("sampler", "steps", "guidance_scale"), help={
        "sampler": "the page's sampler: ddim, dpm++2m, dpm++3m, dpm++2m-sde, unipc2 or unipc3 (default: the run's own; "
                   "a distilled student: its own)",
        "guidance_scale": "the page's initial guidance; the reader can change it (default: the run's own)"})
    web.add_argument("--n", type=int, help="images per Generate (default: 16; the reader can change it)")
    web.add_argument("--bundle-runtime", action="store_true",
                     help="copy onnxruntime-web into the folder (from npm install onnxruntime-web; see --runtime-dir) "
                     "instead of loading it from the pinned CDN address; for offline use")
    web.add_argument("--runtime-dir", metavar="DIR",
                     help="the onnxruntime-web package folder (default: ./node_modules/onnxruntime-web)")
    web.add_argument("--overwrite", action="store_true", help="replace the page files of a folder written before")
    web.add_argument("--embed", action="store_true", help="also print an iframe snippet for a blog post")
    web.set_defaults(handler=cmd_web)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="DIR", help="a run directory (its latest checkpoint) or a checkpoint")
    parser.add_argument("--prompt", action="append", metavar="TEXT",
                        help="a prompt the graph offers (repeat for several); text-conditional runs only")
    parser.add_argument("--no-ema", action="store_true", help="the raw weights instead of the EMA")


def cmd_onnx(args: argparse.Namespace) -> int:
    from ..export import export_onnx

    export_onnx(args.run, args.out, prompts=args.prompt, use_ema=not args.no_ema)
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    from ..export import export_web, embed_snippet

    out = export_web(args.run, args.out, prompts=args.prompt, n=args.n, bundle_runtime=args.bundle_runtime,
                     runtime_dir=args.runtime_dir, use_ema=not args.no_ema, overwrite=args.overwrite,
                     **sampling_settings(args))
    if args.embed:
        print(embed_snippet(out))
    return 0
