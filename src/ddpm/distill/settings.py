"""A student's configuration, made from its teacher's, and every check made before a run starts.

The student is a run like any other: the teacher's network (dropout off, as in the paper's code),
data and schedule; its own objective (v by default, Salimans & Ho section 4: eps-prediction
cannot recover x_0 from few steps at low SNR; with ``objective_from_steps`` the students of
more steps keep the teacher's, and start as its exact copy); ``[sample]`` = deterministic DDIM
on its own trailing grid; ``[train]`` = the distillation's optimiser; ``[distill]`` = what made it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping

from ..config import DistillConfig, RunConfig, SampleConfig, apply_overrides, field_help, field_index, option_help
from ..diffusion import OBJECTIVES, check_choice
from ..errors import ConfigError
from ..schedules import config_schedule
from ..runs.checkpoint import Checkpoint
from .grids import GRID, round_grids
from .target import WEIGHTINGS

TRAIN_DEFAULTS = {
    "lr": "2e-4",  # below the MNIST teacher's 1e-3: the student starts from a trained network
    "warmup_steps": "0",  # the paper's code: no warm-up, linear decay to 0 within each round
    "ema_decay": "0",  # no EMA (the paper's code): the decay to 0 already averages out the noise
    "sample_every": "0",  # grids at the end of each round only
    "save_every": "500",
    "log_every": "100",
    "max_minutes": "0",
}
"""[train] settings of a student unless given: the rest are the teacher's."""

SETTABLE = ("to_steps", "rounds", "steps_per_round", "teacher_guidance", "student_objective", "objective_from_steps",
            "distill_weighting",
            "batch_size", "lr", "weight_decay", "warmup_steps", "grad_clip", "ema_decay", "seed", "device", "bf16",
            "max_minutes", "log_every", "sample_every", "save_every", "keep_last", "num_samples", "tensorboard",
            "data_dir", "cache_dir")
"""The settings ``ddpm distill`` takes (flat field names, as ``--field-name`` options)."""

RESUMABLE = ("device", "max_minutes", "log_every", "sample_every", "save_every", "keep_last", "num_samples",
             "tensorboard", "data_dir", "cache_dir")
"""Those that may change when a distillation is resumed: where and how it runs, not what it computes."""


def option_helps() -> dict[str, str]:
    """The help of each ``ddpm distill`` option: its meaning and its default for a distillation."""
    out = {}
    for name in SETTABLE:
        section = field_index()[name][0]
        if name in TRAIN_DEFAULTS:
            out[name] = f"{field_help(name)} (default: {TRAIN_DEFAULTS[name]}) [{section}]"
        elif section == "distill":
            out[name] = option_help(name)
        else:
            out[name] = f"{field_help(name)} (default: the teacher's) [{section}]"
    return out


def check_settings(settings: Mapping[str, str], allowed: tuple[str, ...], what: str) -> None:
    for name in settings:
        if name not in allowed:
            flags = ", ".join("--" + n.replace("_", "-") for n in allowed)
            raise ConfigError(f"--{name.replace('_', '-')} cannot be set {what}; these can: {flags}")


