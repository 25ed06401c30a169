"""The public samplers' one signature, written once.

Every public sampler is ``sample_xxx(model_fn, x_T, schedule, steps=None, *, grid, timesteps,
t_start, final, objective, variance_type, clip, threshold_percentile, threshold_max, generator,
callback, <own options>)``: a thin wrapper that builds the :class:`~ddpm.sampling.denoiser.Denoiser`
and the :class:`~ddpm.sampling.plan.Plan` from those settings and calls the sampler's core,
``core(denoiser, x_T, plan, *, generator, callback, <own options>)``. :func:`public_sampler` makes
such a wrapper; its ``__signature__`` lists every argument it accepts, and a call binds against it
exactly as against a ``def`` (an unknown or missing argument is a TypeError).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from torch import Tensor

from .denoiser import Denoiser
from .plan import Plan, make_plan

P = inspect.Parameter
REQUIRED = P.empty
"""An own option without a default (a keyword the caller must give)."""

DENOISER_OPTIONS = ("objective", "variance_type", "clip", "threshold_percentile", "threshold_max", "clipped_eps")
PLAN_OPTIONS = {"timesteps": None, "t_start": None, "final": "clean"}
COMMON_OPTIONS = {"objective": "pred_noise", "variance_type": "fixed_small", "clip": "static",
                  "threshold_percentile": 0.995, "threshold_max": None, "generator": None, "callback": None}

Core = Callable[..., Tensor]
"""``core(denoiser, x, plan, *, generator=None, callback=None, <own options>) -> x_0``."""


def signature(grid: str, own: Mapping[str, Any], *, steps: int | None = None, plan_options: bool = True,
              first: tuple[str, ...] = ()) -> inspect.Signature:
    """``(*first, model_fn, x_T, schedule, steps=steps, *, grid=grid, [timesteps, t_start, final,]
    objective, ..., callback, **own)`` as an :class:`inspect.Signature`."""
    positional = [P(n, P.POSITIONAL_OR_KEYWORD) for n in (*first, "model_fn", "x_T", "schedule")]
    keywords = {"grid": grid, **(PLAN_OPTIONS if plan_options else {}), **COMMON_OPTIONS, **own}
    return inspect.Signature([*positional, P("steps", P.POSITIONAL_OR_KEYWORD, default=steps),
                              *(P(n, P.KEYWORD_ONLY, default=d) for n, d in keywords.items())], return_annotation=Tensor)


def bind(sig: inspect.Signature, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of a call by name, defaults filled in (a TypeError as from a ``def``)."""
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def prepare(a: Mapping[str, Any], grid: str, check: Callable[[Mapping[str, Any]], None] | None = None
            ) -> tuple[Denoiser, Plan]:
    """The denoiser and the plan (on ``grid``) of a public sampler's arguments ``a``: the denoiser's
    settings are checked first, then ``check(a)``, then the plan's."""
    denoiser = Denoiser(a["model_fn"], **{n: a[n] for n in DENOISER_OPTIONS if n in a})
    if check is not None:
        check(a)
    plan = make_plan(a["schedule"], a["steps"], grid, a.get("timesteps"), a.get("t_start"), a.get("final", "clean"))
    return denoiser, plan


class PublicSampler:
    """A sampler as users call it: ``sample_xxx(model_fn, x_T [B, C, H, W], schedule, steps, ...)``
    -> x_0 [B, C, H, W], through ``core`` (see the module's docstring)."""

    def __init__(self, name: str, core: Core, *, grid: str, own: Mapping[str, Any], doc: str, steps: int | None = None,
                 plan_options: bool = True, check: Callable[[Mapping[str, Any]], None] | None = None):
        self.__name__ = self.__qualname__ = name
        self.__doc__ = doc
        self.__module__ = getattr(core, "func", core).__module__  # a partial: its function's
        self.__signature__ = signature(grid, own, steps=steps, plan_options=plan_options)
        self.core, self.own, self.check = core, tuple(n for n in own if n not in DENOISER_OPTIONS), check

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        a = bind(self.__signature__, args, kwargs)
        denoiser, plan = prepare(a, a["grid"], self.check)
        return self.core(denoiser, a["x_T"], plan, generator=a["generator"], callback=a["callback"],
                         **{n: a[n] for n in self.own})

    def __repr__(self) -> str:
        return f"<sampler {self.__name__}{self.__signature__}>"


def public_sampler(name: str, core: Core, *, grid: str, own: Mapping[str, Any] | None = None, doc: str,
                   steps: int | None = None, plan_options: bool = True,
                   check: Callable[[Mapping[str, Any]], None] | None = None) -> PublicSampler:
    """The public wrapper ``name`` of ``core``, with default ``grid`` and ``steps``, the own options
    ``own`` (name -> default, :data:`REQUIRED` for none; ``clipped_eps`` goes to the denoiser, the
    rest to the core), the docstring ``doc``; without ``plan_options`` it takes no timesteps,
    t_start or final. ``check(arguments)`` runs after the denoiser's checks and before the plan's."""
    return PublicSampler(name, core, grid=grid, own=own or {}, doc=doc, steps=steps, plan_options=plan_options,
                         check=check)
