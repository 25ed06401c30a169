"""``progressive_distillation``: rounds of :class:`RoundTrainer` in a run directory.

A student's run directory is a training run's (``config.toml``, ``checkpoints/``, ``metrics.csv``,
``samples/``, ``loss.png``; the same lock, atomic checkpoints and reporting) plus

- ``teacher/``: the teacher's weights and config (its [sample] = the DDIM that round 1 distils),
  copied so that a resume never depends on the teacher's run staying as it was;
- ``rounds.json``: each finished round's step count, checkpoint, sample grid, loss and seconds.

Global step k * steps_per_round ends round k; those checkpoints are never pruned, so every
round's student can be sampled (``ddpm sample --checkpoint RUN/checkpoints/step_...``), and the
teacher of round k + 1 is always there. A checkpoint's config.json holds its round's [sample].
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

import torch

from ..config import RunConfig, apply_overrides, load_toml, to_toml
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_write_text
from ..generate import class_layout, generate
from ..runs.load import load_for_sampling
from ..sampling.guidance import guided_model_fn
from ..runs.build import build_diffusion, pick_device, use_bf16
from ..runs.checkpoint import list_checkpoints, load_model_weights, read_checkpoint, save_checkpoint
from ..training.distributed import Distributed
from ..training.loop import TrainingInterrupted
from ..training.reporting import Reporter
from ..runs.run_dir import MetricsLog, RunLock, new_run_dir
from ..training.setup import StopRequest, check_resume, resolve_data
from ..runs.validate import validate_config
from ..viz import save_grid
from .settings import RESUMABLE, check_settings, check_teacher, round_config, student_base, teacher_record
from .trainer import RoundTrainer

MAX_NONFINITE_IN_A_ROW = 5


@dataclass
class DistillResult:
    run_dir: Path
    step: int
    students: dict[int, Path]  # sampling steps -> the checkpoint of that round's student
    elapsed_s: float
    last_loss: float
    finished: bool = True  # False when --max-minutes stopped it first (continue with resume)


def progressive_distillation(
    teacher: str | Path | None = None,
    to_steps: int | None = None,
    *,
    rounds: int | None = None,
    steps_per_round: int | None = None,
    teacher_guidance: float | None = None,
    out: str | Path | None = None,
    settings: Mapping[str, str] | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
) -> DistillResult:
    """Distil ``teacher`` (a run or checkpoint) into a student that samples in ``to_steps`` DDIM
    steps, halving ``rounds`` times from a teacher of to_steps * 2**rounds steps, each round
    ``steps_per_round`` optimizer steps; or, with ``resume``, continue a student's run exactly.

    ``settings`` holds other options by their flat config names (those of ``ddpm distill --help``,
    e.g. ``{"lr": "1e-4", "batch_size": "128"}``). ``out`` is the student's run directory
    (default: ``runs/<teacher>-distill-<time>``). Returns where every round's student is."""
    given = dict(settings or {})
    for name, value in (("to_steps", to_steps), ("rounds", rounds), ("steps_per_round", steps_per_round),
                        ("teacher_guidance", teacher_guidance)):
        if value is not None:
            given[name] = str(value)
    if (teacher is None) == (resume is None):
        raise ConfigError("give either a teacher run to distil or a student run to resume, not both or neither")
    with StopRequest() as stop:
        if resume is not None:
            if out is not None:
                raise ConfigError("--resume continues the run where it is; leave out --out")
            check_settings(given, RESUMABLE, "when resuming (the rounds must stay as they began)")
            return _resume(Path(resume), given, log, progress, stop)
        return _start(Path(teacher), given, out, overwrite, log, progress, stop)


