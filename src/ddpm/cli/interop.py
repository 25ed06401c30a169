"""``ddpm import``: another library's model as a run directory (diffusers' UNet2DModel DDPMs)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser(
        "import", help="make a run from a diffusers DDPM: a local folder or a Hub id such as google/ddpm-cifar10-32",
        description="Import a diffusers DDPM (UNet2DModel and its DDPM or DDIM scheduler) as an ordinary run "
        "directory: sample, eval, inpaint, img2img, viz, serve and distill then work on it. Needs the "
        '[diffusers] extra: pip install "torch-ddpm[diffusers]".')
    imp.add_argument("source", metavar="diffusers:SOURCE",
                     help="diffusers:FOLDER (a pipeline folder with model_index.json, unet/ and scheduler/, or a "
                     "UNet2DModel folder) or diffusers:OWNER/NAME (a Hub id, downloaded into huggingface_hub's cache)")
    imp.add_argument("--out", required=True, metavar="DIR", help="the run directory to write (e.g. runs/cifar10-google)")
    imp.add_argument("--revision", metavar="REV", help="Hub ids: the branch, tag or commit (default: main)")
    imp.add_argument("--scheduler", metavar="NAME=VALUE,...",
                     help="scheduler settings in diffusers' names, over the folder's own (a bare unet/ folder has "
                     "none: DDPMScheduler's defaults fill the rest), e.g. variance_type=fixed_large,prediction_type=epsilon")
    imp.add_argument("--dataset", default="", metavar="NAME",
                     help="the data set the model was trained on, which ddpm eval compares samples with "
                     "(e.g. cifar10, or folder:PATH); empty: none recorded")
    imp.add_argument("--cache-dir", metavar="DIR", help="Hub ids: huggingface_hub's cache (default: its own, HF_HOME)")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing run directory of that name")
    imp.set_defaults(handler=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from ..interop.diffusers_import import import_diffusers, split_source
    from ..interop.scheduler import parse_settings

    source = split_source(args.source)
    out = import_diffusers(source, args.out, revision=args.revision,
                           scheduler=parse_settings(args.scheduler) if args.scheduler else None,
                           dataset=args.dataset, overwrite=args.overwrite, cache_dir=args.cache_dir, log=print)
    print(f"draw images with: ddpm sample --run {out}")
    return 0
