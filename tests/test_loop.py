"""The training loop end to end on the built-in digits, with a tiny model and few steps."""

import csv

import pytest
import torch
from PIL import Image

from ddpm.config import RunConfig, apply_overrides, load_toml
from ddpm.errors import CheckpointError, ConfigError
from ddpm.runs.checkpoint import list_checkpoints, read_checkpoint
from ddpm.training.loop import TrainingInterrupted, train

TINY = {
    "dataset": "digits", "dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8", "timesteps": "20", "batch_size": "8",
    "log_every": "2", "sample_every": "4", "save_every": "4", "num_samples": "4", "sampler": "ddim", "steps": "4",
    "warmup_steps": "2", "tensorboard": "false",
}


def tiny(tmp_path, **more) -> RunConfig:
    return apply_overrides(RunConfig(), {**TINY, "runs_dir": str(tmp_path / "runs"), **{k: str(v) for k, v in more.items()}})


def quiet(msg):
    pass


def _weights(run_dir):
    ckpt = read_checkpoint(run_dir)
    return ckpt.weights(ema=False), ckpt.weights(ema=True), ckpt.state()


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("extra", [{}, {"class_conditional": "true", "hflip": "true", "grad_accum": "2",
                                        "offset_noise_strength": "0.1", "dropout": "0.2"}])
