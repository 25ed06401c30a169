"""The ``ddpm`` command: argument parsing only; every command is a library call."""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Sequence

from ._version import __version__
from .config import (AUTO, RunConfig, apply_overrides, field_choices, field_help, field_index, is_auto_bool, is_auto_float,
                     load_toml, option_help)
from .errors import ConfigError, DDPMError

# The modules that register the names the help lists (ddpm.config.register_choices): imported here so
# every --help shows them, whatever else has been imported.
from .data import DATASET_NAMES  # noqa: F401,E402
from .distill.target import WEIGHTINGS  # noqa: F401,E402

NOT_GIVEN = None


class HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, unless the help already says it (an option whose
    default is None, e.g. "the run's own", says so in its text) or it is an on/off switch."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one sentence and exits with status 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"ddpm: error: {message}\n")


def add_config_options(parser: argparse.ArgumentParser, only: typing.Mapping[str, str] | None = None) -> None:
    """One ``--field-name`` per configuration field (see ddpm.config), its help from the field's
    ``opt``: those named in ``only`` (name -> help), or all but those of [distill], which
    ``ddpm distill`` sets."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, (section, _field, tp) in field_index().items():
        if (section == "distill") if only is None else (name not in only):
            continue
        group = groups.setdefault(section or "run", parser.add_argument_group(f"[{section or 'run'}] settings"))
        flag = "--" + name.replace("_", "-")
        text = (option_help(name) if only is None else only[name]).replace("%", "%%")  # argparse %-formats help strings
        if tp is bool:
            group.add_argument(flag, dest=f"cfg_{name}", action=argparse.BooleanOptionalAction, default=NOT_GIVEN,
                               help=text)
        elif is_auto_bool(tp):  # --bf16 (on), --bf16 auto, --no-bf16
            group.add_argument(flag, dest=f"cfg_{name}", nargs="?", const="true", metavar=f"{AUTO}|true|false", default=NOT_GIVEN,
                               help=text.replace(" (default:", f"; {flag} alone: true (default:", 1))
            group.add_argument("--no-" + flag[2:], dest=f"cfg_{name}", action="store_const", const="false",
                               help=f"the same as {flag} false")
        else:
            meta = ("A,B,..." if typing.get_origin(tp) is tuple else "NAME" if field_choices(name)
                    else f"FLOAT|{AUTO}" if is_auto_float(tp) else tp.__name__.upper())
            group.add_argument(flag, dest=f"cfg_{name}", metavar=meta, default=NOT_GIVEN, help=text)


def sampling_help(name: str, default: str = "the run's own [sample] setting") -> str:
    """Help for a sampling option of sample/eval/viz: the config field's accepted values and
    what 0 or empty means, with the default such a command uses."""
    text = {"sampler": "the sampler", "steps": "model evaluations per image",
            "eta": "ddim only: noise added per step, 0 (deterministic) to 1 (like ancestral)",
            "grid": "which timesteps the sampler visits", "clip": "clipping of the predicted x0",
            "guidance_scale": "classifier-free guidance w (class-conditional runs; 1: plain conditional)"}[name]
    help_text = field_help(name)
    for special in ("; 0: ", "; empty: "):  # what 0 or empty means, as the config field says it
        if special in help_text:
            text += help_text[help_text.index(special):]
    choices = field_choices(name)
    if choices:
        text += f"; one of: {', '.join(choices)}"
    return (text + f" (default: {default})").replace("%", "%%")


def config_overrides(args: argparse.Namespace) -> dict[str, str]:
    out = {}
    for name in field_index():
        value = getattr(args, f"cfg_{name}", NOT_GIVEN)
        if value is not NOT_GIVEN:
            out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


# ---- train ------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .runs.checkpoint import read_checkpoint
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
        if stop.is_main:  # under torchrun, rank 0 alone says where the checkpoint is
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
    prompts = list(args.prompt or [])
    if args.prompts_file:
        from .text.prompts import read_prompts

        prompts += read_prompts(args.prompts_file)
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
        final=args.final,
        threshold_percentile=args.threshold_percentile,
        threshold_max=args.threshold_max,
        clipped_eps=False if args.no_clipped_eps else None,
        use_ema=not args.no_ema,
        device=args.device,
        overwrite=args.overwrite,
        log=print,
        prompts=prompts or None,
    )
    print(f"wrote {out}")
    return 0


# ---- eval -------------------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .eval.report import EvalSettings, evaluate_run, format_table
    from .runs.checkpoint import read_checkpoint

    sample = None
    given = {"sampler": args.sampler, "steps": args.steps, "eta": args.eta, "guidance_scale": args.guidance_scale,
             "grid": args.grid, "clip": args.clip, "final": args.final, "threshold_percentile": args.threshold_percentile,
             "threshold_max": args.threshold_max, "clipped_eps": False if args.no_clipped_eps else None}
    if any(v is not None for v in given.values()):
        sample = replace(read_checkpoint(args.run).config.sample, **{k: v for k, v in given.items() if v is not None})
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


# ---- inpaint and img2img ----------------------------------------------------------------------


def cmd_inpaint(args: argparse.Namespace) -> int:
    from .editing import inpaint_to_directory

    out = inpaint_to_directory(args.run, args.image, mask=args.mask, box=args.box, out=args.out, num=args.n,
                               batch_size=args.batch_size, seed=args.seed, steps=args.steps, jump_length=args.jump_length,
                               jump_n_sample=args.jump_n_sample, grid=args.grid, clip=args.clip, classes=args.cls,
                               guidance_scale=args.guidance_scale, prompt=args.prompt, use_ema=not args.no_ema, device=args.device,
                               overwrite=args.overwrite, log=print)
    print(f"wrote {out}")
    return 0


def cmd_img2img(args: argparse.Namespace) -> int:
    from .editing import img2img_to_directory

    out = img2img_to_directory(args.run, args.image, strength=args.strength, out=args.out, num=args.n,
                               batch_size=args.batch_size, seed=args.seed, sampler=args.sampler, steps=args.steps,
                               eta=args.eta, grid=args.grid, clip=args.clip, classes=args.cls,
                               guidance_scale=args.guidance_scale, prompt=args.prompt, use_ema=not args.no_ema, device=args.device,
                               overwrite=args.overwrite, log=print)
    print(f"wrote {out}")
    return 0


def add_mask_options(parser: argparse.ArgumentParser, required: bool, prefix: str = "") -> None:
    """--mask FILE or --box X0,Y0,X1,Y1: the region to generate."""
    where = parser.add_mutually_exclusive_group(required=required)
    where.add_argument("--mask", metavar="FILE", help=prefix + "a mask image of the input's size: white where new content "
                       "is generated, black where the image is kept")
    where.add_argument("--box", metavar="X0,Y0,X1,Y1", help=prefix + "the rectangle to generate instead, in pixels of the "
                       "image at the run's size (x1, y1 exclusive; 0,14,28,28 is the bottom half of an MNIST digit)"
                       + ("; default: the bottom half" if prefix else ""))


def add_repaint_options(parser: argparse.ArgumentParser) -> None:
    """RePaint's chain and resampling settings (defaults: the paper's)."""
    from .sampling import inpaint

    parser.add_argument("--steps", type=int, help="levels of RePaint's chain (the paper: 250); model evaluations per "
                        "image: steps + jump points x (jump-n-sample - 1) x jump-length (default: 250, or T if smaller)")
    parser.add_argument("--jump-length", type=int, default=inpaint.DEFAULT_JUMP_LENGTH,
                        help="how many levels each resampling jumps back up (the paper: 10)")
    parser.add_argument("--jump-n-sample", type=int, default=inpaint.DEFAULT_JUMP_N_SAMPLE,
                        help="how often each jump point is passed; 1: plain replacement, no resampling (the paper: 10)")
    parser.add_argument("--grid", default=inpaint.DEFAULT_GRID, help="the timesteps of RePaint's chain; one of: "
                        + ", ".join(field_choices("grid")))


def add_edit_options(parser: argparse.ArgumentParser, name: str) -> None:
    """What ``ddpm inpaint`` and ``ddpm img2img`` share: the run, the image, how many, where to."""
    parser.add_argument("--run", required=True, metavar="DIR", help="a run directory (its latest checkpoint) or a checkpoint")
    parser.add_argument("--image", required=True, metavar="FILE", help="the image to edit (png, jpg, webp, bmp or gif); "
                        "another size or mode is fitted to the run's (short side, center crop), with a message")
    parser.add_argument("--n", type=int, default=8, help="number of results")
    parser.add_argument("--batch-size", type=int, default=64, help="results made at once (part of what the seed reproduces)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed and batch size give the same images")
    parser.add_argument("--class", dest="cls", type=int, action="append", metavar="N",
                        help="class-conditional runs: draw this class (repeat for several, in turn; default: none, "
                        "the unconditional model)")
    parser.add_argument("--prompt", metavar="TEXT", help="text-conditional runs: the caption every result is drawn "
                        "towards (default: none, the null caption)")
    parser.add_argument("--guidance-scale", type=float, help=sampling_help("guidance_scale", "the run's own with --class or --prompt, else 1"))
    parser.add_argument("--clip", help=sampling_help("clip"))
    parser.add_argument("--out", metavar="DIR", help=f"output directory (default: RUN/generated/{name}-step<N>-seed<S>-<time>)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out directory")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--device", default="auto", help=field_help("device"))


def add_edit_commands(sub) -> None:
    """The parsers of ``ddpm inpaint`` and ``ddpm img2img``."""
    inp = sub.add_parser("inpaint", help="fill a region of an image with a trained model (RePaint)",
                         description="Fill the white region of --mask (or the --box rectangle) of --image with content "
                         "that fits the rest, --n times (RePaint, Lugmayr et al. 2022). Writes the results, input.png, "
                         "mask.png, grid.png (input, mask and results side by side) and sample.json (the recipe).")
    add_edit_options(inp, "inpaint")
    add_mask_options(inp, required=True)
    add_repaint_options(inp)
    inp.set_defaults(handler=cmd_inpaint)

    i2i = sub.add_parser("img2img", help="redraw an image with a trained model (SDEdit)",
                         description="Noise --image to --strength of the chain and denoise it again, --n times (SDEdit, "
                         "Meng et al. 2022): low strength keeps the image, high strength only its layout. Writes the "
                         "results, input.png, grid.png (input and results side by side) and sample.json (the recipe).")
    add_edit_options(i2i, "img2img")
    i2i.add_argument("--strength", type=float, default=0.6, help="how far into the chain the image is noised, in (0, 1]: "
                     "t = strength x (T - 1); 1 is plain sampling")
    i2i.add_argument("--sampler", help=sampling_help("sampler"))
    i2i.add_argument("--steps", type=int, help=sampling_help("steps", "the sampler's own, at most the timesteps below the start"))
    i2i.add_argument("--eta", type=float, help=sampling_help("eta"))
    i2i.add_argument("--grid", help=sampling_help("grid"))
    i2i.set_defaults(handler=cmd_img2img)


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
                                                   columns=args.columns, log=print, prompt=args.prompt)
            print(f"wrote {anim}" + (f" and {still}" if still else ""))
        elif args.what == "inpaint":
            anim, still = pictures.inpaint_picture(args.run, args.out or "inpaint.gif", still=args.still, image=args.image,
                                                   mask=args.mask, box=args.box, num_images=args.n or 4,
                                                   steps=args.steps or 50, jump_length=args.jump_length,
                                                   jump_n_sample=args.jump_n_sample, seed=args.seed, device=args.device,
                                                   columns=args.columns, log=print)
            print(f"wrote {anim}" + (f" and {still}" if still else ""))
        else:
            out = pictures.interpolation_picture(args.run, args.out or "interpolation.png", rows=args.n or 4,
                                                 columns=args.columns, steps=args.steps or 0, classes=args.cls,
                                                 seed=args.seed, device=args.device, log=print)
            print(f"wrote {out}")
    return 0


def add_sampler_extras(parser: argparse.ArgumentParser) -> None:
    """The final-step and thresholding settings of ``ddpm sample`` and ``ddpm eval``."""
    parser.add_argument("--final", help="where the last step ends: clean (alpha_bar = 1) or t0 (timestep 0's noise "
                        "level); default: the run's (clean)")
    parser.add_argument("--threshold-percentile", type=float,
                        help="--clip dynamic: the percentile of |x0| that sets the threshold; default: the run's (0.995)")
    parser.add_argument("--threshold-max", type=float,
                        help="--clip dynamic: the largest threshold, 0: none; default: the run's (0)")
    parser.add_argument("--no-clipped-eps", action="store_true",
                        help="ddim: keep the model's eps beside the clipped x0 (default: re-derive it from the clipped x0)")


# ---- serve ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    serve(args.runs_dir, run=args.run, host=args.host, port=args.port, device=args.device, max_images=args.max_images,
          max_waiting=args.queue_size, max_upload_mb=args.max_upload_mb, log=lambda m: print(m, flush=True))
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
        help="train a model (default: class-conditional mnist10k, 28x28 digits shipped with the package, about 3 minutes on 2 CPU cores)",
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
    sample.add_argument("--batch-size", type=int, default=64, help="images drawn at once (part of what the seed reproduces)")
    sample.add_argument("--seed", type=int, default=0, help="the same seed and batch size give the same images")
    sample.add_argument("--sampler", help=sampling_help("sampler"))
    sample.add_argument("--steps", type=int, help=sampling_help("steps"))
    sample.add_argument("--eta", type=float, help=sampling_help("eta"))
    sample.add_argument("--grid", help=sampling_help("grid"))
    sample.add_argument("--clip", help=sampling_help("clip"))
    add_sampler_extras(sample)
    sample.add_argument("--class", dest="cls", type=int, action="append", metavar="N",
                        help="draw this class (repeat for several); class-conditional models only")
    sample.add_argument("--per-class", action="store_true", help="--n images of each class, one grid row per class")
    sample.add_argument("--guidance-scale", type=float, help=sampling_help("guidance_scale"))
    sample.add_argument("--prompt", action="append", metavar="TEXT",
                        help="draw --n images of this caption, one grid row per prompt (repeat for several); "
                        "text-conditional runs only")
    sample.add_argument("--prompts-file", metavar="FILE", help="prompts, one per line (also with --prompt)")
    sample.add_argument("--out", metavar="DIR", help="output directory (default: RUN/generated/step<N>-seed<S>-<time>)")
    sample.add_argument("--overwrite", action="store_true", help="write into a non-empty --out directory")
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--device", default="auto", help=field_help("device"))
    sample.set_defaults(handler=cmd_sample)

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
    ev.add_argument("--sampler", help=sampling_help("sampler"))
    ev.add_argument("--steps", type=int, help=sampling_help("steps"))
    ev.add_argument("--eta", type=float, help=sampling_help("eta"))
    ev.add_argument("--guidance-scale", type=float, help=sampling_help("guidance_scale"))
    ev.add_argument("--grid", help=sampling_help("grid"))
    ev.add_argument("--clip", help=sampling_help("clip"))
    add_sampler_extras(ev)
    ev.add_argument("--class", dest="cls", type=int, action="append", metavar="N",
                    help="class-conditional runs: draw only these classes, in turn (repeat the option; default: all)")
    ev.add_argument("--prompts-file", metavar="FILE",
                    help="text runs with label-derived captions: also the prompt accuracy of these prompts, one "
                    "'CLASS: prompt' per line (e.g. '7: the number seven')")
    ev.add_argument("--cache-dir", metavar="DIR", help="classifier and statistics cache (default ~/.cache/torch-ddpm/eval)")
    ev.add_argument("--no-ema", action="store_true", help="evaluate the raw weights instead of the EMA")
    ev.add_argument("--device", default="auto", help=field_help("device"))
    ev.set_defaults(handler=cmd_eval)

    add_edit_commands(sub)

    viz = sub.add_parser("viz", help="pictures of the forward and reverse processes",
                         description="forward: training images noised step by step; reverse: an animation of "
                         "sampling (x_t and predicted x_0) and a still grid; interpolate: DDIM decodes along a "
                         "path between two noises; schedules: alpha_bar and log-SNR of the beta schedules.")
    viz.add_argument("what", choices=("forward", "reverse", "interpolate", "schedules", "inpaint"), help="the picture to make")
    viz.add_argument("--run", metavar="DIR", help="a trained run (reverse, interpolate, inpaint)")
    viz.add_argument("--out", metavar="FILE", help="output file, .png (.gif or .webp for reverse and inpaint) "
                     "(default: WHAT.png, reverse.gif, inpaint.gif)")
    viz.add_argument("--still", metavar="FILE", help="reverse: also a still grid, rows = samples, columns = steps; "
                     "inpaint: rows = images, columns = original, input, predicted x0 over the steps, result")
    viz.add_argument("--n", type=int, help="images (forward, reverse, inpaint) or rows (interpolate) (default: 6, 8, 4 and 4)")
    viz.add_argument("--columns", type=int, default=10, help="timesteps (forward, reverse still, inpaint still) or points "
                     "(interpolate)")
    viz.add_argument("--dataset", default="digits", help=f"forward: the data set; one of: {', '.join(field_choices('dataset'))}")
    viz.add_argument("--data-dir", help="forward: folder holding the data set's files (default: CACHE_DIR/<dataset>)")
    viz.add_argument("--download", action="store_true", help="forward: fetch the data set if missing")
    viz.add_argument("--cache-dir", help="forward: where downloads go (default ~/.cache/torch-ddpm)")
    viz.add_argument("--image-size", type=int, help="forward: resize to this square size (required for folder:PATH; "
                     "default: the data set's own)")
    viz.add_argument("--schedule", default="linear",
                     help=f"forward: the beta schedule; one of: {', '.join(field_choices('beta_schedule'))}")
    viz.add_argument("--timesteps", type=int, default=1000, help="forward, schedules: T, the number of noising steps")
    viz.add_argument("--zero-terminal-snr", action="store_true", help="schedules: rescale to zero terminal SNR")
    viz.add_argument("--sampler", help="reverse: " + sampling_help("sampler"))
    viz.add_argument("--steps", type=int, help="reverse, interpolate, inpaint (RePaint's levels): " + sampling_help(
        "steps", "reverse: the run's own [sample] setting; interpolate: 0, which is 50 for ddim; inpaint: 50"))
    viz.add_argument("--eta", type=float, help="reverse: " + sampling_help("eta"))
    viz.add_argument("--guidance-scale", type=float, help="reverse: " + sampling_help("guidance_scale"))
    viz.add_argument("--class", dest="cls", type=int, action="append", metavar="N",
                     help="reverse, interpolate: draw this class (repeat for several; default: all in turn)")
    viz.add_argument("--prompt", metavar="TEXT", help="reverse: the caption to draw (text-conditional runs)")
    viz.add_argument("--image", metavar="FILE", help="inpaint: the image to inpaint (default: the run's first held-out "
                     "image of each class)")
    add_mask_options(viz, required=False, prefix="inpaint: ")
    viz.add_argument("--jump-length", type=int, default=5, help="inpaint: RePaint's jump length")
    viz.add_argument("--jump-n-sample", type=int, default=5, help="inpaint: RePaint's visits of each jump point")
    viz.add_argument("--seed", type=int, default=0, help="the same seed gives the same picture")
    viz.add_argument("--device", default="auto", help=field_help("device"))
    viz.set_defaults(handler=cmd_viz)

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
