"""ddpm.Trainer: lucidrains' README program runs with its import changed, its arguments land on
our config and the one training loop, and save/load/train continue a run exactly."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm import GaussianDiffusion, Trainer, Unet
from ddpm.errors import CheckpointError, ConfigError
from ddpm.runs.checkpoint import list_checkpoints, read_checkpoint

# lucidrains/denoising-diffusion-pytorch's README example as the issue quotes it, with small sizes:
# only the import line differs from the original.
README_PROGRAM = """
from ddpm import Unet, GaussianDiffusion, Trainer

model = Unet(
    dim = 8,
    dim_mults = (1, 2),
    flash_attn = True
)

diffusion = GaussianDiffusion(
    model,
    image_size = 8,
    timesteps = 20,           # number of steps
    sampling_timesteps = 4    # number of sampling timesteps (using ddim for faster inference [see citation for ddim paper])
)

trainer = Trainer(
    diffusion,
    'path/to/images',
    train_batch_size = 4,
    train_lr = 8e-5,
    train_num_steps = 4,              # total training steps
    gradient_accumulate_every = 2,    # gradient accumulation steps
    ema_decay = 0.995,                # exponential moving average decay
    amp = True,                       # turn on mixed precision
    results_folder = './results',
    save_and_sample_every = 2,
    num_samples = 25,
    augment_horizontal_flip = True,
    calculate_fid = False             # whether to calculate fid during training
)

