import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from ddpm import viz
from ddpm.diffusion import q_sample
from ddpm.errors import ConfigError
from ddpm.schedules import get_schedule


def constant_images(colours, h, w):
    """[B, C, H, W] images, image i filled with colours[i] (a tuple of C floats in [0, 1])."""
    return torch.stack([torch.tensor(c, dtype=torch.float32)[:, None, None].expand(len(c), h, w) for c in colours])


def u8(v):
    return int(round(v * 255))


# ---- make_grid -----------------------------------------------------------------------------


def test_make_grid_rgb_layout_is_exact():
    colours = [(1.0, 0.0, 0.2), (0.0, 1.0, 0.4), (0.6, 0.8, 0.0)]
    grid = viz.make_grid(constant_images(colours, 2, 3), nrow=2, padding=1, pad_value=0.5)
    # 2 rows x 2 columns of 2x3 cells with 1 px of padding between and around them
    assert grid.shape == (2 * (2 + 1) + 1, 2 * (3 + 1) + 1, 3)
    assert grid.dtype == np.uint8
    expected = np.full(grid.shape, u8(0.5), np.uint8)
    for i, c in enumerate(colours):
        top, left = 1 + (i // 2) * 3, 1 + (i % 2) * 4
        expected[top : top + 2, left : left + 3] = [u8(v) for v in c]
    np.testing.assert_array_equal(grid, expected)
    assert tuple(grid[4, 5]) == (128, 128, 128)  # the unused fourth cell is padding colour


def test_make_grid_grayscale_scale_and_default_nrow():
    img = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # [1, 2, 2]: a checkerboard
    batch = torch.stack([img, 1 - img, img, img, 1 - img])  # B = 5 -> ceil(sqrt 5) = 3 per row
    grid = viz.make_grid(batch, padding=2, pad_value=0.0, scale=3)
    assert grid.shape == (2 * (6 + 2) + 2, 3 * (6 + 2) + 2)  # grayscale stays 2-D
    block = np.kron(np.array([[0, 255], [255, 0]], np.uint8), np.ones((3, 3), np.uint8))
    np.testing.assert_array_equal(grid[2:8, 2:8], block)  # nearest-neighbour enlargement
    np.testing.assert_array_equal(grid[2:8, 10:16], 255 - block)
    np.testing.assert_array_equal(grid[10:16, 10:16], 255 - block)  # image 4: row 1, column 1
    assert (grid[10:16, 18:24] == 0).all()  # unused sixth cell
    assert (grid[:2] == 0).all() and (grid[8:10] == 0).all()


def test_make_grid_clamps_and_limits_nrow_to_batch():
    imgs = torch.tensor([-0.5, 0.5, 1.5]).reshape(3, 1, 1, 1)
    grid = viz.make_grid(imgs, nrow=10, padding=0)
    np.testing.assert_array_equal(grid, [[0, 128, 255]])  # one row of 3, not 10 columns


@pytest.mark.parametrize(
    "shape, kwargs, message",
    [
        ((2, 2, 4, 4), {}, "make_grid needs images of shape [B, 1 or 3, H, W] with B >= 1; got [2, 2, 4, 4]"),
        ((2, 3, 4, 4), {"scale": 0}, "scale must be a positive integer; got 0"),
        ((2, 3, 4, 4), {"nrow": 0}, "nrow must be a positive integer; got 0"),
    ],
)
def test_make_grid_rejects_bad_input(shape, kwargs, message):
    with pytest.raises(ConfigError) as err:
        viz.make_grid(torch.zeros(shape), **kwargs)
    assert str(err.value) == message


# ---- saving --------------------------------------------------------------------------------


def test_save_grid_writes_png_atomically_with_auto_scale(tmp_path):
    images = torch.rand(4, 1, 8, 8)
    path = viz.save_grid(images, tmp_path / "sub" / "grid.png", nrow=2)
    assert path == tmp_path / "sub" / "grid.png"
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (2 * (64 + 2) + 2,) * 2  # 8 px -> scale 8 -> 64 px cells
        pixels = np.asarray(im)
    np.testing.assert_array_equal(pixels, viz.make_grid(images, nrow=2, scale=8))
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temp file left behind


def test_failed_save_leaves_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = viz.save_grid(torch.zeros(1, 3, 4, 4), tmp_path / "g.png", scale=1)
    before = path.read_bytes()

    def broken_save(self, fp, *args, **kwargs):  # writes half a PNG, then fails
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        viz.save_grid(torch.ones(1, 3, 4, 4), path, scale=1)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]


