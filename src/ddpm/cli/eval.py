"""``ddpm eval``: FID, KID, precision/recall, bits/dim (and class accuracy) of a run."""

from __future__ import annotations

import argparse

from ..config import field_help
from .options import add_sampling_options, sampling_settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="FID, KID, precision/recall, bits/dim (and class accuracy) of a run",
                        description="Evaluate a trained run against its data set's held-out split; prints a table "
                        "and writes RUN/eval/<time>.json.")
    ev.add_argument("--run", required=True, metavar="DIR", help="a run directory or checkpoint")
    ev.add_argument("--num-samples", type=int, default=1000, help="generated images to compare")
    ev.add_argument("--batch-size", type=int, default=250, help="images drawn (and featurised) at once")
    ev.add_argument("--seed", type=int, default=0, help="the seed of the generated images and of bits/dim's noise")
    ev.add_argument("--features", default="classifier", choices=("classifier", "inception"),
                    help="classifier: a small CNN trained on the data set (offline); inception: standard FID")
    ev.add_argument("--inception-weights", metavar="FILE",
                    help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (default: the one in --cache-dir)")
    ev.add_argument("--download", action="store_true", help="download the Inception weights once into the cache")
    ev.add_argument("--bpd-images", type=int, default=100, help="held-out images for bits/dim (0 skips it)")
    add_sampling_options(ev, ("sampler", "steps", "eta", "guidance_scale", "grid", "clip", "final", "threshold_percentile",
                              "threshold_max", "clipped_eps"))
    ev.add_argument("--class", dest="cls", type=int, action="append", metavar="N",
                    help="class-conditional runs: draw only these classes, in turn (repeat the option; default: all)")
    ev.add_argument("--prompts-file", metavar="FILE",
                    help="text runs with label-derived captions: also the prompt accuracy of these prompts, one "
                    "'CLASS: prompt' per line (e.g. '7: the number seven')")
    ev.add_argument("--cache-dir", metavar="DIR", help="classifier and statistics cache (default ~/.cache/torch-ddpm/eval)")
    ev.add_argument("--no-ema", action="store_true", help="evaluate the raw weights instead of the EMA")
    ev.add_argument("--device", default="auto", help=field_help("device"))
    ev.set_defaults(handler=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..eval.report import EvalSettings, evaluate_run, format_table
    from ..runs.checkpoint import read_checkpoint
    from ..runs.settings import sample_settings

    sample = None
    given = sampling_settings(args)
    if any(value is not None for value in given.values()):  # the run's own [sample], with what was given in place
        sample = sample_settings(read_checkpoint(args.run).config.sample, **given)
    settings = EvalSettings(
        num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed, features=args.features,
        sample=sample, bpd_images=args.bpd_images, inception_weights=args.inception_weights,
        download=args.download, cache_dir=args.cache_dir, use_ema=not args.no_ema, device=args.device,
        classes=tuple(args.cls or ()),
        prompts_file=args.prompts_file,
    )
    result = evaluate_run(args.run, settings, log=print)
    print(format_table(result))
    print(f"written to {result['written_to']}")
    return 0
