"""``ddpm viz``: pictures of the forward and reverse processes."""

from __future__ import annotations

import argparse

from ..config import field_choices, field_help
from ..errors import ConfigError
from .options import add_mask_options, add_sampling_options, sampling_help, sampling_settings


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    add_sampling_options(viz, ("sampler", "steps", "eta", "guidance_scale"), prefix="reverse: ", help={
        "steps": "reverse, interpolate, inpaint (RePaint's levels): " + sampling_help(
            "steps", "reverse: the run's own [sample] setting; interpolate: 0, which is 50 for ddim; inpaint: 50")})
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


def cmd_viz(args: argparse.Namespace) -> int:
    from ..pictures import forward_picture, inpaint_picture, interpolation_picture, reverse_picture, schedules_picture

    if args.what == "forward":
        out = forward_picture(args.out or "forward.png", dataset=args.dataset, data_dir=args.data_dir,
                              download=args.download, cache_dir=args.cache_dir, image_size=args.image_size,
                              num_images=args.n or 6, columns=args.columns, schedule=args.schedule,
                              timesteps=args.timesteps, seed=args.seed)
        print(f"wrote {out}")
        return 0
    if args.what == "schedules":
        out = schedules_picture(args.out or "schedules.png", timesteps=args.timesteps, zero_terminal_snr=args.zero_terminal_snr)
        print(f"wrote {out}")
        return 0
    if not args.run:
        raise ConfigError(f"ddpm viz {args.what} needs --run RUN (a trained run or checkpoint)")
    sampling = sampling_settings(args)  # sampler, steps, eta, guidance_scale
    if args.what == "reverse":
        anim, still = reverse_picture(args.run, args.out or "reverse.gif", still=args.still, num_images=args.n or 8,
                                      classes=args.cls, seed=args.seed, device=args.device, columns=args.columns, log=print,
                                      prompt=args.prompt, **sampling)
        print(f"wrote {anim}" + (f" and {still}" if still else ""))
    elif args.what == "inpaint":
        anim, still = inpaint_picture(args.run, args.out or "inpaint.gif", still=args.still, image=args.image,
                                      mask=args.mask, box=args.box, num_images=args.n or 4, steps=sampling["steps"] or 50,
                                      jump_length=args.jump_length, jump_n_sample=args.jump_n_sample, seed=args.seed,
                                      device=args.device, columns=args.columns, log=print)
        print(f"wrote {anim}" + (f" and {still}" if still else ""))
    else:
        out = interpolation_picture(args.run, args.out or "interpolation.png", rows=args.n or 4, columns=args.columns,
                                    steps=sampling["steps"] or 0, classes=args.cls, seed=args.seed, device=args.device,
                                    log=print)
        print(f"wrote {out}")
    return 0
