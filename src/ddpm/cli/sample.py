"""``ddpm sample``: images from a trained run or checkpoint, into a directory."""

from __future__ import annotations

import argparse

from ..config import field_help
from .options import add_sampling_options, sampling_settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    sample = sub.add_parser("sample", help="draw images from a trained model",
                            description="Draw images from a trained run or checkpoint (EMA weights by default).")
    where = sample.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", metavar="DIR", help="a run directory (its latest checkpoint)")
    where.add_argument("--checkpoint", metavar="PATH", help="a checkpoint directory or its .safetensors file")
    sample.add_argument("--n", type=int, default=64, help="number of images (per class with --per-class)")
    sample.add_argument("--batch-size", type=int, default=64, help="images drawn at once (part of what the seed reproduces)")
    sample.add_argument("--seed", type=int, default=0, help="the same seed and batch size give the same images")
    add_sampling_options(sample, ("sampler", "steps", "eta", "grid", "clip", "final", "threshold_percentile",
                                  "threshold_max", "clipped_eps"))
    sample.add_argument("--class", dest="cls", type=int, action="append", metavar="N",
                        help="draw this class (repeat for several); class-conditional models only")
    sample.add_argument("--per-class", action="store_true", help="--n images of each class, one grid row per class")
    add_sampling_options(sample, ("guidance_scale",))
    sample.add_argument("--prompt", action="append", metavar="TEXT",
                        help="draw --n images of this caption, one grid row per prompt (repeat for several); "
                        "text-conditional runs only")
    sample.add_argument("--prompts-file", metavar="FILE", help="prompts, one per line (also with --prompt)")
    sample.add_argument("--out", metavar="DIR", help="output directory (default: RUN/generated/step<N>-seed<S>-<time>)")
    sample.add_argument("--overwrite", action="store_true", help="write into a non-empty --out directory")
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--device", default="auto", help=field_help("device"))
    sample.set_defaults(handler=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    from ..generate import sample_to_directory

    source = args.run or args.checkpoint
    prompts = list(args.prompt or [])
    if args.prompts_file:
        from ..text.prompts import read_prompts

        prompts += read_prompts(args.prompts_file)
    out = sample_to_directory(source, out=args.out, num=args.n, batch_size=args.batch_size, seed=args.seed,
                              classes=args.cls, per_class=args.per_class, use_ema=not args.no_ema, device=args.device,
                              overwrite=args.overwrite, log=print, prompts=prompts or None, **sampling_settings(args))
    print(f"wrote {out}")
    return 0
