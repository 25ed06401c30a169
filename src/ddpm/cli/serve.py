"""``ddpm serve``: the local web page (needs the serve extra)."""

from __future__ import annotations

import argparse

from ..config import field_help


def add_parser(sub: argparse._SubParsersAction) -> None:
    srv = sub.add_parser("serve", help="a local web page: generate and watch the denoising, explore the forward process",
                         description="Serve a page (and its JSON API) to pick a run, generate images while watching "
                         "x_t and the predicted x_0, and explore the forward process. Needs the serve extra: "
                         'pip install ".[serve]".')
    srv.add_argument("--runs-dir", default="runs", metavar="DIR", help="the runs to offer (default: runs)")
    srv.add_argument("--run", metavar="DIR", help="also offer this run directory, and open it first")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    srv.add_argument("--device", default="auto", help=field_help("device"))
    srv.add_argument("--max-images", type=int, default=64, help="most images one request may ask for")
    srv.add_argument("--queue-size", type=int, default=4, help="requests that may wait per model while one runs")
    srv.add_argument("--max-upload-mb", type=float, default=8.0, help="largest image upload accepted")
    srv.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve import prepare, serve

    def log(message: str) -> None:
        print(message, flush=True)

    prepared = prepare(args.runs_dir, run=args.run, host=args.host, port=args.port, device=args.device,
                       max_images=args.max_images, max_waiting=args.queue_size, max_upload_mb=args.max_upload_mb, log=log)
    serve(*prepared, log=log)
    return 0