def test_resume_equals_an_uninterrupted_run(tmp_path, extra):
    whole = train(tiny(tmp_path, name="whole", max_steps=8, **extra), log=quiet, progress=False)
    train(tiny(tmp_path, name="half", max_steps=4, **extra), log=quiet, progress=False)
    half_dir = tmp_path / "runs" / "half"
    resumed_config = apply_overrides(read_checkpoint(half_dir).config, {"max_steps": "8"})
    resumed = train(resumed_config, resume=half_dir, log=quiet, progress=False)
    assert whole.step == resumed.step == 8
    m1, e1, s1 = _weights(whole.run_dir)
    m2, e2, s2 = _weights(resumed.run_dir)
    _assert_same(m1, m2)
    _assert_same(e1, e2)
    assert s1["ema_updates"] == s2["ema_updates"] == 8
    for a, b in zip(s1["optimizer"]["state"].values(), s2["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    # metrics of the resumed run continue where the first half stopped
    with open(half_dir / "metrics.csv") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [2, 4, 6, 8]


def test_run_directory_contents(tmp_path):
    result = train(tiny(tmp_path, name="r", max_steps=8, keep_last=1), log=quiet, progress=False)
    run = tmp_path / "runs" / "r"
    assert result.run_dir == run
    config = load_toml(run / "config.toml")
    assert config.data.image_size == (8, 8) and config.data.channels == 1 and config.name == "r"
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    assert all(float(r["images_per_s"]) > 0 and float(r["loss"]) > 0 for r in rows)
    assert [p.name for p in list_checkpoints(run)] == ["step_00000008"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_00000004.png", "step_00000008.png"]
    with Image.open(run / "samples" / "step_00000008.png") as im:
        assert im.width >= 2 * 64 and im.height >= 2 * 64  # 2x2 grid of upscaled 8x8 digits
    with Image.open(run / "loss.png") as im:
        assert im.size == (640, 400)


def test_same_seed_same_grid_and_loss_falls(tmp_path):
    a = train(tiny(tmp_path, name="a", max_steps=4), log=quiet, progress=False)
    b = train(tiny(tmp_path, name="b", max_steps=4), log=quiet, progress=False)
    assert (a.run_dir / "samples" / "step_00000004.png").read_bytes() == (b.run_dir / "samples" / "step_00000004.png").read_bytes()
    longer = train(tiny(tmp_path, name="c", max_steps=60, lr="3e-3", log_every=10, sample_every=0, save_every=0),
                   log=quiet, progress=False)
    with open(longer.run_dir / "metrics.csv") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert losses[-1] < 0.7 * losses[0]


def test_time_limit_stops_with_a_checkpoint(tmp_path):
    messages = []
    result = train(tiny(tmp_path, name="t", max_steps=1000, max_minutes=1e-6), log=messages.append, progress=False)
    assert result.step == 1 and read_checkpoint(result.run_dir).step == 1
    assert "reached max_minutes at step 1" in messages[-1]


def test_interrupt_saves_a_checkpoint_at_the_end_of_the_step(tmp_path):
    import os
    import signal

    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when launched in the background

    def log(msg):
        if msg.startswith("step 4/"):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while step 4 is being reported

    with pytest.raises(TrainingInterrupted, match=r"interrupted at step 4; checkpoint saved to .*; continue with: ddpm train --resume"):
        train(tiny(tmp_path, name="i", max_steps=100), log=log, progress=False)
    assert read_checkpoint(tmp_path / "runs" / "i").step == 4
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_a_second_interrupt_stops_at_once_without_writing(tmp_path):
    def log(msg):
        if msg.startswith("step 6/"):
            raise KeyboardInterrupt  # as a second Ctrl-C does

    with pytest.raises(TrainingInterrupted, match=r"stopped at once during step 7; the last checkpoint is .*step_00000004"):
        train(tiny(tmp_path, name="f", max_steps=100), log=log, progress=False)
    assert read_checkpoint(tmp_path / "runs" / "f").step == 4


def test_divergence_stops_with_a_clear_message_and_no_bad_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="5 steps in a row had a non-finite loss or gradient; likely causes: a learning rate"):
        train(tiny(tmp_path, name="nan", max_steps=100, lr="1e30", warmup_steps=1, grad_clip=0, save_every=1),
              log=quiet, progress=False)
    for ckpt in list_checkpoints(tmp_path / "runs" / "nan"):
        for tensor in read_checkpoint(ckpt).weights(ema=False).values():
            assert torch.isfinite(tensor).all()
    with open(tmp_path / "runs" / "nan" / "metrics.csv") as fh:
        assert all(float(r["loss"]) == float(r["loss"]) for r in csv.DictReader(fh))  # no NaN rows logged


def test_resume_refuses_a_different_model(tmp_path):
    train(tiny(tmp_path, name="m", max_steps=2), log=quiet, progress=False)
    run = tmp_path / "runs" / "m"
    changed = apply_overrides(read_checkpoint(run).config, {"dim": "16", "max_steps": "4"})
    with pytest.raises(CheckpointError, match="was trained with model.dim = 8, not 16"):
        train(changed, resume=run, log=quiet, progress=False)


def test_existing_run_is_not_overwritten(tmp_path):
    train(tiny(tmp_path, name="x", max_steps=2), log=quiet, progress=False)
    with pytest.raises(ConfigError, match="already exists"):
        train(tiny(tmp_path, name="x", max_steps=2), log=quiet, progress=False)


def test_a_full_disk_keeps_the_previous_checkpoint_and_stops_clearly(tmp_path, monkeypatch):
    import errno

    import ddpm.runs.checkpoint as checkpoint

    real = checkpoint.save_file
    calls = {"n": 0}

    def failing(tensors, filename, *args):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint (two weight files) goes through
            with open(filename, "wb") as fh:
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, *args)

    monkeypatch.setattr(checkpoint, "save_file", failing)
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint of step 8 .*\(No space left on device\); earlier checkpoints are intact"):
        train(tiny(tmp_path, name="full", max_steps=12), log=quiet, progress=False)
    run = tmp_path / "runs" / "full"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000004"]
    assert read_checkpoint(run).step == 4


def test_bf16_auto_follows_the_device_and_the_optimizer_is_fused_on_a_cpu(tmp_path, monkeypatch):
    import ddpm.runs.build as build

    runs = {}
    for name, fast, setting in (("auto-fast", True, "auto"), ("auto-slow", False, "auto"), ("off", True, "false"), ("on", False, "true")):
        monkeypatch.setattr(build, "bf16_is_fast", lambda device, fast=fast: fast)
        lines = []
        result = train(tiny(tmp_path, name=name, max_steps=4, bf16=setting), log=lines.append, progress=False)
        runs[name] = (any("bf16 autocast" in line for line in lines), _weights(result.run_dir))
    assert {k: v[0] for k, v in runs.items()} == {"auto-fast": True, "auto-slow": False, "off": False, "on": True}
    # the same numbers with the same precision, and different ones in bf16: autocast is really on or off
    _assert_same(runs["auto-fast"][1][0], runs["on"][1][0])
    _assert_same(runs["auto-slow"][1][0], runs["off"][1][0])
    assert not torch.equal(runs["on"][1][0]["init_conv.weight"], runs["off"][1][0]["init_conv.weight"])
    assert read_checkpoint(tmp_path / "runs" / "on").config.train.bf16 is True
    assert read_checkpoint(tmp_path / "runs" / "auto-fast").config.train.bf16 is None  # saved as "auto"
    assert runs["off"][1][2]["optimizer"]["param_groups"][0]["fused"] is True


def test_a_run_in_use_is_refused_before_its_checkpoints_are_judged(tmp_path):
    # a live writer may add a checkpoint at any moment: resuming takes the run's lock first, so the
    # answer is "in use" even for a checkpoint that is (or is about to be) no longer the latest
    from ddpm.runs.run_dir import RunLock

    run = train(tiny(tmp_path, name="live", max_steps=4, save_every=2), log=quiet, progress=False).run_dir
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002", "step_00000004"]
    with RunLock(run):
        for target in (run, run / "checkpoints" / "step_00000002"):
            with pytest.raises(ConfigError, match=f"run directory {run} is in use by process"):
                train(tiny(tmp_path, max_steps=6), resume=target, log=quiet, progress=False)
    with pytest.raises(CheckpointError, match="is not the run's latest checkpoint"):
        train(tiny(tmp_path, max_steps=6), resume=run / "checkpoints" / "step_00000002", log=quiet, progress=False)
    assert train(tiny(tmp_path, max_steps=6), resume=run, log=quiet, progress=False).step == 6


def test_the_trainer_drops_labels_with_p_uncond(tmp_path):
    # a label's embedding row gets gradients only from images that keep the label: with
    # p_uncond = 1 the ten class rows stay at their initial values and only the null row (10)
    # learns; with p_uncond = 0 the null row stays and the rows of the classes drawn learn
    # (AdamW without weight decay)
    from ddpm.runs.build import build_unet

    rows = {}
    for p in ("1.0", "0.0"):
        config = tiny(tmp_path, name=f"p{p}", max_steps=3, class_conditional="true", p_uncond=p)
        result = train(config, log=quiet, progress=False)
        torch.manual_seed(read_checkpoint(result.run_dir).config.train.seed)  # the trainer's initial weights
        start = build_unet(read_checkpoint(result.run_dir).config).state_dict()["label_embed.embedding.weight"]
        trained = read_checkpoint(result.run_dir).weights(ema=False)["label_embed.embedding.weight"]
        rows[p] = [bool(torch.equal(trained[i], start[i])) for i in range(11)]
    assert rows["1.0"] == [True] * 10 + [False]
    assert rows["0.0"][10] and rows["0.0"][:10].count(False) >= 5  # classes of the 24 images drawn moved


def test_the_default_run_learns_the_labels_and_draws_with_guidance_2(tmp_path):
    # class_conditional and guidance_scale are "auto" by default: a run on mnist10k (the default
    # data set) becomes class-conditional and draws with w = 2; another data set stays
    # unconditional at w = 1; the run's saved config holds the decided values, so resuming and
    # sampling see the same ones
    default = tiny(tmp_path, name="default", dataset="mnist10k", max_steps=2, sample_every=2, save_every=2)
    assert default.data.class_conditional is None and default.sample.guidance_scale is None
    saved = read_checkpoint(train(default, log=quiet, progress=False).run_dir).config
    assert (saved.data.class_conditional, saved.data.num_classes, saved.sample.guidance_scale) == (True, 10, 2.0)
    assert 'class_conditional = true' in (tmp_path / "runs" / "default" / "config.toml").read_text()
    other = read_checkpoint(train(tiny(tmp_path, name="digits", max_steps=2), log=quiet, progress=False).run_dir).config
    assert (other.data.class_conditional, other.data.num_classes, other.sample.guidance_scale) == (False, 0, 1.0)
    explicit = tiny(tmp_path, name="w1", dataset="mnist10k", max_steps=2, guidance_scale=1, class_conditional="false")
    with pytest.raises(ConfigError, match="--guidance-scale needs a class-conditional run"):
        train(tiny(tmp_path, name="bad", dataset="mnist10k", max_steps=2, guidance_scale=3, class_conditional="false"),
              log=quiet, progress=False)
    saved = read_checkpoint(train(explicit, log=quiet, progress=False).run_dir).config
    assert (saved.data.class_conditional, saved.sample.guidance_scale) == (False, 1.0)


# ---- one optimizer step (ddpm.training.step), which the loop and benchmarks/throughput.py share


def _stepper(grad_accum=1, grad_clip=1.0):
    from ddpm import GaussianDiffusion
    from ddpm.models import Unet
    from ddpm.training.ema import EMA
    from ddpm.training.step import Stepper

    torch.manual_seed(0)
    model = Unet(dim=8, dim_mults=(1, 2), channels=1, attn_heads=2, attn_dim_head=8)
    diffusion = GaussianDiffusion(model, 8, timesteps=20)
    for p in model.parameters():  # away from the zero init of residual branches, so every weight gets a gradient
        torch.nn.init.normal_(p, std=0.05)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return Stepper(diffusion, model, opt, schedule, EMA(model, 0.9, warmup=False), grad_accum=grad_accum, grad_clip=grad_clip)


def _micro(rows=slice(None), nan=False):
    from ddpm.training.step import Micro

    g = torch.Generator().manual_seed(1)
    x, t, noise = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 20, (4,), generator=g), torch.randn(4, 1, 8, 8, generator=g)
    if nan:
        x[0, 0, 0, 0] = float("nan")
    return Micro(x[rows], t=t[rows], noise=noise[rows])