def test_save_image_and_unknown_suffix(tmp_path):
    image = constant_images([(0.0, 0.4, 1.0)], 4, 5)[0]
    path = viz.save_image(image, tmp_path / "one.png", scale=2)
    with Image.open(path) as im:
        assert im.size == (10, 8) and im.mode == "RGB"
        assert im.getpixel((9, 7)) == (0, 102, 255)
    with pytest.raises(ConfigError) as err:
        viz.save_image(image, tmp_path / "one.tiff")
    name = repr(str(tmp_path / "one.tiff"))
    assert str(err.value) == f"cannot tell the format of {name}; use a name ending in .png, .jpg, .jpeg, .webp"


# ---- animations ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_save_animation_frame_count_size_and_durations(tmp_path, suffix):
    frames = [np.full((20, 30, 3), 40 * k, np.uint8) for k in range(5)]
    frames[1] = frames[1][:, :, 0]  # grayscale frames are accepted too
    frames.append(torch.full((3, 20, 30), 0.9))  # and [C, H, W] tensors in [0, 1]
    path = viz.save_animation(frames, tmp_path / f"a{suffix}", duration_ms=50, last_frame_ms=500)
    with Image.open(path) as im:
        assert im.format == suffix[1:].upper()
        assert im.n_frames == 6 and im.size == (30, 20)
        durations = []
        for frame in ImageSequence.Iterator(im):
            frame.load()  # WebP fills in the duration when the frame is decoded
            durations.append(frame.info["duration"])
    assert durations == [50] * 5 + [500]
    assert [p.name for p in tmp_path.iterdir()] == [f"a{suffix}"]


def test_save_animation_errors(tmp_path):
    with pytest.raises(ConfigError) as err:
        viz.save_animation([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)], tmp_path / "a.gif")
    assert str(err.value) == "all frames must have the same size; got [(4, 4), (5, 4)]"
    with pytest.raises(ConfigError, match="use a name ending in .gif, .webp"):
        viz.save_animation([np.zeros((4, 4, 3), np.uint8)], tmp_path / "a.png")
    with pytest.raises(ConfigError, match="at least one frame"):
        viz.save_animation([], tmp_path / "a.gif")


# ---- diffusion views -----------------------------------------------------------------------


