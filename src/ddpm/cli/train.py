"""``ddpm train``: settings from the defaults, a TOML file and the options; then the training loop."""

from __future__ import annotations

import argparse
import sys

from ..config import RunConfig, apply_overrides, load_toml
from ..errors import ConfigError
from .options import add_config_options, config_overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="train a model (default: class-conditional mnist10k, 28x28 digits shipped with the package, about 3 minutes on 2 CPU cores)",
        description="Train a diffusion model. Settings come from the defaults, then --config FILE (TOML), "
        "then the options below; the run directory records the result.",
    )
    train.add_argument("--config", metavar="FILE", help="a TOML file of settings (see configs/)")
    train.add_argument("--resume", metavar="RUN", help="continue a run (its directory or a checkpoint) exactly")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory of the same name")
    add_config_options(train)
    train.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from ..runs.checkpoint import read_checkpoint
    from ..training.loop import TrainingInterrupted, train

    overrides = config_overrides(args)
    if args.resume and args.config:
        raise ConfigError("--resume takes the run's own config; leave out --config")
    if args.resume and ({"init_from", "init_weights"} & overrides.keys()):
        raise ConfigError("--init-from and --init-weights start a new run; a resumed run continues from its own "
                          "checkpoint (leave them out, or drop --resume to start a fine-tune)")
    if args.resume:
        config = read_checkpoint(args.resume).config
    elif args.config:
        config = load_toml(args.config)
    else:
        config = RunConfig()
    config = apply_overrides(config, overrides)
    if config.train.init_from and not args.resume:  # a fine-tune: what is not given is the source run's
        from ..runs.init_from import finetune_config, given_in_toml

        config = finetune_config(config, set(overrides) | (given_in_toml(args.config) if args.config else set()))
    try:
        result = train(config, resume=args.resume, overwrite=args.overwrite, log=print, progress=None)
    except TrainingInterrupted as stop:
        if stop.is_main:  # under torchrun, rank 0 alone says where the checkpoint is
            print(f"ddpm: {stop}", file=sys.stderr)
        return 130
    if result.is_main:
        print(f"samples: {result.run_dir / 'samples'}  checkpoints: {result.run_dir / 'checkpoints'}")
        print(f"draw new images with: ddpm sample --run {result.run_dir}")
    return 0