def test_accumulating_two_halves_is_one_step_on_the_whole_batch():
    whole, halves = _stepper(), _stepper(grad_accum=2)
    a = whole.step(lambda micro: _micro())
    b = halves.step(lambda micro: _micro(slice(2 * micro, 2 * micro + 2)))
    assert a.finite and b.finite and a.loss == pytest.approx(b.loss, rel=1e-5)
    assert torch.allclose(a.grad_norm, b.grad_norm, rtol=1e-4)
    # the gradients applied (left in place after the step); Adam's first update, about lr * sign(g),
    # would magnify rounding in gradients near zero
    for p, q in zip(whole.model.parameters(), halves.model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6)
    assert whole.ema.updates == halves.ema.updates == 1 and whole.scheduler.last_epoch == 1


def test_the_step_clips_the_gradient_it_applies_and_reports_the_norm_before():
    s = _stepper(grad_clip=1e-3)
    result = s.step(lambda micro: _micro())
    applied = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in s.model.parameters()]))
    assert float(result.grad_norm) > 1e-2 and float(applied) == pytest.approx(1e-3, rel=1e-3)


def test_a_non_finite_step_changes_nothing_and_drops_its_gradients():
    s = _stepper()
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in s.ema.state_dict().items()}
    result = s.step(lambda micro: _micro(nan=True))
    assert not result.finite
    _assert_same(before, s.model.state_dict())
    _assert_same(ema_before, s.ema.state_dict())
    assert s.ema.updates == 0 and s.scheduler.last_epoch == 0 and not s.optimizer.state
    assert all(p.grad is None for p in s.model.parameters())