def _start(teacher_path, given, out, overwrite, log, progress, stop) -> DistillResult:
    teacher = read_checkpoint(teacher_path)
    config = student_base(teacher, given)
    if out is not None:
        out = Path(out)
        config = replace(config, runs_dir=str(out.parent), name=out.name)
    data, config = resolve_data(config, Distributed(), log)
    grids = check_teacher(teacher, config)
    for r in range(1, len(grids)):
        validate_config(round_config(config, grids, r, teacher.config.diffusion.objective))  # all before a directory is made
    teacher_net, _ = load_for_sampling(teacher.path, device="cpu")  # its weights checked against its config
    base = teacher.path.parent.parent.name  # the teacher's run
    run_dir = new_run_dir(config.runs_dir, config.name, f"{base}-distill", overwrite=overwrite)
    with RunLock(run_dir):
        config = replace(config, name=run_dir.name, runs_dir=str(run_dir.parent))
        record = teacher_record(teacher, config, grids)
        weights = teacher_net.model.state_dict()
        save_checkpoint(run_dir / "teacher", teacher.step, model_state=weights, ema_state=weights,
                        train_state={"step": teacher.step}, config=record, keep_last=1)
        atomic_write_text(run_dir / "config.toml", to_toml(round_config(config, grids, 1, record.diffusion.objective)))
        log(f"distilling {teacher.path} ({len(grids[0])} DDIM steps) into {run_dir}: {len(grids) - 1} rounds to "
            f"{len(grids[-1])} steps, {config.distill.steps_per_round} optimizer steps each")
        _teacher_grid(run_dir, config, data, pick_device(config.train.device), log)
        return _rounds(run_dir, config, grids, data, 0, None, log, progress, stop)


def _resume(run_dir, given, log, progress, stop) -> DistillResult:
    if not (run_dir / "config.toml").is_file() or not (run_dir / "teacher").is_dir():
        raise CheckpointError(
            f"{run_dir} is not the run directory of a student made by ddpm distill (it lacks config.toml or teacher/)")
    with RunLock(run_dir):  # hold the run first, then read its latest checkpoint
        checkpoint = read_checkpoint(run_dir) if list_checkpoints(run_dir) else None
        saved = checkpoint.config if checkpoint is not None else load_toml(run_dir / "config.toml")
        if not saved.distill.teacher:
            raise CheckpointError(f"{run_dir} is not a student made by ddpm distill; distil it with ddpm distill --run")
        config = apply_overrides(saved, given)
        data, config = resolve_data(config, Distributed(), log)
        teacher = read_checkpoint(run_dir / "teacher")
        grids = check_teacher(teacher, config)
        if checkpoint is not None:
            check_resume(saved, replace(config, sample=saved.sample), checkpoint,
                         sections=("model", "diffusion", "data", "distill"))
        step = checkpoint.step if checkpoint is not None else 0
        log(f"resuming {run_dir} at step {step} of {config.train.max_steps}")
        return _rounds(run_dir, config, grids, data, step, checkpoint, log, progress, stop)


def _teacher_grid(run_dir: Path, config: RunConfig, data, device, log) -> None:
    """samples/step_00000000.png: what the distillation starts from, the teacher's DDIM."""
    diffusion, ckpt = load_for_sampling(run_dir / "teacher", device=str(device))
    tc, dc = config.train, config.data
    labels = class_layout(tc.num_samples, dc.num_classes) if dc.class_conditional else None
    images = generate(diffusion, tc.num_samples, batch_size=tc.num_samples, sample=ckpt.config.sample, seed=tc.seed,
                      labels=labels)
    save_grid(images, run_dir / "samples" / "step_00000000.png", nrow=dc.num_classes if labels else None)


def _teacher_fn(diffusion, guidance: float):
    """The teacher as ``fn(z_t, t, labels)``: guided (one batched forward) when it is class-conditional."""
    model, null = diffusion.model, diffusion.num_classes

    def fn(z, t, labels):
        if labels is None:
            return model(z, t)
        if guidance != 1.0:
            return guided_model_fn(model, labels, guidance, null)(z, t)
        return model(z, t, labels)

    return fn


