"""The ``ddpm`` command: argument parsing only; every command is a library call."""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Sequence

from . import __version__
from .config import AUTO, RunConfig, apply_overrides, field_index, is_auto_bool, load_toml, option_help
from .errors import ConfigError, DDPMError

NOT_GIVEN = None


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one sentence and exits with status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"ddpm: error: {message}\n")


def add_config_options(parser: argparse.ArgumentParser, only: typing.Mapping[str, str] | None = None) -> None:
    """One ``--field-name`` per configuration field (see ddpm.config): those named in ``only``
    (name -> help), or all but those of [distill], which ``ddpm distill`` sets."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    describe = option_help if only is None else only.__getitem__
    for name, (section, _field, tp) in field_index().items():
        if (section == "distill") if only is None else (name not in only):
            continue
        group = groups.setdefault(section or "run", parser.add_argument_group(f"[{section or 'run'}] settings"))
        flag = "--" + name.replace("_", "-")
        if tp is bool:
            group.add_argument(flag, dest=f"cfg_{name}", action=argparse.BooleanOptionalAction, default=NOT_GIVEN,
                               help=describe(name))
        elif is_auto_bool(tp):  # --bf16 (on), --bf16 auto, --no-bf16
            group.add_argument(flag, dest=f"cfg_{name}", nargs="?", const="true", metavar=f"{AUTO}|true|false", default=NOT_GIVEN,
                               help=describe(name) + f"; {flag} alone: true, --no-{flag[2:]}: false")
            group.add_argument("--no-" + flag[2:], dest=f"cfg_{name}", action="store_const", const="false", help=argparse.SUPPRESS)
        else:
            meta = "A,B,..." if typing.get_origin(tp) is tuple else tp.__name__.upper()
            group.add_argument(flag, dest=f"cfg_{name}", metavar=meta, default=NOT_GIVEN, help=describe(name))


def config_overrides(args: argparse.Namespace) -> dict[str, str]:
    out = {}
    for name in field_index():
        value = getattr(args, f"cfg_{name}", NOT_GIVEN)
        if value is not NOT_GIVEN:
            out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


# ---- train ------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .training.checkpoint import read_checkpoint
    from .training.loop import TrainingInterrupted, train

    overrides = config_overrides(args)
    if args.resume and args.config:
        raise ConfigError("--resume takes the run's own config; leave out --config")
    if args.resume:
        config = read_checkpoint(args.resume).config
    elif args.config:
        config = load_toml(args.config)
    else:
        config = RunConfig()
    config = apply_overrides(config, overrides)
    try:
        result = train(config, resume=args.resume, overwrite=args.overwrite, log=print, progress=None)
    except TrainingInterrupted as stop:
        print(f"ddpm: {stop}", file=sys.stderr)
        return 130
    if result.is_main:
        print(f"samples: {result.run_dir / 'samples'}  checkpoints: {result.run_dir / 'checkpoints'}")
        print(f"draw new images with: ddpm sample --run {result.run_dir}")
    return 0


# ---- distill ----------------------------------------------------------------------------------


def cmd_distill(args: argparse.Namespace) -> int:
    from .distill import progressive_distillation
    from .training.loop import TrainingInterrupted

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


# ---- sample -----------------------------------------------------------------------------------


def cmd_sample(args: argparse.Namespace) -> int:
    from .generate import sample_to_directory

    source = args.run or args.checkpoint
    out = sample_to_directory(
        source,
        out=args.out,
        num=args.n,
        batch_size=args.batch_size,
        seed=args.seed,
        sampler=args.sampler,
        steps=args.steps,
        eta=args.eta,
        grid=args.grid,
        clip=args.clip,
        classes=args.cls,
        per_class=args.per_class,
        guidance_scale=args.guidance_scale,
        use_ema=not args.no_ema,
        device=args.device,
        overwrite=args.overwrite,
        log=print,
    )
    print(f"wrote {out}")
    return 0


# ---- eval -------------------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .eval.report import EvalSettings, evaluate_run, format_table
    from .training.checkpoint import read_checkpoint

    sample = None
    given = {"sampler": args.sampler, "steps": args.steps, "eta": args.eta, "guidance_scale": args.guidance_scale,
             "grid": args.grid, "clip": args.clip}
    if any(v is not None for v in given.values()):
        sample = replace(read_checkpoint(args.run).config.sample, **{k: v for k, v in given.items() if v is not None})
    settings = EvalSettings(
        num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed, features=args.features,
        sample=sample, bpd_images=args.bpd_images, inception_weights=args.inception_weights,
        download=args.download, cache_dir=args.cache_dir, use_ema=not args.no_ema, device=args.device,
        classes=tuple(args.cls or ()),
    )
    result = evaluate_run(args.run, settings, log=print)
    print(format_table(result))
    print(f"written to {result['written_to']}")
    return 0


# ---- viz --------------------------------------------------------------------------------------


def cmd_viz(args: argparse.Namespace) -> int:
    from . import pictures

    if args.what == "forward":
        out = pictures.forward_picture(args.out or "forward.png", dataset=args.dataset, data_dir=args.data_dir,
                                       download=args.download, cache_dir=args.cache_dir, image_size=args.image_size,
                                       num_images=args.n or 6, columns=args.columns, schedule=args.schedule,
                                       timesteps=args.timesteps, seed=args.seed)
        print(f"wrote {out}")
    elif args.what == "schedules":
        out = pictures.schedules_picture(args.out or "schedules.png", timesteps=args.timesteps,
                                         zero_terminal_snr=args.zero_terminal_snr)
        print(f"wrote {out}")
    else:
        if not args.run:
            raise ConfigError(f"ddpm viz {args.what} needs --run RUN (a trained run or checkpoint)")
        if args.what == "reverse":
            anim, still = pictures.reverse_picture(args.run, args.out or "reverse.gif", still=args.still,
                                                   num_images=args.n or 8, sampler=args.sampler, steps=args.steps,
                                                   eta=args.eta, guidance_scale=args.guidance_scale,
                                                   classes=args.cls, seed=args.seed, device=args.device,
                                                   columns=args.columns)
            print(f"wrote {anim}" + (f" and {still}" if still else ""))
        else:
            out = pictures.interpolation_picture(args.run, args.out or "interpolation.png", rows=args.n or 4,
                                                 columns=args.columns, steps=args.steps, classes=args.cls,
                                                 seed=args.seed, device=args.device)
            print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ddpm",
        description="Denoising Diffusion Probabilistic Models: train on images, then sample new ones.",
    )
    parser.add_argument("--version", action="version", version=f"torch-ddpm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    train = sub.add_parser(
        "train",
        help="train a model (default: the built-in 8x8 digits, a few minutes on a laptop CPU)",
        description="Train a diffusion model. Settings come from the defaults, then --config FILE (TOML), "
        "then the options below; the run directory records the result.",
    )
    train.add_argument("--config", metavar="FILE", help="a TOML file of settings (see configs/)")
    train.add_argument("--resume", metavar="RUN", help="continue a run (its directory or a checkpoint) exactly")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory of the same name")
    add_config_options(train)
    train.set_defaults(handler=cmd_train)

    from .distill.settings import option_helps

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

    sample = sub.add_parser("sample", help="draw images from a trained model",
                            description="Draw images from a trained run or checkpoint (EMA weights by default).")
    where = sample.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", metavar="DIR", help="a run directory (its latest checkpoint)")
    where.add_argument("--checkpoint", metavar="PATH", help="a checkpoint directory or its .safetensors file")
    sample.add_argument("--n", type=int, default=64, help="number of images (per class with --per-class)")
    sample.add_argument("--batch-size", type=int, default=64)
    sample.add_argument("--seed", type=int, default=0, help="the same seed gives the same images")
    sample.add_argument("--sampler", help="ancestral, ddim, dpm++2m, dpm++3m or dpm++2m-sde (default: the run's)")
    sample.add_argument("--steps", type=int, help="model evaluations (default: the sampler's)")
    sample.add_argument("--eta", type=float, help="DDIM noise: 0 deterministic, 1 ancestral-like")
    sample.add_argument("--grid", help="timestep grid: uniform, trailing, leading, quadratic, karras, logsnr")
    sample.add_argument("--clip", help="clipping of the predicted x0: static, dynamic or none")
    sample.add_argument("--class", dest="cls", type=int, action="append", metavar="N",
                        help="draw this class (repeat for several); class-conditional models only")
    sample.add_argument("--per-class", action="store_true", help="--n images of each class, one grid row per class")
    sample.add_argument("--guidance-scale", type=float, help="classifier-free guidance w (1 = plain conditional)")
    sample.add_argument("--out", metavar="DIR", help="output directory (default: RUN/generated/<time>)")
    sample.add_argument("--overwrite", action="store_true", help="write into a non-empty --out directory")
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--device", default="auto")
    sample.set_defaults(handler=cmd_sample)

    ev = sub.add_parser("eval", help="FID, KID, precision/recall, bits/dim (and class accuracy) of a run",
                        description="Evaluate a trained run against its data set's held-out split; prints a table "
                        "and writes RUN/eval/<time>.json.")
    ev.add_argument("--run", required=True, metavar="DIR", help="a run directory or checkpoint")
    ev.add_argument("--num-samples", type=int, default=1000, help="generated images to compare")
    ev.add_argument("--batch-size", type=int, default=250)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--features", default="classifier", choices=("classifier", "inception"),
                    help="classifier: a small CNN trained on the data set (offline); inception: standard FID")
    ev.add_argument("--inception-weights", metavar="FILE", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
    ev.add_argument("--download", action="store_true", help="download the Inception weights once into the cache")
    ev.add_argument("--bpd-images", type=int, default=100, help="held-out images for bits/dim (0 skips it)")
    ev.add_argument("--sampler")
    ev.add_argument("--steps", type=int)
    ev.add_argument("--eta", type=float)
    ev.add_argument("--guidance-scale", type=float)
    ev.add_argument("--grid")
    ev.add_argument("--clip")
    ev.add_argument("--class", dest="cls", type=int, action="append", metavar="N",
                    help="class-conditional runs: draw only these classes, in turn (repeat the option; default: all)")
    ev.add_argument("--cache-dir", metavar="DIR", help="classifier and statistics cache (default ~/.cache/torch-ddpm/eval)")
    ev.add_argument("--no-ema", action="store_true")
    ev.add_argument("--device", default="auto")
    ev.set_defaults(handler=cmd_eval)

    viz = sub.add_parser("viz", help="pictures of the forward and reverse processes",
                         description="forward: training images noised step by step; reverse: an animation of "
                         "sampling (x_t and predicted x_0) and a still grid; interpolate: DDIM decodes along a "
                         "path between two noises; schedules: alpha_bar and log-SNR of the beta schedules.")
    viz.add_argument("what", choices=("forward", "reverse", "interpolate", "schedules"))
    viz.add_argument("--run", metavar="DIR", help="a trained run (reverse, interpolate)")
    viz.add_argument("--out", metavar="FILE", help="output file (.png; .gif or .webp for reverse)")
    viz.add_argument("--still", metavar="FILE", help="reverse: also a still grid, rows = samples, columns = steps")
    viz.add_argument("--n", type=int, help="images (forward, reverse) or rows (interpolate)")
    viz.add_argument("--columns", type=int, default=10, help="timesteps (forward, reverse still) or points (interpolate)")
    viz.add_argument("--dataset", default="digits", help="forward: the data set")
    viz.add_argument("--data-dir")
    viz.add_argument("--download", action="store_true", help="forward: fetch the data set if missing")
    viz.add_argument("--cache-dir", help="forward: where downloads go (default ~/.cache/torch-ddpm)")
    viz.add_argument("--image-size", type=int, help="forward: resize (required for folder:PATH)")
    viz.add_argument("--schedule", default="linear", help="forward: the beta schedule")
    viz.add_argument("--timesteps", type=int, default=1000)
    viz.add_argument("--zero-terminal-snr", action="store_true", help="schedules: rescale to zero terminal SNR")
    viz.add_argument("--sampler")
    viz.add_argument("--steps", type=int)
    viz.add_argument("--eta", type=float, help="reverse: DDIM noise")
    viz.add_argument("--guidance-scale", type=float, help="reverse: classifier-free guidance w")
    viz.add_argument("--class", dest="cls", type=int, action="append", metavar="N")
    viz.add_argument("--seed", type=int, default=0)
    viz.add_argument("--device", default="auto")
    viz.set_defaults(handler=cmd_viz)
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


__all__ = ["Path", "build_parser", "main"]
