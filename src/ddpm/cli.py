"""The ``ddpm`` command: argument parsing only; every command is a library call."""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Sequence

from . import __version__
from .config import RunConfig, apply_overrides, field_index, load_toml, option_help
from .errors import ConfigError, DDPMError

NOT_GIVEN = None


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one sentence and exits with status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"ddpm: error: {message}\n")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` per configuration field (see ddpm.config)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, (section, _field, tp) in field_index().items():
        group = groups.setdefault(section or "run", parser.add_argument_group(f"[{section or 'run'}] settings"))
        flag = "--" + name.replace("_", "-")
        if tp is bool:
            group.add_argument(flag, dest=f"cfg_{name}", action=argparse.BooleanOptionalAction, default=NOT_GIVEN,
                               help=option_help(name))
        else:
            meta = "A,B,..." if typing.get_origin(tp) is tuple else tp.__name__.upper()
            group.add_argument(flag, dest=f"cfg_{name}", metavar=meta, default=NOT_GIVEN, help=option_help(name))


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
    print(f"samples: {result.run_dir / 'samples'}  checkpoints: {result.run_dir / 'checkpoints'}")
    print(f"draw new images with: ddpm sample --run {result.run_dir}")
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

    sample = sub.add_parser("sample", help="draw images from a trained model",
                            description="Draw images from a trained run or checkpoint (EMA weights by default).")
    where = sample.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", metavar="DIR", help="a run directory (its latest checkpoint)")
    where.add_argument("--checkpoint", metavar="PATH", help="a checkpoint directory or its .safetensors file")
    sample.add_argument("--n", type=int, default=64, help="number of images (per class with --per-class)")
    sample.add_argument("--batch-size", type=int, default=64)
    sample.add_argument("--seed", type=int, default=0, help="the same seed gives the same images")
    sample.add_argument("--sampler", help="ancestral, ddim, dpm++2m, ... (default: the run's)")
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
    except KeyboardInterrupt:
        print("ddpm: interrupted", file=sys.stderr)
        return 130


__all__ = ["Path", "build_parser", "main"]
