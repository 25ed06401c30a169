"""Fine-tuning (``ddpm train --init-from``): a new run that starts from another run's weights, with its
network, schedule and objective, on new data; refused where a setting contradicts that network;
recorded; resumed exactly without the source."""

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import ddpm
from ddpm.cli import main
from ddpm.config import RunConfig, apply_overrides
from ddpm.errors import ConfigError
from ddpm.runs.checkpoint import read_checkpoint, save_checkpoint
from ddpm.runs.init_from import finetune_config, given_in_toml, read_init_record
from ddpm.training.loop import train

NET = ["--dim", "8", "--dim-mults", "1,2", "--attn-heads", "2", "--attn-dim-head", "8", "--timesteps", "20"]
QUIET = ["--log-every", "1", "--sample-every", "0", "--save-every", "0", "--num-samples", "4", "--no-tensorboard"]


def pngs(folder, n, classes=(), size=12, seed=0):
    """``n`` small random RGB PNGs in ``folder``, or ``n`` in each class sub-folder."""
    rng = np.random.default_rng(seed)
    for where in [folder / c for c in classes] or [folder]:
        where.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(where / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two trained source runs: ``plain`` (digits, 8x8 grayscale, EMA well away from the raw weights)
    and ``classes`` (a folder of two classes, 8x8 RGB, class-conditional)."""
    root = tmp_path_factory.mktemp("sources")
    runs = root / "runs"
    assert main(["train", "--dataset", "digits", *NET, *QUIET, "--batch-size", "8", "--max-steps", "4", "--ema-decay", "0.5",
                 "--no-ema-warmup", "--lr", "1e-2", "--warmup-steps", "0", "--sampler", "ddim", "--steps", "4", "--min-snr-gamma", "0",
                 "--runs-dir", str(runs), "--name", "plain"]) == 0
    pets = pngs(root / "pets", 4, classes=("cat", "dog"))
    assert main(["train", "--dataset", f"folder:{pets}", "--image-size", "8", "--class-conditional", *NET, *QUIET,
                 "--batch-size", "4", "--max-steps", "2", "--runs-dir", str(runs), "--name", "classes"]) == 0
    return {"root": root, "plain": runs / "plain", "classes": runs / "classes"}


def refused(capsys, *args):
    """The one-sentence error of ``ddpm train ARGS`` (status 2)."""
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ddpm: error: ") and "Traceback" not in err, err
    return err[len("ddpm: error: "):].strip()


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize("weights", ["ema", "raw"])
def test_a_fine_tune_starts_from_the_source_weights_and_records_where(tmp_path, sources, weights, capsys):
    source = read_checkpoint(sources["plain"])
    assert _max_diff(source.weights(ema=True), source.weights(ema=False)) > 1e-3  # the two starts differ
    photos = pngs(tmp_path / "photos", 6)
    # the checkpoint directory or the run directory (its latest) both name the source
    given = source.path if weights == "raw" else sources["plain"]
    # a vanishing learning rate: after one step the weights are still the start; an EMA of decay
    # 0.5 sits halfway between its own start and them, so it too is the start only if it began there
    assert main(["train", "--init-from", str(given), "--init-weights", weights, "--dataset", f"folder:{photos}",
                 "--batch-size", "4", "--max-steps", "1", "--lr", "1e-12", "--ema-decay", "0.5", "--no-ema-warmup",
                 *QUIET, "--runs-dir", str(tmp_path / "runs"), "--name", "ft"]) == 0
    out = capsys.readouterr().out
    assert f"starting from the {'EMA' if weights == 'ema' else 'raw'} weights of step 4 of {source.path}" in out
    ft = read_checkpoint(tmp_path / "runs" / "ft")
    start = source.weights(ema=weights == "ema")
    assert _max_diff(ft.weights(ema=False), start) < 1e-9
    assert _max_diff(ft.weights(ema=True), start) < 1e-9
    # the network, schedule, objective and sampling settings are the source's; the data and training the new run's
    c, s = ft.config, source.config
    assert (c.model, c.diffusion, c.sample) == (s.model, s.diffusion, s.sample)
    assert (c.data.dataset, c.data.image_size, c.data.channels, c.data.class_conditional) == (f"folder:{photos}", (8, 8), 1, False)
    assert (c.train.lr, c.train.batch_size, c.train.init_weights) == (1e-12, 4, weights)
    assert c.train.init_from == str(source.path.resolve())  # the checkpoint taken, not "the latest"
    record = read_init_record(tmp_path / "runs" / "ft")
    name = "ema.safetensors" if weights == "ema" else "model.safetensors"
    assert record["sha256"] == hashlib.sha256((source.path / name).read_bytes()).hexdigest()
    assert (record["step"], record["weights"], record["file"]) == (4, weights, name)
    assert record["checkpoint"] == str(source.path.resolve()) and record["source"] == str(sources["plain"].resolve())
    assert read_init_record(sources["plain"]) is None  # a run trained from scratch has none
    # an ordinary run: it loads and samples like any other
    assert ddpm.load_run(tmp_path / "runs" / "ft").sample(2).shape == (2, 1, 8, 8)


def test_resume_of_a_fine_tune_is_exact_and_never_reads_the_source(tmp_path, sources):
    source = tmp_path / "source"
    shutil.copytree(sources["classes"], source)  # a copy, deleted below
    pets = pngs(tmp_path / "pets", 3, classes=("a", "b"), size=10, seed=1)
    runs = str(tmp_path / "runs")
    common = ["--init-from", str(source), "--dataset", f"folder:{pets}", "--batch-size", "4", "--bf16", "--hflip",
              "--lr", "1e-3", "--warmup-steps", "0", *QUIET, "--runs-dir", runs]
    assert main(["train", *common, "--max-steps", "6", "--name", "whole"]) == 0
    assert main(["train", *common, "--max-steps", "3", "--name", "half"]) == 0
    record = (tmp_path / "runs" / "half" / "init.json").read_bytes()
    shutil.rmtree(source)  # the source is gone: the resumed run must not need it
    assert main(["train", "--resume", str(tmp_path / "runs" / "half"), "--max-steps", "6"]) == 0
    whole, half = read_checkpoint(tmp_path / "runs" / "whole"), read_checkpoint(tmp_path / "runs" / "half")
    assert whole.step == half.step == 6 and half.config.data.class_conditional and half.config.train.bf16
    for ema in (False, True):
        a, b = whole.weights(ema=ema), half.weights(ema=ema)
        assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = whole.state(), half.state()
    assert sa["ema_updates"] == sb["ema_updates"] == 6
    for x, y in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(x["exp_avg"], y["exp_avg"]) and torch.equal(x["exp_avg_sq"], y["exp_avg_sq"])
    assert (tmp_path / "runs" / "half" / "init.json").read_bytes() == record  # written once, at the start


@pytest.mark.parametrize("args, message", [
    (["--dim", "16"], "--dim 16 contradicts the run being fine-tuned ({ckpt}), which has model.dim = 8; leave --dim "
     "out to take the run's own, or train a new run without --init-from"),
    (["--dim-mults", "1,2,2"], "--dim-mults 1,2,2 contradicts the run being fine-tuned ({ckpt}), which has "
     "model.dim_mults = 1,2;"),
    (["--learned-variance"], "--learned-variance true contradicts"),
    (["--image-size", "16"], "--image-size 16 contradicts the run being fine-tuned ({ckpt}), which has data.image_size = 8,8;"),
    (["--channels", "3"], "--channels 3 contradicts the run being fine-tuned ({ckpt}), which has data.channels = 1;"),
    (["--class-conditional"], "--class-conditional true contradicts"),
    (["--timesteps", "50"], "--timesteps 50 contradicts the run being fine-tuned ({ckpt}), which has diffusion.timesteps = 20;"),
    (["--beta-schedule", "linear"], "--beta-schedule linear contradicts"),
    (["--objective", "pred_noise"], "--objective pred_noise contradicts the run being fine-tuned ({ckpt}), which has "
     "diffusion.objective = pred_v;"),
    (["--init-weights", "best"], "--init-weights must be ema (the weights a run samples with) or raw (its training "
     "weights); got 'best'"),
])
def test_settings_that_contradict_the_source_are_refused_in_one_sentence(tmp_path, sources, capsys, args, message):
    photos = pngs(tmp_path / "photos", 4)
    runs = tmp_path / "runs"
    err = refused(capsys, "--init-from", str(sources["plain"]), "--dataset", f"folder:{photos}", "--batch-size", "4",
                  "--runs-dir", str(runs), *args)
    assert err.startswith(message.format(ckpt=read_checkpoint(sources["plain"]).path)), err
    assert not runs.exists()  # refused before a directory was made


def test_the_classes_must_be_the_source_s(tmp_path, sources, capsys):
    runs = tmp_path / "runs"
    three = pngs(tmp_path / "three", 2, classes=("a", "b", "c"))
    err = refused(capsys, "--init-from", str(sources["classes"]), "--dataset", f"folder:{three}", "--batch-size", "4",
                  "--runs-dir", str(runs))
    assert err == (f"the run being fine-tuned has 2 classes but data set 'folder:{three}' has 3; give it one sub-folder "
                   "per class of that run (2)")
    flat = pngs(tmp_path / "flat", 4)
    err = refused(capsys, "--init-from", str(sources["classes"]), "--dataset", f"folder:{flat}", "--batch-size", "4",
                  "--runs-dir", str(runs))
    assert err == (f"the run being fine-tuned ({read_checkpoint(sources['classes']).path.resolve()}) is class-conditional, "
                   f"and data set 'folder:{flat}' has no class labels; give a folder with one sub-folder per class")
    assert not runs.exists()


def test_settings_not_given_are_the_source_s_and_training_ones_may_change(tmp_path, sources):
    source = read_checkpoint(sources["plain"]).config
    base = apply_overrides(RunConfig(), {"init_from": str(sources["plain"]), "dataset": "digits", "lr": "1e-5",
                                         "dropout": "0.1", "min_snr_gamma": "5", "sampler": "dpm++2m", "steps": "7",
                                         "dim": "16"})
    # dim=16 is the default's value here, not given: the source's (8) is taken
    config = finetune_config(base, given={"init_from", "dataset", "lr", "dropout", "min_snr_gamma", "sampler", "steps"})
    assert (config.model.dim, config.model.dim_mults, config.diffusion.timesteps) == (8, (1, 2), 20)
    assert (config.model.dropout, config.diffusion.min_snr_gamma, config.train.lr) == (0.1, 5.0, 1e-5)
    assert (config.sample.sampler, config.sample.steps, config.sample.grid) == ("dpm++2m", 7, source.sample.grid)
    assert config.data.dataset == "digits" and config.data.image_size == (8, 8)
    # train(config) itself holds a whole config to the source: a default network that is not the source's is refused
    with pytest.raises(ConfigError, match=r"^--dim 16 contradicts the run being fine-tuned"):
        train(apply_overrides(base, {"runs_dir": str(tmp_path / "runs")}), log=lambda m: None, progress=False)
    assert not (tmp_path / "runs").exists()
    # a --config file: the fields it sets count as given
    toml = tmp_path / "ft.toml"
    toml.write_text('[model]\ndim = 8\ndropout = 0.2\n[train]\nlr = 3e-5\n[sample]\nsteps = 9\n', encoding="utf-8")
    assert given_in_toml(toml) == {"dim", "dropout", "lr", "steps"}
    toml.write_text('[model]\ndim = 12\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^--dim 12 contradicts"):
        finetune_config(apply_overrides(RunConfig(), {"init_from": str(sources["plain"]), "dim": "12"}), given_in_toml(toml))


def _fake_run(root, name, **overrides):
    from ddpm.runs.build import build_unet

    config = apply_overrides(RunConfig(), {"dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8",
                                           "image_size": "8", "channels": "1", "class_conditional": "false", **overrides})
    weights = build_unet(config).state_dict()
    save_checkpoint(root / name, 10, model_state=weights, ema_state=weights, train_state={"step": 10}, config=config)
    return root / name


def test_a_distilled_student_and_a_text_run_are_refused(tmp_path, capsys):
    student = _fake_run(tmp_path, "student", teacher="/runs/teacher/checkpoints/step_00004000")
    text = _fake_run(tmp_path, "text", text_conditional="true", text_encoder="builtin", text_vocab="a,red,square",
                     builtin_text_dim="8", builtin_text_layers="0")
    where = ["--dataset", "digits", "--runs-dir", str(tmp_path / "runs")]
    assert refused(capsys, "--init-from", str(student), *where) == (
        f"{student / 'checkpoints' / 'step_00000010'} is a student distilled from /runs/teacher/checkpoints/step_00004000, "
        "and training it on the diffusion loss would undo its few-step sampling; fine-tune its teacher, then distill the result")
    assert refused(capsys, "--init-from", str(text), *where) == (
        f"{text / 'checkpoints' / 'step_00000010'} is a text-conditional run, which --init-from does not take (its captions' "
        "vocabulary and encoder would have to carry over); fine-tune an unconditional or class-conditional run")
    assert not (tmp_path / "runs").exists()


def test_the_options_that_only_a_new_fine_tune_takes(tmp_path, sources, capsys):
    assert refused(capsys, "--init-weights", "raw", "--runs-dir", str(tmp_path)) == (
        "--init-weights applies only with --init-from (the run whose weights a fine-tune starts from)")
    assert refused(capsys, "--resume", str(sources["plain"]), "--init-from", str(sources["classes"])) == (
        "--init-from and --init-weights start a new run; a resumed run continues from its own checkpoint (leave them "
        "out, or drop --resume to start a fine-tune)")
    assert refused(capsys, "--init-from", str(tmp_path / "nowhere")) == (
        f"--init-from {tmp_path / 'nowhere'}: no run or checkpoint at {tmp_path / 'nowhere'}")
    ema_file = read_checkpoint(sources["plain"]).path / "ema.safetensors"
    assert refused(capsys, "--init-from", str(ema_file)) == (
        f"--init-from takes a run directory or a checkpoint directory, not the file {ema_file}; add --init-weights raw "
        "to start from a checkpoint's model.safetensors")
    # as a user meets it: status 2, one line, no traceback
    out = subprocess.run([sys.executable, "-m", "ddpm", "train", "--init-from", str(sources["plain"]), "--dim", "16",
                          "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--dim 16 contradicts" in out.stderr


def test_a_student_of_a_fine_tuned_teacher_does_not_claim_its_start(tmp_path, sources):
    from ddpm.distill.settings import student_base

    photos = pngs(tmp_path / "photos", 4)
    assert main(["train", "--init-from", str(sources["plain"]), "--dataset", f"folder:{photos}", "--batch-size", "4",
                 "--max-steps", "1", *QUIET, "--runs-dir", str(tmp_path / "runs"), "--name", "ft"]) == 0
    teacher = read_checkpoint(tmp_path / "runs" / "ft")
    assert teacher.config.train.init_from
    assert student_base(teacher, {}).train.init_from == ""


def test_a_fine_tune_under_torchrun_equals_one_process(tmp_path, sources):
    photos = pngs(tmp_path / "photos", 8)
    runs = str(tmp_path / "runs")
    common = ["--init-from", str(sources["plain"]), "--dataset", f"folder:{photos}", "--max-steps", "2", "--no-bf16",
              "--lr", "1e-3", *QUIET, "--runs-dir", runs]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ddpm", "train",
           *common, "--batch-size", "4", "--name", "ddp"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 processes, global batch 8" in out.stdout
    assert main(["train", *common, "--batch-size", "8", "--name", "one"]) == 0
    ddp, one = read_checkpoint(tmp_path / "runs" / "ddp"), read_checkpoint(tmp_path / "runs" / "one")
    flat = lambda w: torch.cat([w[k].flatten() for k in sorted(w)])  # noqa: E731
    start = flat(read_checkpoint(sources["plain"]).weights(ema=True))
    for ema in (False, True):
        a, b = flat(ddp.weights(ema=ema)), flat(one.weights(ema=ema))
        # Adam normalises each element's step, so the few elements whose gradient is about 0 (the last
        # biases) may step either way on the rounding that differs between a batch of 8 and two of 4:
        # all but those agree to float precision, and the two updates from the start agree to 5%
        # (a run that had not started from the source would be off by the whole distance between starts)
        far = ~torch.isclose(a, b, rtol=1e-4, atol=1e-6)
        assert int(far.sum()) <= 20, int(far.sum())
        assert float((a - b).norm() / (b - start).norm()) < 0.05
    assert json.loads((tmp_path / "runs" / "ddp" / "init.json").read_text()) == read_init_record(tmp_path / "runs" / "one")


HAVE_DIFFUSERS = importlib.util.find_spec("diffusers") is not None


@pytest.mark.needs(not HAVE_DIFFUSERS, 'diffusers is not installed (pip install ".[diffusers]")')
def test_an_imported_diffusers_model_fine_tunes_and_still_computes_what_diffusers_does(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 32),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=32).eval()
    with torch.no_grad():  # diffusers zeroes the output convolution of a new UNet: give it weights
        unet.conv_out.weight.normal_(0, 0.05)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", variance_type="fixed_large")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(str(tmp_path / "pipe"))
    runs = tmp_path / "runs"
    assert main(["import", f"diffusers:{tmp_path / 'pipe'}", "--out", str(runs / "imported")]) == 0
    photos = pngs(tmp_path / "photos", 4, size=20)
    assert main(["train", "--init-from", str(runs / "imported"), "--dataset", f"folder:{photos}", "--batch-size", "2",
                 "--max-steps", "1", "--lr", "1e-12", "--sampler", "ddim", "--steps", "2", *QUIET,
                 "--runs-dir", str(runs), "--name", "ft"]) == 0
    source, ft = read_checkpoint(runs / "imported"), read_checkpoint(runs / "ft")
    assert (ft.config.model, ft.config.diffusion) == (source.config.model, source.config.diffusion)
    assert ft.config.data.image_size == (16, 16) and ft.config.data.channels == 3
    assert _max_diff(ft.weights(ema=False), source.weights(ema=True)) < 1e-9
    # the fine-tuned run's network is still diffusers' UNet2DModel: the same output for the same input
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    with torch.no_grad():
        ours, theirs = ddpm.load_run(runs / "ft").model(x, t), unet(x, t).sample
    assert float((ours - theirs).abs().max()) <= 1e-5 * float(theirs.abs().max())
