"""``ddpm distill`` end to end (ddpm.distill.run): the student's run directory, exact resume after
Ctrl-C, sampling the student in its own number of steps, and the errors users meet."""

import csv
import json
import os
import shutil
import signal

import pytest
import torch

from ddpm.cli import main
from ddpm.config import RunConfig, apply_overrides, load_toml
from ddpm.distill import progressive_distillation
from ddpm.errors import CheckpointError, ConfigError
from ddpm.generate import generate
from ddpm.runs.load import load_for_sampling
from ddpm.runs.checkpoint import list_checkpoints, read_checkpoint
from ddpm.training.loop import TrainingInterrupted, train

TINY = {"dataset": "digits", "dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8", "timesteps": "20", "batch_size": "8",
        "log_every": "2", "sample_every": "0", "save_every": "0", "num_samples": "4", "sampler": "ddim", "steps": "4",
        "warmup_steps": "2", "tensorboard": "false", "objective": "pred_v"}
SMALL = {"batch_size": "4", "log_every": "1", "save_every": "2", "num_samples": "2", "keep_last": "1", "lr": "1e-3"}


def quiet(msg):
    pass


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A tiny unconditional and a tiny class-conditional teacher (a few steps: the weights need not be good)."""
    root = tmp_path_factory.mktemp("teachers")
    for name, extra in (("plain", {}), ("cc", {"class_conditional": "true"})):
        train(apply_overrides(RunConfig(), {**TINY, "runs_dir": str(root), "name": name, "max_steps": "2", **extra}),
              log=quiet, progress=False)
    return root


def _same_weights(a, b):
    wa, wb = read_checkpoint(a), read_checkpoint(b)
    assert wa.step == wb.step
    for ema in (False, True):
        x, y = wa.weights(ema=ema), wb.weights(ema=ema)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    sa, sb = wa.state(), wb.state()
    for p, q in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(p["exp_avg"], q["exp_avg"]) and torch.equal(p["exp_avg_sq"], q["exp_avg_sq"])


def test_a_round_interrupted_and_resumed_equals_an_uninterrupted_one(teachers, tmp_path):
    common = dict(rounds=2, steps_per_round=4, teacher_guidance=2.0, settings=SMALL, log=quiet, progress=False)
    whole = progressive_distillation(teachers / "cc", 2, out=tmp_path / "whole", **common)

    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when launched in the background

    def ctrl_c(msg):
        if msg.startswith("step 5/"):  # Ctrl-C during round 2's first step (logged as it ends)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match=r"interrupted at step 5; checkpoint saved to .*step_00000005; "
                                                  r"continue with: ddpm distill --resume"):
        progressive_distillation(teachers / "cc", 2, out=tmp_path / "cut", **{**common, "log": ctrl_c})
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step_00000004", "step_00000005"]
    resumed = progressive_distillation(resume=tmp_path / "cut", log=quiet, progress=False)
    assert resumed.step == whole.step == 8 and resumed.finished
    _same_weights(whole.run_dir, resumed.run_dir)  # bit for bit: every draw is seeded by the step
    _same_weights(whole.students[4], resumed.students[4])
    # round ends are kept (keep_last 1 prunes only the checkpoints between them)
    assert [p.name for p in list_checkpoints(whole.run_dir)] == ["step_00000004", "step_00000008"]
    with open(resumed.run_dir / "metrics.csv") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == list(range(1, 9))
    rounds = json.loads((resumed.run_dir / "rounds.json").read_text())["rounds"]
    assert [(e["teacher_steps"], e["steps"], e["timesteps"]) for e in rounds] == [(8, 4, [4, 9, 14, 19]), (4, 2, [9, 19])]
    assert sorted(p.name for p in (resumed.run_dir / "samples").iterdir()) == \
        ["step_00000000.png", "step_00000004.png", "step_00000008.png"]
    # each checkpoint records its round's sampler; the guidance is in the student and recorded
    for steps, path in resumed.students.items():
        sc = read_checkpoint(path).config.sample
        assert (sc.sampler, sc.steps, sc.grid, sc.eta, sc.guidance_scale) == ("ddim", steps, "trailing", 0.0, 1.0)
    config = load_toml(resumed.run_dir / "config.toml")
    assert config.distill.teacher_guidance == 2.0 and config.distill.teacher.endswith("cc/checkpoints/step_00000002")
    assert config.diffusion.objective == "pred_v" and config.model.dropout == 0.0
    teacher = read_checkpoint(resumed.run_dir / "teacher").config.sample
    assert (teacher.sampler, teacher.steps, teacher.guidance_scale) == ("ddim", 8, 2.0)


def test_the_student_is_a_run_that_samples_in_its_own_steps(teachers, tmp_path, capsys):
    out = tmp_path / "student"
    assert main(["distill", "--run", str(teachers / "plain"), "--to-steps", "1", "--rounds", "2", "--steps-per-round",
                 "2", "--out", str(out), "--batch-size", "4", "--num-samples", "2", "--no-tensorboard"]) == 0
    printed = capsys.readouterr().out
    assert "2 rounds to 1 steps" in printed and f"ddpm sample --run {out}" in printed
    diffusion, ckpt = load_for_sampling(out)
    calls = []
    diffusion.model.register_forward_hook(lambda *a: calls.append(1))
    images = generate(diffusion, 3, sample=ckpt.config.sample)
    assert images.shape == (3, 1, 8, 8) and len(calls) == 1  # one network evaluation per batch
    assert main(["sample", "--run", str(out), "--n", "2", "--out", str(tmp_path / "drawn")]) == 0
    assert (tmp_path / "drawn" / "grid.png").is_file()
    assert main(["viz", "interpolate", "--run", str(out), "--n", "1", "--columns", "2",
                 "--out", str(tmp_path / "i.png")]) == 0
    # distilling it further needs its own grid: it knows only its one timestep
    assert main(["distill", "--run", str(out), "--to-steps", "1", "--rounds", "1", "--out", str(tmp_path / "x")]) == 2
    assert "is a 1-step student, trained on its own 1 timesteps only" in capsys.readouterr().err
    # ddpm train does not take a student over
    assert main(["train", "--resume", str(out)]) == 2
    assert f"belongs to a student distilled from {teachers / 'plain'}" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--to-steps", "0"], "--to-steps must be a positive integer; got 0"),
    (["--to-steps", "4", "--rounds", "3"], "starts from a teacher of 32 DDIM steps, more than its 20 timesteps"),
    (["--teacher-guidance", "3"], "--teacher-guidance needs a class-conditional teacher"),
    (["--student-objective", "pred_z"], "unknown student objective 'pred_z'; choose one of pred_noise, pred_x0, pred_v"),
    (["--distill-weighting", "snr"], "unknown distillation weighting 'snr'"),
    (["--steps-per-round", "0"], "--steps-per-round must be a positive integer; got 0"),
    (["--objective-from-steps", "-1"], "--objective-from-steps must be 0 (every round) or a number of steps; got -1"),
    (["--lr", "-1"], "--lr must be greater than 0; got -1"),
])
def test_bad_settings_get_one_sentence_before_anything_is_made(teachers, tmp_path, capsys, args, message):
    out = tmp_path / "s"
    assert main(["distill", "--run", str(teachers / "plain"), "--out", str(out), "--rounds", "1", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()


def test_resume_refuses_what_would_change_the_rounds(teachers, tmp_path, capsys):
    out = tmp_path / "s"
    messages = []
    cut = progressive_distillation(teachers / "plain", 2, rounds=1, steps_per_round=2, out=out,
                                   settings={**SMALL, "max_minutes": "1e-9"}, log=messages.append, progress=False)
    assert not cut.finished and cut.step == 1 and cut.students == {}
    assert f"reached max_minutes at step 1; continue with: ddpm distill --resume {out}" in messages
    assert main(["distill", "--resume", str(out), "--max-minutes", "0"]) == 0  # a run-time setting may change
    assert read_checkpoint(out).step == 2
    assert main(["distill", "--resume", str(out), "--lr", "1"]) == 2
    assert "--lr cannot be set when resuming (the rounds must stay as they began); these can: --device" in \
        capsys.readouterr().err
    assert main(["distill", "--resume", str(teachers / "plain")]) == 2
    assert "is not the run directory of a student made by ddpm distill" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # argparse's usage error
        main(["distill", "--run", str(teachers / "plain"), "--resume", str(out)])
    assert usage.value.code == 2 and "argument --resume: not allowed with argument --run" in capsys.readouterr().err
    assert main(["distill", "--run", str(teachers / "plain"), "--out", str(out), "--rounds", "1"]) == 2
    assert f"run directory {out} already exists" in capsys.readouterr().err
    # a finished run resumes to nothing
    done = progressive_distillation(resume=out, log=messages.append, progress=False)
    assert done.step == 2 and "has finished all 1 rounds already" in messages[-1]
    with pytest.raises(ConfigError, match="either a teacher run to distil or a student run to resume"):
        progressive_distillation()
    shutil.rmtree(out / "teacher")
    with pytest.raises(CheckpointError, match="lacks config.toml or teacher/"):
        progressive_distillation(resume=out)
