"""`ddpm viz`: every picture is a decodable image of the expected size and frame count."""

import pytest
from PIL import Image

from ddpm.cli import main
from ddpm.config import apply_overrides, RunConfig
from ddpm.errors import ConfigError
from ddpm.pictures import forward_picture, interpolation_picture, reverse_picture, schedules_picture
from ddpm.training.loop import train

TINY = {"dataset": "digits", "dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8", "timesteps": "20", "batch_size": "8",
        "sample_every": "0", "save_every": "0", "num_samples": "4", "sampler": "ddim", "steps": "4", "tensorboard": "false",
        "max_steps": "2"}
CELL = 8 * 8 + 2  # 8x8 digits are scaled 8x in grids, with 2 px padding


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return train(apply_overrides(RunConfig(), {**TINY, "runs_dir": str(root), "name": "v"}), log=lambda m: None, progress=False).run_dir


def test_forward_strip(tmp_path):
    path = forward_picture(tmp_path / "f.png", num_images=3, columns=5, log=lambda m: None)
    with Image.open(path) as im:
        assert im.size == (5 * CELL + 2, 3 * CELL + 2)


def test_reverse_animation_and_still(run, tmp_path):
    anim, still = reverse_picture(run, tmp_path / "r.gif", still=tmp_path / "r.png", num_images=2, sampler="ddim", steps=6,
                                  columns=3)
    with Image.open(anim) as im:
        assert im.n_frames == 7  # one per step, then the sample itself
    with Image.open(still) as im:
        assert im.size == (3 * CELL + 2, 2 * CELL + 2)
    webp, _ = reverse_picture(run, tmp_path / "r.webp", num_images=2, sampler="ddim", steps=4)
    with Image.open(webp) as im:
        assert im.n_frames == 5
    with pytest.raises(ConfigError, match="ending in .gif or .webp"):
        reverse_picture(run, tmp_path / "r.png")


def test_interpolation_grid(run, tmp_path):
    path = interpolation_picture(run, tmp_path / "i.png", rows=2, columns=5, steps=4)
    with Image.open(path) as im:
        assert im.size == (5 * CELL + 2, 2 * CELL + 2)


def test_schedules_side_by_side(tmp_path):
    path = schedules_picture(tmp_path / "s.png", timesteps=100)
    with Image.open(path) as im:
        assert im.size == (1280, 400)
    with pytest.raises(ConfigError, match="ending in .png"):
        schedules_picture(tmp_path / "s.gif")


def test_viz_command(run, tmp_path, capsys):
    assert main(["viz", "schedules", "--out", str(tmp_path / "a.png"), "--timesteps", "50"]) == 0
    assert main(["viz", "forward", "--out", str(tmp_path / "b.png"), "--n", "2", "--columns", "4"]) == 0
    assert main(["viz", "reverse", "--run", str(run), "--out", str(tmp_path / "c.gif"), "--n", "2", "--steps", "3",
                 "--sampler", "ddim"]) == 0
    assert main(["viz", "interpolate", "--run", str(run), "--out", str(tmp_path / "d.png"), "--n", "1", "--columns", "3",
                 "--steps", "2"]) == 0
    # the command passes its options through: sizes and frame counts as asked
    expected = {"a.png": ((1280, 400), 1), "b.png": ((4 * CELL + 2, 2 * CELL + 2), 1), "c.gif": (None, 4),
                "d.png": ((3 * CELL + 2, CELL + 2), 1)}
    for name, (size, frames) in expected.items():
        with Image.open(tmp_path / name) as im:
            assert getattr(im, "n_frames", 1) == frames, name
            if size is not None:
                assert im.size == size, name
    out = capsys.readouterr().out
    assert all(f"wrote {tmp_path / name}" in out for name in expected)
    assert main(["viz", "reverse"]) == 2
    assert "needs --run RUN" in capsys.readouterr().err