trainer.train()
trainer.save(2)
trainer.load(2)
"""


def _images(folder, n=12):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")


def test_the_readme_program_runs_with_only_the_import_changed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "path" / "to" / "images")
    scope = {}
    exec(compile(README_PROGRAM, "readme.py", "exec"), scope)
    trainer, diffusion = scope["trainer"], scope["diffusion"]
    results = tmp_path / "results"
    assert trainer.step == 4 and trainer.results_folder == results
    assert [p.name for p in list_checkpoints(results)] == ["step_00000002", "step_00000004"]  # every milestone kept
    assert sorted(p.name for p in (results / "samples").iterdir()) == ["step_00000002.png", "step_00000004.png"]
    assert read_checkpoint(results / "model-2").step == 4  # save(2) holds the state when it was called
    config = read_checkpoint(results).config
    t, d, m, s = config.train, config.data, config.model, config.sample
    assert (t.batch_size, t.grad_accum, t.lr, t.max_steps, t.bf16, t.num_samples) == (4, 2, 8e-5, 4, True, 25)
    assert t.adam_betas == (0.9, 0.99) and t.grad_clip == 1.0 and math.isclose(t.ema_decay, 0.995 ** 0.1)
    assert d.dataset == f"folder:{tmp_path / 'path' / 'to' / 'images'}" and d.image_size == (8, 8) and d.hflip
    assert (m.dim, m.dim_mults, config.diffusion.timesteps) == (8, (1, 2), 20)
    assert (s.sampler, s.steps) == ("ddim", 4)
    # the user's objects hold the trained weights, as lucidrains' Trainer trains them in place
    ckpt = read_checkpoint(results)
    for name, tensor in ckpt.weights(ema=False).items():
        assert torch.equal(diffusion.model.state_dict()[name], tensor)
    for name, tensor in ckpt.weights(ema=True).items():
        assert torch.equal(trainer.ema.ema_model.model.state_dict()[name], tensor)
    assert trainer.ema.ema_model.sample(batch_size=2).shape == (2, 3, 8, 8)


def _trainer(folder, results, steps):
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(Unet(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8), image_size=8, timesteps=20,
                                  sampling_timesteps=2)
    return Trainer(diffusion, folder, train_batch_size=4, train_num_steps=steps, save_and_sample_every=2, num_samples=4,
                   results_folder=results, log=lambda m: None)


def test_load_then_train_continues_exactly_and_the_user_model_is_the_start(tmp_path):
    folder = tmp_path / "images"
    _images(folder)
    whole = _trainer(folder, tmp_path / "whole", 6)
    start = {k: v.clone() for k, v in whole.model.model.state_dict().items()}
    whole.train()
    first = _trainer(folder, tmp_path / "split", 4)
    first.train()
    again = _trainer(folder, tmp_path / "split", 6)  # a new program: load the last milestone, go on
    with pytest.raises(ConfigError, match="already holds a run at step 4; continue it with trainer.load"):
        again.train()
    again.load(2)
    assert again.step == 4
    again.train()
    a, b = read_checkpoint(tmp_path / "whole").weights(ema=True), read_checkpoint(tmp_path / "split").weights(ema=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    earlier = _trainer(folder, tmp_path / "split", 8)
    earlier.load(1)  # step 2, but the run has reached step 6
    with pytest.raises(CheckpointError, match="the loaded milestone is step 2 but the run in .* has reached step 6"):
        earlier.train()
    # the run started from the weights the user's Unet had (not the loop's own initialisation)
    # (one step at a vanishing learning rate: a run of 0 steps is refused)
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(Unet(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8), image_size=8, timesteps=20,
                                  sampling_timesteps=2)
    diffusion.model.load_state_dict({k: torch.zeros_like(v) for k, v in start.items()})
    fresh = Trainer(diffusion, folder, train_batch_size=4, train_num_steps=1, train_lr=1e-12, save_and_sample_every=2,
                    num_samples=4, results_folder=tmp_path / "fresh", log=lambda m: None)
    fresh.train()
    assert all(float(v.abs().max()) < 1e-9 for v in read_checkpoint(tmp_path / "fresh").weights(ema=False).values())
    assert any(float(v.abs().max()) > 1e-3 for v in start.values())  # the loop's own start would not be zero


def test_unsupported_arguments_are_refused_by_name(tmp_path):
    diffusion = GaussianDiffusion(Unet(dim=8, dim_mults=(1, 2)), image_size=8, timesteps=20)
    with pytest.raises(ConfigError, match=r"Trainer does not support calculate_fid=True \(FID during training; afterwards: "
                                          r"ddpm eval --run RESULTS_FOLDER --features inception\); save_best_and_latest_only"):
        Trainer(diffusion, tmp_path, calculate_fid=True, save_best_and_latest_only=True)
    with pytest.raises(ConfigError, match="convert_image_to='RGBA'"):
        Trainer(diffusion, tmp_path, convert_image_to="RGBA")
    with pytest.raises(ConfigError, match="convert_image_to='L' gives 1 channels but the model has 3"):
        Trainer(diffusion, tmp_path, convert_image_to="L")
    with pytest.raises(ConfigError, match="cannot train a Unet built with init_dim=16"):
        Trainer(GaussianDiffusion(Unet(dim=8, init_dim=16, dim_mults=(1, 2)), image_size=8), tmp_path)
    Trainer(diffusion, tmp_path, num_fid_samples=50000, inception_block_idx=768)  # unused without FID, as in lucidrains'
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "model-1.pt").write_bytes(b"lucidrains' file")
    with pytest.raises(ConfigError, match="already holds files"):
        Trainer(diffusion, tmp_path, results_folder=tmp_path / "results").train()
    with pytest.raises(CheckpointError, match="nothing to save before trainer.train"):
        Trainer(diffusion, tmp_path, results_folder=tmp_path / "other").save(1)
    with pytest.raises(CheckpointError, match="no milestone 3 in"):
        Trainer(diffusion, tmp_path, results_folder=tmp_path / "other").load(3)


def test_init_from_fine_tunes_a_run_on_a_new_folder(tmp_path):
    from ddpm.runs.init_from import read_init_record

    folder, photos = tmp_path / "images", tmp_path / "photos"
    _images(folder)
    _images(photos)
    source = _trainer(folder, tmp_path / "source", 2)
    source.train()
    src = read_checkpoint(tmp_path / "source")
    trainer = Trainer(folder=photos, init_from=tmp_path / "source", init_weights="raw", train_batch_size=4,
                      train_num_steps=2, save_and_sample_every=1, num_samples=4, results_folder=tmp_path / "ft",
                      log=lambda m: None)
    # the model to train is the source's network with its raw weights, and its settings are the source's
    assert all(torch.equal(trainer.model.model.state_dict()[k], v) for k, v in src.weights(ema=False).items())
    assert (trainer.config.model, trainer.config.diffusion, trainer.config.sample) == (
        src.config.model, src.config.diffusion, src.config.sample)
    trainer.train()
    ft = read_checkpoint(tmp_path / "ft")
    assert ft.step == 2 and ft.config.data.dataset == f"folder:{photos}" and ft.config.train.init_weights == "raw"
    assert all(torch.equal(trainer.model.model.state_dict()[k], v) for k, v in ft.weights(ema=False).items())
    record = read_init_record(tmp_path / "ft")
    assert (record["checkpoint"], record["weights"]) == (str(src.path), "raw")
    again = Trainer(folder=photos, init_from=tmp_path / "source", init_weights="raw", train_batch_size=4,
                    train_num_steps=3, save_and_sample_every=1, num_samples=4, results_folder=tmp_path / "ft",
                    log=lambda m: None)
    again.load(2)
    again.train()  # continues the fine-tune from its own checkpoint
    assert read_checkpoint(tmp_path / "ft").step == 3 and read_init_record(tmp_path / "ft") == record
    with pytest.raises(ConfigError, match=r"either a GaussianDiffusion to train or init_from=.*; give one, not both$"):
        Trainer(source.model, photos, init_from=tmp_path / "source")
    with pytest.raises(ConfigError, match=r"either a GaussianDiffusion to train or init_from=.*; give one$"):
        Trainer(folder=photos)
    with pytest.raises(ConfigError, match=r"^init_weights='raw' applies only with init_from="):
        Trainer(source.model, photos, init_weights="raw")
    with pytest.raises(ConfigError, match="convert_image_to='L' gives 1 channels but the model has 3"):
        Trainer(folder=photos, init_from=tmp_path / "source", convert_image_to="L")