def student_base(teacher: Checkpoint, settings: Mapping[str, str]) -> RunConfig:
    """The student's configuration before its data is resolved (rounds fill in [sample].steps)."""
    check_settings(settings, SETTABLE, "for a distillation")
    tcfg = teacher.config
    inherited = tcfg.distill if tcfg.distill.teacher else DistillConfig()  # a student distilled further
    base = replace(
        tcfg,
        name="",
        runs_dir="runs",
        model=replace(tcfg.model, dropout=0.0),
        # a fine-tuned teacher's start is the teacher's history, not the student's
        train=replace(tcfg.train, compile=False, channels_last=False, grad_accum=1, init_from="", init_weights="ema"),
        distill=replace(inherited, teacher=str(teacher.path.resolve())),
    )
    config = apply_overrides(base, {**TRAIN_DEFAULTS, **settings})
    dc = config.distill
    check_choice("student objective", dc.student_objective, OBJECTIVES)
    check_choice("distillation weighting", dc.distill_weighting, WEIGHTINGS)
    if dc.steps_per_round < 1:
        raise ConfigError(f"--steps-per-round must be a positive integer; got {dc.steps_per_round}")
    if dc.objective_from_steps < 0:
        raise ConfigError(f"--objective-from-steps must be 0 (every round) or a number of steps; got {dc.objective_from_steps}")
    return replace(
        config,
        train=replace(config.train, max_steps=dc.rounds * dc.steps_per_round),
        sample=SampleConfig(sampler="ddim", steps=dc.to_steps * 2 ** (dc.rounds - 1), eta=0.0, guidance_scale=1.0,
                            clip=tcfg.sample.clip, grid=GRID),
    )


def check_teacher(teacher: Checkpoint, config: RunConfig) -> list[list[int]]:
    """Refuse a teacher this distillation cannot use; returns the grids of every round."""
    tcfg, dc = teacher.config, config.distill
    schedule = config_schedule(tcfg.diffusion)
    grids = round_grids(schedule, dc.to_steps, dc.rounds)
    if dc.teacher_guidance < 0:
        raise ConfigError(f"--teacher-guidance must be at least 0; got {dc.teacher_guidance:g}")
    if tcfg.distill.teacher:  # the teacher is itself a student: it samples on its own grid only
        own = tcfg.sample.steps
        if len(grids[0]) != own:
            raise ConfigError(
                f"the teacher {teacher.path} is a {own}-step student, trained on its own {own} timesteps only; choose "
                f"--to-steps and --rounds with to_steps * 2**rounds = {own} (e.g. --to-steps {max(own // 2, 1)} --rounds 1)"
            )
        if dc.teacher_guidance != tcfg.distill.teacher_guidance:
            raise ConfigError(
                f"the teacher {teacher.path} is a student that already follows guidance "
                f"{tcfg.distill.teacher_guidance:g}; leave out --teacher-guidance"
            )
    elif dc.teacher_guidance != 1.0 and not tcfg.data.class_conditional:
        raise ConfigError("--teacher-guidance needs a class-conditional teacher (trained with --class-conditional)")
    return grids


def round_config(config: RunConfig, grids: list[list[int]], r: int, teacher_objective: str) -> RunConfig:
    """The student's configuration in round ``r`` (1-based): it samples on ``grids[r]``, and
    predicts what ``student_objective`` says, or, while its steps are more than
    ``objective_from_steps``, what the first teacher predicts (a student that starts as an exact
    copy; predicting the noise is well conditioned while the first step is short)."""
    dc, steps = config.distill, len(grids[r])
    switched = dc.objective_from_steps == 0 or steps <= dc.objective_from_steps
    objective = dc.student_objective if switched else teacher_objective
    return replace(config, diffusion=replace(config.diffusion, objective=objective),
                   sample=replace(config.sample, steps=steps))


def teacher_record(teacher: Checkpoint, config: RunConfig, grids: list[list[int]]) -> RunConfig:
    """The teacher's configuration as kept beside the student: its sampler is the deterministic
    DDIM (with the guidance) that round 1 distils, and its data is found where the student's is."""
    t = teacher.config
    guidance = t.sample.guidance_scale if t.distill.teacher else config.distill.teacher_guidance
    sample = SampleConfig(sampler="ddim", steps=len(grids[0]), eta=0.0, guidance_scale=guidance,
                          clip=t.sample.clip, grid=GRID)
    return replace(t, name="teacher", runs_dir=str(Path(config.runs_dir) / config.name), data=config.data,
                   sample=sample)


__all__ = ["RESUMABLE", "SETTABLE", "TRAIN_DEFAULTS", "check_settings", "option_helps", "check_teacher", "round_config",
           "student_base", "teacher_record"]
