"""Bad settings are refused before anything is created, replaced or trained."""

import pytest

from ddpm.config import RunConfig, apply_overrides
from ddpm.errors import CheckpointError, ConfigError
from ddpm.runs.checkpoint import read_checkpoint
from ddpm.training.loop import train
from ddpm.runs.validate import validate_config

TINY = {"dataset": "digits", "dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8", "timesteps": "20", "batch_size": "8",
        "sample_every": "0", "save_every": "2", "num_samples": "4", "sampler": "ddim", "steps": "4", "tensorboard": "false",
        "max_steps": "4"}


def resolved(**more):
    return apply_overrides(RunConfig(), {**TINY, "image_size": "8", "channels": "1", **more})


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"log_every": "0"}, "--log-every must be at least 1; got 0"),
        ({"lr": "-1"}, "--lr must be greater than 0; got -1"),
        ({"weight_decay": "-0.1"}, "--weight-decay must be at least 0; got -0.1"),
        ({"max_minutes": "-1"}, "--max-minutes must be at least 0; got -1"),
        ({"min_snr_gamma": "-3"}, "--min-snr-gamma must be at least 0; got -3"),
        ({"vlb_weight": "-1"}, "--vlb-weight must be at least 0; got -1"),
        ({"attn_heads": "0"}, "--attn-heads must be at least 1; got 0"),
        ({"ema_decay": "1"}, "--ema-decay must lie in [0, 1); got 1"),
        ({"p_uncond": "2"}, "--p-uncond must be a probability in [0, 1]; got 2"),
        ({"num_samples": "0"}, "--num-samples must be at least 1; got 0"),
        ({"sampler": "euler"}, "unknown sampler 'euler'"),
        ({"steps": "50"}, "steps must be an integer from 1 to the 20 training timesteps; got 50"),
        ({"steps": "-2"}, "--steps must be 0 (the sampler's default) or from 1 to the 20 training timesteps; got -2"),
        ({"max_steps": "0"}, "--max-steps must be at least 1; got 0"),
        ({"grid": "cubic"}, "unknown timestep grid 'cubic'"),
        ({"clip": "soft"}, "unknown clip mode 'soft'"),
        ({"guidance_scale": "3"}, "--guidance-scale needs a class-conditional run"),
        ({"sampler": "dpm++2m", "eta": "0.5"}, "--eta applies only to the ddim sampler, not to dpm++2m"),
        ({"final": "end"}, "unknown final step 'end'; choose one of clean, t0"),
        ({"threshold_percentile": "2"}, "threshold_percentile must lie in (0, 1] (Imagen: 0.995); got 2.0"),
        ({"threshold_max": "-1"}, "threshold_max must be positive, or None for no maximum; got -1.0"),
        ({"sampler": "unipc3", "clipped_eps": "false"}, "--no-clipped-eps applies only to the ddim sampler, not to unipc3"),
        ({"beta_schedule": "cosinus"}, "unknown beta schedule 'cosinus'"),
        ({"image_size": "9"}, "image size 9x9 cannot be halved"),
        ({"dim": "12"}, "divisible by resnet_block_groups=8"),
    ],
)
def test_each_bad_setting_is_one_sentence(setting, message):
    with pytest.raises(ConfigError) as err:
        validate_config(resolved(**setting))
    assert message in str(err.value)


def test_the_defaults_and_the_tiny_config_are_valid():
    validate_config(resolved())
    validate_config(apply_overrides(RunConfig(), {"image_size": "8", "channels": "1"}))


def test_overwrite_with_a_bad_setting_keeps_the_old_run(tmp_path):
    runs = str(tmp_path)
    train(apply_overrides(RunConfig(), {**TINY, "runs_dir": runs, "name": "keep"}), log=lambda m: None, progress=False)
    bad = apply_overrides(RunConfig(), {**TINY, "runs_dir": runs, "name": "keep", "beta_schedule": "cosinus"})
    with pytest.raises(ConfigError, match="unknown beta schedule"):
        train(bad, overwrite=True, log=lambda m: None, progress=False)
    assert read_checkpoint(tmp_path / "keep").step == 4
    with pytest.raises(ConfigError):
        train(apply_overrides(bad, {"name": ""}), log=lambda m: None, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]  # no empty run directory left behind


def test_resume_only_from_the_latest_checkpoint_and_memory_settings_may_change(tmp_path):
    run = train(apply_overrides(RunConfig(), {**TINY, "runs_dir": str(tmp_path), "name": "r", "keep_last": "5"}),
                log=lambda m: None, progress=False).run_dir
    older = run / "checkpoints" / "step_00000002"
    with pytest.raises(CheckpointError, match="is not the run's latest checkpoint \\(step_00000004\\)"):
        train(apply_overrides(read_checkpoint(older).config, {"max_steps": "6"}), resume=older, log=lambda m: None,
              progress=False)
    config = apply_overrides(read_checkpoint(run).config, {"max_steps": "6", "grad_checkpoint": "true", "attn_impl": "math"})
    assert train(config, resume=run, log=lambda m: None, progress=False).step == 6
    assert read_checkpoint(run).config.model.attn_impl == "math"
    bad = apply_overrides(read_checkpoint(run).config, {"max_steps": "8", "attn_impl": "flash"})
    with pytest.raises(ConfigError, match="unknown attention implementation 'flash'; choose one of auto, sdpa, math"):
        train(bad, resume=run, log=lambda m: None, progress=False)
    assert read_checkpoint(run).step == 6


def test_folder_paths_are_stored_absolute(tmp_path, monkeypatch):
    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(8):
        Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(images / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    config = apply_overrides(RunConfig(), {**TINY, "runs_dir": "runs", "name": "f", "dataset": "folder:imgs",
                                           "image_size": "8", "max_steps": "1"})
    run = train(config, log=lambda m: None, progress=False).run_dir
    assert read_checkpoint(run).config.data.dataset == f"folder:{images}"