def test_the_last_frame_is_the_sample(run, tmp_path):
    import numpy as np

    from ddpm.runs.load import load_for_sampling

    anim, still = reverse_picture(run, tmp_path / "a.gif", still=tmp_path / "a.png", num_images=1, sampler="ddim",
                                  steps=3, columns=4)
    diffusion, _ = load_for_sampling(run)
    import torch

    from ddpm.training.batches import derived_seed

    sample = diffusion.sample(1, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(derived_seed(0, 3)))
    with Image.open(still) as im:
        last = np.asarray(im.convert("L"))[2:66, 2 + 3 * 66 : 2 + 3 * 66 + 64]  # the last column's cell
    expected = np.round(sample[0, 0].numpy() * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    assert np.abs(last.astype(int) - expected.astype(int)).max() <= 1


def test_zero_steps_is_the_samplers_default_and_is_said(run, tmp_path, capsys):
    ckpt = run / "checkpoints" / "step_00000002"
    assert main(["viz", "reverse", "--run", str(run), "--out", str(tmp_path / "r.gif"), "--n", "1", "--steps", "0",
                 "--sampler", "dpm++2m"]) == 0
    # dpm++2m's default is 20 steps, here all T = 20
    assert f"drawing 1 images from {ckpt} with dpm++2m, 20 steps on the tapered grid" in capsys.readouterr().out
    with Image.open(tmp_path / "r.gif") as im:
        assert im.n_frames == 21
    assert main(["viz", "reverse", "--run", str(run), "--out", str(tmp_path / "s.gif"), "--n", "1"]) == 0
    assert "with ddim, 4 steps on the quadratic grid" in capsys.readouterr().out  # the run's own settings
    lines = []
    interpolation_picture(run, tmp_path / "i.png", rows=1, columns=2, steps=0, log=lines.append)
    assert lines == [f"decoding 2 images from {ckpt} with ddim, 20 steps on the quadratic grid"]
    assert main(["viz", "reverse", "--run", str(run), "--out", str(tmp_path / "n.gif"), "--steps", "-1"]) == 2
    assert "--steps must be 0 (the sampler's default) or from 1 to the 20 training timesteps; got -1" in capsys.readouterr().err


def test_reverse_picture_of_a_text_run(tmp_path):
    tiny = {"dataset": "digits", "dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8", "timesteps": "20", "batch_size": "8",
            "sample_every": "0", "save_every": "0", "sampler": "ddim", "steps": "3", "tensorboard": "false", "max_steps": "1",
            "text_conditional": "true", "text_encoder": "builtin", "builtin_text_dim": "8", "builtin_text_layers": "0",
            "guidance_scale": "3", "num_samples": "2", "runs_dir": str(tmp_path), "name": "t"}
    run = train(apply_overrides(RunConfig(), tiny), log=lambda m: None, progress=False).run_dir
    # without a prompt: unconditional (the run's guidance has nothing to guide towards); with one: guided
    plain, _ = reverse_picture(run, tmp_path / "u.gif", num_images=2, device="cpu")
    guided, _ = reverse_picture(run, tmp_path / "p.gif", num_images=2, device="cpu", prompt="a handwritten seven")
    assert plain.is_file() and guided.is_file()
    with pytest.raises(ConfigError, match="--guidance-scale needs a --prompt on a text-conditional run"):
        reverse_picture(run, tmp_path / "x.gif", num_images=2, device="cpu", guidance_scale=2.0)


def test_inpaint_animation_and_still(run, tmp_path, capsys):
    from ddpm.pictures import inpaint_picture
    from ddpm.sampling.inpaint import model_evaluations

    anim, still = inpaint_picture(run, tmp_path / "p.gif", still=tmp_path / "p.png", num_images=3, steps=6, jump_length=2,
                                  jump_n_sample=2, columns=4, max_frames=5, log=lambda m: None)
    with Image.open(anim) as im:
        assert im.n_frames == 5 + 1  # five of the ten model steps, then the result
    assert model_evaluations(6, 2, 2) == 10
    with Image.open(still) as im:  # rows: images; columns: original, input, 4 predictions, result
        assert im.size == ((4 + 3) * CELL + 2, 3 * CELL + 2)
    assert main(["viz", "inpaint", "--run", str(run), "--out", str(tmp_path / "q.webp"), "--n", "2", "--steps", "4",
                 "--jump-length", "2", "--jump-n-sample", "1", "--box", "0,0,4,8"]) == 0
    with Image.open(tmp_path / "q.webp") as im:
        assert im.n_frames == 4 + 1
    assert f"wrote {tmp_path / 'q.webp'}" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="ending in .gif or .webp"):
        inpaint_picture(run, tmp_path / "p.png")