def _rounds(run_dir, config, grids, data, step, checkpoint, log, progress, stop) -> DistillResult:
    S, R = config.distill.steps_per_round, len(grids) - 1
    keep = frozenset(k * S for k in range(1, R + 1))
    device = pick_device(config.train.device)
    began, last_loss, first = time.monotonic(), float("nan"), step
    deadline = began + config.train.max_minutes * 60 if config.train.max_minutes else None
    while step < R * S:
        r = step // S + 1
        fresh = checkpoint is None or checkpoint.step == (r - 1) * S  # the round starts here
        if stop.requested:  # Ctrl-C before the round's first step (e.g. during the last one's grid)
            where = f"checkpoint saved to {checkpoint.path}" if checkpoint is not None else "no checkpoint yet"
            raise TrainingInterrupted(f"interrupted at step {step}; {where}; continue with: "
                                      f"ddpm distill --resume {run_dir}")
        step, last_loss = _round(run_dir, config, grids, data, r, step, None if fresh else checkpoint, keep, device,
                                 deadline, log, progress, stop)
        checkpoint = read_checkpoint(run_dir)
        if step < r * S:  # stopped on time
            log(f"reached max_minutes at step {step}; continue with: ddpm distill --resume {run_dir}")
            return DistillResult(run_dir, step, _students(run_dir, grids, S, step), time.monotonic() - began,
                                 last_loss, finished=False)
    elapsed = time.monotonic() - began
    if step == first:
        log(f"{run_dir} has finished all {R} rounds already; nothing to do")
    else:
        log(f"done: {R} rounds at step {step} ({elapsed:.0f} s here); the {len(grids[-1])}-step student: "
            f"ddpm sample --run {run_dir}")
    return DistillResult(run_dir, step, _students(run_dir, grids, S, step), elapsed, last_loss)


def _students(run_dir: Path, grids, S: int, step: int) -> dict[int, Path]:
    return {len(grids[k]): run_dir / "checkpoints" / f"step_{k * S:08d}" for k in range(1, len(grids)) if k * S <= step}


