"""``ddpm inpaint`` (RePaint) and ``ddpm img2img`` (SDEdit): a trained run edits an image."""

from __future__ import annotations

import argparse

from ..config import field_choices, field_help
from .options import add_mask_options, add_sampling_options, sampling_help, sampling_settings


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The parsers of ``ddpm inpaint`` and ``ddpm img2img``."""
    from ..sampling import inpaint

    inp = sub.add_parser("inpaint", help="fill a region of an image with a trained model (RePaint)",
                         description="Fill the white region of --mask (or the --box rectangle) of --image with content "
                         "that fits the rest, --n times (RePaint, Lugmayr et al. 2022). Writes the results, input.png, "
                         "mask.png, grid.png (input, mask and results side by side) and sample.json (the recipe).")
    add_edit_options(inp, "inpaint")
    add_mask_options(inp, required=True)
    # RePaint's chain and resampling settings (defaults: the paper's)
    add_sampling_options(inp, ("steps",), help={"steps": "levels of RePaint's chain (the paper: 250); model evaluations "
                         "per image: steps + jump points x (jump-n-sample - 1) x jump-length (default: 250, or T if smaller)"})
    inp.add_argument("--jump-length", type=int, default=inpaint.DEFAULT_JUMP_LENGTH,
                     help="how many levels each resampling jumps back up (the paper: 10)")
    inp.add_argument("--jump-n-sample", type=int, default=inpaint.DEFAULT_JUMP_N_SAMPLE,
                     help="how often each jump point is passed; 1: plain replacement, no resampling (the paper: 10)")
    add_sampling_options(inp, ("grid",), default={"grid": inpaint.DEFAULT_GRID},
                         help={"grid": "the timesteps of RePaint's chain; one of: " + ", ".join(field_choices("grid"))})
    inp.set_defaults(handler=cmd_inpaint)

    i2i = sub.add_parser("img2img", help="redraw an image with a trained model (SDEdit)",
                         description="Noise --image to --strength of the chain and denoise it again, --n times (SDEdit, "
                         "Meng et al. 2022): low strength keeps the image, high strength only its layout. Writes the "
                         "results, input.png, grid.png (input and results side by side) and sample.json (the recipe).")
    add_edit_options(i2i, "img2img")
    i2i.add_argument("--strength", type=float, default=0.6, help="how far into the chain the image is noised, in (0, 1]: "
                     "t = strength x (T - 1); 1 is plain sampling")
    add_sampling_options(i2i, ("sampler", "steps", "eta", "grid"), help={
        "steps": sampling_help("steps", "the sampler's own, at most the timesteps below the start")})
    i2i.set_defaults(handler=cmd_img2img)


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
    add_sampling_options(parser, ("guidance_scale", "clip"), help={
        "guidance_scale": sampling_help("guidance_scale", "the run's own with --class or --prompt, else 1")})
    parser.add_argument("--out", metavar="DIR", help=f"output directory (default: RUN/generated/{name}-step<N>-seed<S>-<time>)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out directory")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--device", default="auto", help=field_help("device"))


def cmd_inpaint(args: argparse.Namespace) -> int:
    from ..editing import inpaint_to_directory

    out = inpaint_to_directory(args.run, args.image, mask=args.mask, box=args.box, out=args.out, num=args.n,
                               batch_size=args.batch_size, seed=args.seed, jump_length=args.jump_length,
                               jump_n_sample=args.jump_n_sample, classes=args.cls, prompt=args.prompt,
                               use_ema=not args.no_ema, device=args.device, overwrite=args.overwrite, log=print,
                               **sampling_settings(args))
    print(f"wrote {out}")
    return 0


def cmd_img2img(args: argparse.Namespace) -> int:
    from ..editing import img2img_to_directory

    out = img2img_to_directory(args.run, args.image, strength=args.strength, out=args.out, num=args.n,
                               batch_size=args.batch_size, seed=args.seed, classes=args.cls, prompt=args.prompt,
                               use_ema=not args.no_ema, device=args.device, overwrite=args.overwrite, log=print,
                               **sampling_settings(args))
    print(f"wrote {out}")
    return 0
