"""What the commands' parsers share: the parser class, the configuration fields as options, the
sampling options (added by one function, read back by another) and the inpainting region."""

from __future__ import annotations

import argparse
import sys
import typing
from typing import Any, Mapping, Sequence

from ..config import AUTO, field_choices, field_help, field_index, is_auto_bool, is_auto_float, option_help

# The modules that register the names the help lists (ddpm.config.register_choices) and that the
# package's __init__ does not import: imported here so every --help shows them.
from ..data import DATASET_NAMES  # noqa: F401
from ..distill.target import WEIGHTINGS  # noqa: F401

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


# ---- the configuration fields (train, distill) ---------------------------------------------------


def add_config_options(parser: argparse.ArgumentParser, only: Mapping[str, str] | None = None) -> None:
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


def config_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The configuration fields given on the command line, as text by field name."""
    out = {}
    for name in field_index():
        value = getattr(args, f"cfg_{name}", NOT_GIVEN)
        if value is not NOT_GIVEN:
            out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


# ---- the sampling options (sample, eval, inpaint, img2img, viz) ------------------------------------

RUNS_OWN = "the run's own [sample] setting"

# Each sampling option by its field of ddpm.config.SampleConfig (its dest is the field's name): how
# argparse reads it, and its help where that is not sampling_help's.
SAMPLING_OPTIONS: dict[str, dict[str, Any]] = {
    "sampler": {},
    "steps": {"type": int},
    "eta": {"type": float},
    "grid": {},
    "clip": {},
    "guidance_scale": {"type": float},
    "final": {"help": "where the last step ends: clean (alpha_bar = 1) or t0 (timestep 0's noise level); default: the "
              "run's (clean)"},
    "threshold_percentile": {"type": float, "help": "--clip dynamic: the percentile of |x0| that sets the threshold; "
                             "default: the run's (0.995)"},
    "threshold_max": {"type": float, "help": "--clip dynamic: the largest threshold, 0: none; default: the run's (0)"},
    "clipped_eps": {"flag": "--no-clipped-eps", "action": "store_const", "const": False,
                    "help": "ddim: keep the model's eps beside the clipped x0 (default: re-derive it from the clipped x0)"},
}


def sampling_help(name: str, default: str = RUNS_OWN) -> str:
    """Help for a sampling option: what it sets, what 0 or empty means and the accepted values as
    the config field says them, and the default the command uses."""
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


def add_sampling_options(parser: argparse.ArgumentParser, names: Sequence[str], *, prefix: str = "",
                         help: Mapping[str, str] | None = None, default: Mapping[str, Any] | None = None) -> None:
    """Add the sampling options ``names`` (fields of SampleConfig: sampler, steps, eta, grid, clip,
    guidance_scale, final, threshold_percentile, threshold_max, clipped_eps), in that order.

    Each is unset (None) unless given, so the run's own [sample] setting applies; ``default`` gives
    one a value of the command's instead. Its help is :func:`sampling_help`'s (the run's own as the
    default, after ``prefix``, e.g. "reverse: " for the one picture of ddpm viz that takes it), or the
    text in ``help``. :func:`sampling_settings` reads them back."""
    for name in names:
        spec = dict(SAMPLING_OPTIONS[name])
        flag = spec.pop("flag", "--" + name.replace("_", "-"))
        text = spec.pop("help", None)
        text = (help or {}).get(name) or prefix + (sampling_help(name) if text is None else text.replace("%", "%%"))
        parser.add_argument(flag, dest=name, default=(default or {}).get(name), help=text, **spec)


def sampling_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling settings of the command's options, by SampleConfig field name: what the user
    gave, or None where not given (unless the command has a default of its own). A command that
    lacks an option has no entry for it."""
    return {name: getattr(args, name) for name in SAMPLING_OPTIONS if hasattr(args, name)}


# ---- the region to inpaint (inpaint, viz inpaint) ------------------------------------------------


def add_mask_options(parser: argparse.ArgumentParser, required: bool, prefix: str = "") -> None:
    """--mask FILE or --box X0,Y0,X1,Y1: the region to generate."""
    where = parser.add_mutually_exclusive_group(required=required)
    where.add_argument("--mask", metavar="FILE", help=prefix + "a mask image of the input's size: white where new content "
                       "is generated, black where the image is kept")
    where.add_argument("--box", metavar="X0,Y0,X1,Y1", help=prefix + "the rectangle to generate instead, in pixels of the "
                       "image at the run's size (x1, y1 exclusive; 0,14,28,28 is the bottom half of an MNIST digit)"
                       + ("; default: the bottom half" if prefix else ""))


__all__ = ["HelpFormatter", "NOT_GIVEN", "Parser", "SAMPLING_OPTIONS", "add_config_options", "add_mask_options",
           "add_sampling_options", "config_overrides", "sampling_help", "sampling_settings"]