def test_forward_process_strip_layout_and_noise_level():
    s = get_schedule("linear", 1000)
    x0 = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ts = [0, 100, 500, 999]
    strip = viz.forward_process_strip(x0, s, ts, generator=torch.Generator().manual_seed(1), clamp=False)
    assert strip.shape == (8 * 4, 3, 16, 16)
    xt = (strip * 2 - 1).reshape(8, 4, 3, 16, 16)  # back to [-1, 1], [B, K, ...]
    assert (xt[:, 0] - x0).abs().max() < 0.05  # t = 0: sqrt(1 - alpha_bar_0) = 0.01
    last = xt[:, 3]  # alpha_bar_999 = 4e-5: essentially pure noise
    assert abs(last.mean().item()) < 0.03 and abs(last.std().item() - 1) < 0.03
    # one noise draw per row: eps recovered from every column is the same tensor
    ab = s.alphas_cumprod
    eps = torch.stack([(xt[:, k] - ab[t].sqrt() * x0) / (1 - ab[t]).sqrt() for k, t in enumerate(ts)], 1)
    for k in range(1, 4):
        torch.testing.assert_close(eps[:, k], eps[:, 0], atol=2e-4, rtol=0)
    assert not torch.allclose(eps[0, 0], eps[1, 0])  # but a different draw for each image
    # and it is eq. 4 with the generator's first draw; the default clamps that to [0, 1]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(xt[:, 2], q_sample(s, x0, torch.full((8,), 500), noise).float(), atol=1e-6, rtol=0)
    clamped = viz.forward_process_strip(x0, s, ts, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(clamped, strip.clamp(0, 1))
    message = r"timesteps must be a non-empty list of integers in \[0, 999\]; got \[0, 1000\]"
    with pytest.raises(ConfigError, match=message):
        viz.forward_process_strip(x0, s, [0, 1000])


def make_history(steps, b=3, c=1, h=8, w=8):
    """Step k: x_t filled with -1 + k / steps, pred_x0 filled with 1 - k / steps (both in [-1, 1])."""
    shape = (b, c, h, w)
    return [(k, torch.full(shape, -1 + k / steps), torch.full(shape, 1 - k / steps)) for k in range(steps)]


def test_denoising_frames_are_equal_sized_grids_with_a_label_strip():
    history = make_history(7)
    history[2][1][1] = 1.0  # sample 1 differs at step 2
    frames = viz.denoising_frames(history)
    assert len(frames) == 7
    grid_side = 2 * (64 + 2) + 2  # 3 samples -> 2 per row; 8 px -> scale 8
    assert {f.shape for f in frames} == {(18 + grid_side, 2 * grid_side + 8, 3)}
    for (i, x, p), f in zip(history, frames):
        left = viz.make_grid((x + 1) / 2, scale=8)
        right = viz.make_grid((p + 1) / 2, scale=8)
        np.testing.assert_array_equal(f[18:, :grid_side, 0], left)
        np.testing.assert_array_equal(f[18:, grid_side + 8 :, 0], right)
        assert (f[:18] < 128).any()  # the label is drawn in the strip
    assert not np.array_equal(frames[0][:18], frames[1][:18])  # "step 1/7" vs "step 2/7"
    only_xt = viz.denoising_frames(history, show_x0=False, scale=2, nrow=3)
    assert only_xt[0].shape == (18 + 16 + 4, 3 * 18 + 2, 3)


def test_denoising_grid_picks_evenly_spaced_steps_with_first_and_last():
    history = make_history(10, b=2)
    grid = viz.denoising_grid(history, num_columns=4)
    assert grid.shape == (2 * 4, 1, 8, 8)
    picked = [0, 3, 6, 9]
    for b in range(2):
        for j, k in enumerate(picked):
            assert torch.allclose(grid[b * 4 + j], torch.full((1, 8, 8), k / 20))  # ((-1 + k/10) + 1) / 2
    x0_grid = viz.denoising_grid(history, num_columns=2, show="pred_x0")
    assert torch.allclose(x0_grid[1], torch.full((1, 8, 8), 1 - 9 / 20))
    assert viz.denoising_grid(make_history(3), num_columns=5).shape == (3 * 5, 1, 8, 8)  # shape kept
    with pytest.raises(ConfigError, match="the sampling history is empty"):
        viz.denoising_grid([])


def test_slerp_endpoints_norm_and_parallel_fallback():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    out = viz.slerp(a, b, [0.0, 0.3, 1.0])
    assert out.shape == (3, 2, 3, 4, 4)
    assert torch.equal(out[0], a) and torch.equal(out[2], b)
    # orthogonal, equal norms: the midpoint is (a + b) / sqrt(2) and keeps the norm (lerp gives 1/sqrt(2) of it)
    e1, e2 = torch.zeros(64), torch.zeros(64)
    e1[3], e2[10] = 5.0, 5.0
    mid = viz.slerp(e1, e2, torch.tensor([0.5]))[0]
    torch.testing.assert_close(mid, (e1 + e2) / math.sqrt(2))
    assert mid.norm().item() == pytest.approx(5.0, rel=1e-6)
    quarter = viz.slerp(e1, e2, [0.25])[0]  # a quarter of the 90 degree arc
    assert quarter[3].item() == pytest.approx(5 * math.cos(math.pi / 8))
    assert quarter[10].item() == pytest.approx(5 * math.sin(math.pi / 8))
    # parallel or opposite: lerp
    w = torch.tensor([0.0, 0.25, 1.0])
    for other in (2 * a, -a):
        expected = (1 - w).reshape(-1, 1, 1, 1, 1) * a + w.reshape(-1, 1, 1, 1, 1) * other
        torch.testing.assert_close(viz.slerp(a, other, w), expected)
    with pytest.raises(ConfigError) as err:
        viz.slerp(a, b[:1], [0.5])
    assert str(err.value) == "slerp needs two tensors of the same shape; got [2, 3, 4, 4] and [1, 3, 4, 4]"


def test_inpainting_frames_show_the_known_region_the_models_region_and_x0():
    keep = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    keep[..., :4, :] = True
    history = [(i, torch.full((2, 1, 8, 8), 1.0), torch.full((2, 1, 8, 8), -1.0)) for i in range(3)]
    frames = viz.inpainting_frames(history, keep, ["a", "b", "c"], nrow=2, scale=1)
    cell = 2 * (8 + 2) + 2  # two images of 8 px per panel, 2 px padding
    assert len(frames) == 3 and {f.shape for f in frames} == {(36 + 10 + 2, 3 * cell + 16, 3)}
    known, model, x0 = (frames[0][36:, k * (cell + 8) : k * (cell + 8) + cell, 0] for k in range(3))
    assert (known[2:6, 2:10] == 255).all() and (known[6:10, 2:10] == 128).all()  # the bottom half is grey
    assert (model[2:6, 2:10] == 128).all() and (model[6:10, 2:10] == 255).all()
    assert (x0[2:10, 2:10] == 0).all()
    assert (frames[0][:36] < 128).any()  # the labels are drawn
    with pytest.raises(ConfigError, match="one label per recorded step; got 2 for 3"):
        viz.inpainting_frames(history, keep, ["a", "b"])