@pytest.mark.parametrize("steps_left", [5000, 4999])
def test_compile_auto_compiles_the_network_of_a_run_with_enough_steps_to_go(tmp_path, monkeypatch, steps_left):
    from ddpm.runs import build

    compiled, messages = [], []
    monkeypatch.setattr(torch, "compile", lambda net, **kw: compiled.append(net) or net)  # the decision, not inductor
    monkeypatch.setattr(build.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(build.os, "name", "posix")
    monkeypatch.setattr(build, "COMPILE_AUTO_MIN_MINUTES", 0.0)  # so that a 1e-6-minute run ends at step 1
    result = train(tiny(tmp_path, name="c", max_steps=steps_left, max_minutes=1e-6, bf16=False), log=messages.append,
                   progress=False)
    assert result.step == 1 and len(compiled) == (steps_left >= build.COMPILE_AUTO_MIN_STEPS)
    assert ("torch.compile" in messages[0]) == bool(compiled)


def test_compile_auto_is_decided_by_the_whole_run_so_a_resumed_run_computes_as_it_began(tmp_path, monkeypatch):
    # a 5,000-step run stopped at step 1 has 4,999 steps left when resumed: it is compiled again,
    # as it was when it began (compiled and eager kernels round differently, so resume stays exact)
    from ddpm.runs import build

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda net, **kw: compiled.append(net) or net)
    monkeypatch.setattr(build.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(build.os, "name", "posix")
    monkeypatch.setattr(build, "COMPILE_AUTO_MIN_MINUTES", 0.0)
    first = train(tiny(tmp_path, name="r", max_steps=build.COMPILE_AUTO_MIN_STEPS, max_minutes=1e-6, bf16=False),
                  log=lambda m: None, progress=False)
    assert first.step == 1 and len(compiled) == 1
    ckpt = read_checkpoint(list_checkpoints(first.run_dir)[-1])
    second = train(ckpt.config, resume=str(ckpt.path), log=lambda m: None, progress=False)
    assert second.step == 2 and len(compiled) == 2
