"""ddpm.load_run: a run directory or one checkpoint directory as its GaussianDiffusion."""

import pytest
import torch

import ddpm
from ddpm.config import RunConfig, apply_overrides
from ddpm.errors import CheckpointError
from ddpm.runs.build import build_unet
from ddpm.runs.checkpoint import save_checkpoint

TINY = {"dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8", "image_size": "8", "channels": "1",
        "class_conditional": "true", "num_classes": "3"}


def _run(tmp_path):
    """A run directory with checkpoints at steps 1 and 2; the newest one's EMA weights are returned."""
    config = apply_overrides(RunConfig(), TINY)
    torch.manual_seed(0)
    raw = build_unet(config).state_dict()
    for step in (1, 2):  # the EMA weights of step s are raw + s / 4
        ema = {k: v + step / 4 if v.is_floating_point() else v for k, v in raw.items()}
        save_checkpoint(tmp_path / "run", step, model_state=raw, ema_state=ema, train_state={"step": step}, config=config)
    return tmp_path / "run", raw, ema


def test_load_run_gives_the_runs_model_in_eval_mode_with_ema_weights(tmp_path):
    run, raw, ema = _run(tmp_path)
    diffusion = ddpm.load_run(run)
    assert isinstance(diffusion, ddpm.GaussianDiffusion)
    assert not diffusion.training and not diffusion.model.training
    assert diffusion.device == torch.device("cpu")
    assert diffusion.num_classes == 3 and diffusion.image_size == (8, 8) and diffusion.channels == 1
    assert diffusion.objective == "pred_v" and diffusion.beta_schedule == "cosine"  # the config's, not the facade's defaults
    for name, value in diffusion.model.state_dict().items():
        assert torch.equal(value, ema[name]), name
    raw_model = ddpm.load_run(run, ema=False).model.state_dict()
    assert all(torch.equal(v, raw[k]) for k, v in raw_model.items())
    images = diffusion.sample(2, sampler="ddim", steps=2, classes=[0, 2], generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 8, 8) and 0 <= float(images.min()) and float(images.max()) <= 1


def test_load_run_takes_a_checkpoint_directory(tmp_path):
    run, raw, _ = _run(tmp_path)
    first = ddpm.load_run(run / "checkpoints" / "step_00000001")
    assert all(torch.equal(v, raw[k] + 0.25 if v.is_floating_point() else raw[k]) for k, v in first.model.state_dict().items())


def test_load_run_of_something_that_is_not_a_run(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / "nothing")):
        ddpm.load_run(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError):
        ddpm.load_run(tmp_path / "empty")


def test_the_old_module_name_of_the_records_still_reads_them():
    import ddpm.records
    import ddpm.runs.records

    assert ddpm.records.read_record is ddpm.runs.records.read_record
    assert ddpm.records.sample_record is ddpm.runs.records.sample_record