def _round(run_dir, config, grids, data, r, step, checkpoint, keep, device, deadline, log, progress, stop):
    """Round ``r`` from global ``step`` (``checkpoint``: the one to continue from mid-round);
    returns the step it stopped at (short of the round's end only at the ``deadline``)."""
    S, tc = config.distill.steps_per_round, config.train
    rconfig = round_config(config, grids, r, read_checkpoint(run_dir / "teacher").config.diffusion.objective)
    source = run_dir / "teacher" if r == 1 else run_dir / "checkpoints" / f"step_{(r - 1) * S:08d}"
    if not source.is_dir():
        raise CheckpointError(f"the teacher of round {r} ({source}) is missing; the run cannot continue")
    teacher, tckpt = load_for_sampling(source, use_ema=True, device=str(device))
    teacher.requires_grad_(False)
    torch.manual_seed(tc.seed)
    student = build_diffusion(rconfig).to(device)
    start = checkpoint if checkpoint is not None else read_checkpoint(source)
    # a fresh round starts from the teacher's (EMA) weights, a resumed one from the student's own
    load_model_weights(student.model, start.weights(ema=checkpoint is None), start.path)
    student.model.train()
    trainer = RoundTrainer(rconfig, student.model, _teacher_fn(teacher, tckpt.config.sample.guidance_scale),
                           tckpt.config.diffusion.objective, student.schedule_on(device), grids[r - 1], data,
                           (r - 1) * S, device, autocast=use_bf16(tc.bf16, device))
    state = {"nonfinite_skipped": start.state().get("nonfinite_skipped", 0) if r > 1 else 0, "round_seconds": 0.0}
    if checkpoint is not None:
        state = checkpoint.state()
        trainer.load_state(state, checkpoint.weights(ema=True))
    nonfinite, seconds = int(state.get("nonfinite_skipped", 0)), float(state.get("round_seconds", 0.0))
    atomic_write_text(run_dir / "config.toml", to_toml(rconfig))
    log(f"round {r}/{len(grids) - 1}: {len(grids[r - 1])} teacher steps -> {len(grids[r])} student steps "
        f"(steps {(r - 1) * S + 1} to {r * S})")
    metrics = MetricsLog(run_dir / "metrics.csv", resume_step=step)
    reporter = Reporter(rconfig, run_dir, student, trainer.ema, data, metrics, log, progress, step)
    began, in_a_row, saved = time.monotonic(), 0, step

    def save() -> Path:
        nonlocal saved
        if saved == step:  # saved at this step already (save_every, then a stop)
            return run_dir / "checkpoints" / f"step_{step:08d}"
        spent = seconds + time.monotonic() - began
        train_state = {"step": step, "round": r, **trainer.state(), "nonfinite_skipped": nonfinite, "round_seconds": spent}
        try:
            path = save_checkpoint(run_dir, step, model_state=student.model.state_dict(), ema_state=trainer.ema.state_dict(),
                                   train_state=train_state, config=rconfig, keep_last=tc.keep_last, keep_steps=keep)
        except OSError as err:
            raise CheckpointError(f"could not write the checkpoint of step {step} in {run_dir / 'checkpoints'} "
                                  f"({err.strerror or err}); earlier checkpoints are intact: free some space, then "
                                  f"continue with ddpm distill --resume {run_dir}") from None
        saved = step
        return path

    try:
        end = r * S
        while step < end:
            result = trainer.step(step)
            step += 1
            if result.finite:
                in_a_row = 0
                reporter.step(step, result.loss, trainer.lr, result.grad_norm, trainer.plan.batch_size, nonfinite)
            else:
                in_a_row, nonfinite = in_a_row + 1, nonfinite + 1
                log(f"warning: non-finite loss or gradient at step {step}; the step was skipped")
                reporter.skipped(nonfinite)
                if in_a_row >= MAX_NONFINITE_IN_A_ROW:
                    raise ConfigError(f"distillation stopped at step {step}: {in_a_row} steps in a row had a non-finite "
                                      "loss or gradient; lower --lr or turn off bf16 (--no-bf16)")
            if step < end and tc.sample_every and step % tc.sample_every == 0:
                reporter.samples(step, device)
            if step < end and tc.save_every and step % tc.save_every == 0:
                save()
            if step < end and stop.requested:
                raise TrainingInterrupted(f"interrupted at step {step}; checkpoint saved to {save()}; continue with: "
                                          f"ddpm distill --resume {run_dir}")
            if step < end and deadline is not None and time.monotonic() > deadline:
                save()
                return step, reporter.last_loss
        path = save()
        reporter.samples(step, device)
        _record_round(run_dir, r, grids, path, step, reporter.last_loss, seconds + time.monotonic() - began)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, possibly mid-update, so write nothing
        raise TrainingInterrupted(f"stopped at once during step {step + 1}; the last checkpoint is at step {saved}; "
                                  f"continue with: ddpm distill --resume {run_dir}") from None
    finally:
        reporter.close()
    return step, reporter.last_loss


def _record_round(run_dir: Path, r: int, grids, checkpoint: Path, step: int, loss: float, seconds: float) -> None:
    path = run_dir / "rounds.json"
    rounds = json.loads(path.read_text(encoding="utf-8"))["rounds"] if path.is_file() else []
    rounds = [e for e in rounds if e["round"] < r] + [{
        "round": r, "teacher_steps": len(grids[r - 1]), "steps": len(grids[r]), "timesteps": grids[r],
        "checkpoint": str(checkpoint.relative_to(run_dir)), "samples": f"samples/step_{step:08d}.png",
        "loss": loss, "seconds": round(seconds, 1),
    }]
    atomic_write_text(path, json.dumps({"rounds": rounds}, indent=1) + "\n")


__all__ = ["DistillResult", "progressive_distillation"]
