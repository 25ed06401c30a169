"""`ddpm inpaint` and `ddpm img2img` (ddpm.editing) as a user meets them: files, records, seeds, errors."""

import json

import numpy as np
import pytest
from PIL import Image

from ddpm.cli import main
from ddpm.config import RunConfig, apply_overrides
from ddpm.editing import box_mask, read_image
from ddpm.runs.records import describe, read_record
from ddpm.sampling.inpaint import model_evaluations
from ddpm.training.loop import train

TINY = {"dataset": "digits", "dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8", "timesteps": "20", "batch_size": "8",
        "sample_every": "0", "save_every": "0", "num_samples": "4", "sampler": "ddim", "steps": "4", "tensorboard": "false",
        "max_steps": "2"}
CELL = 8 * 8 + 2  # 8x8 digits are drawn 8x in grids, with 2 px padding


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return train(apply_overrides(RunConfig(), {**TINY, "runs_dir": str(root), "name": "e"}), log=lambda m: None,
                 progress=False).run_dir


@pytest.fixture()
def pictures(tmp_path):
    """A 10x12 RGB image (another size and mode than the run's 8x8 grayscale) and masks of its size."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    bottom = np.zeros((12, 10), np.uint8)
    bottom[6:] = 255
    Image.fromarray(bottom).save(tmp_path / "bottom.png")
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(tmp_path / "black.png")
    Image.fromarray(np.full((12, 10), 255, np.uint8)).save(tmp_path / "white.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "fake.png").write_bytes(b"not an image")
    return tmp_path


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im)


def test_inpaint_writes_results_input_mask_grid_and_record(run, pictures, tmp_path, capsys):
    args = ["inpaint", "--run", str(run), "--image", str(pictures / "in.png"), "--mask", str(pictures / "bottom.png"),
            "--n", "3", "--batch-size", "2", "--steps", "6", "--jump-length", "2", "--jump-n-sample", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "image " + str(pictures / "in.png") + " is 10x12 RGB: resized to 8x8 (short side, center crop) and converted to grayscale to fit the run" in out
    assert f"RePaint with ancestral, 6 steps on the uniform grid, jump length 2, 2 resamplings ({model_evaluations(6, 2, 2)} model evaluations per image)" in out
    a = tmp_path / "a"
    assert sorted(p.name for p in a.iterdir()) == ["00000.png", "00001.png", "00002.png", "grid.png", "input.png", "mask.png",
                                                   "sample.json"]
    with Image.open(a / "grid.png") as im:
        assert im.size == (5 * CELL + 2, CELL + 2)  # input, mask and three results in a row
    given, mask = _pixels(a / "input.png"), _pixels(a / "mask.png")
    keep = mask == 0
    assert keep[:3].all() and not keep[5:].any()  # the mask's white bottom half, fitted to 8x8
    results = [_pixels(a / f"0000{i}.png") for i in range(3)]
    for result in results:
        assert np.array_equal(result[keep], given[keep])  # kept pixels exactly as given
    assert not np.array_equal(results[0], results[1])
    record = json.loads((a / "sample.json").read_text())
    assert record["edit"] == {"kind": "inpaint", "image": str(pictures / "in.png"), "mask": str(pictures / "bottom.png"),
                              "box": None, "jump_length": 2, "jump_n_sample": 2, "model_evaluations": 10}
    assert record["sampler"] == "ancestral" and record["steps"] == 6 and record["grid"] == "uniform"
    assert record["num_images"] == 3 and record["seed"] == 0 and record["batch_size"] == 2
    assert read_record(a / "00001.png") == record and read_record(a) == record
    # the same seed (and batch size) gives the same images; another seed other ones
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for name in ("00000.png", "00002.png", "grid.png", "sample.json"):
        assert (a / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert main([*args, "--out", str(tmp_path / "c"), "--seed", "1"]) == 0
    assert (tmp_path / "c" / "00000.png").read_bytes() != (a / "00000.png").read_bytes()
    # a box in the run's pixels instead of a mask
    assert main(["inpaint", "--run", str(run), "--image", str(pictures / "in.png"), "--box", "2,2,6,6", "--n", "1",
                 "--steps", "4", "--jump-n-sample", "1", "--out", str(tmp_path / "d")]) == 0
    keep = _pixels(tmp_path / "d" / "mask.png") == 0
    assert keep.sum() == 64 - 16 and not keep[2:6, 2:6].any()
    assert json.loads((tmp_path / "d" / "sample.json").read_text())["edit"]["box"] == "2,2,6,6"


def test_edits_of_a_class_conditional_run_guide_as_the_run_does_unless_told(pictures, tmp_path):
    # without --guidance-scale, an edit towards a class uses the run's own guidance (here 3, as
    # the default run's auto is 2); with no class there is nothing to guide towards: w = 1
    cond = train(apply_overrides(RunConfig(), {**TINY, "runs_dir": str(tmp_path), "name": "c", "class_conditional": "true",
                                               "guidance_scale": "3"}), log=lambda m: None, progress=False).run_dir
    base = ["--run", str(cond), "--image", str(pictures / "in.png"), "--n", "1"]
    edits = {"inpaint": ["inpaint", *base, "--box", "2,2,6,6", "--steps", "4", "--jump-n-sample", "1"],
             "img2img": ["img2img", *base, "--strength", "0.5", "--sampler", "ddim", "--steps", "2"]}
    for kind, args in edits.items():
        for extra, want in ((["--class", "3"], 3.0), (["--class", "3", "--guidance-scale", "1.5"], 1.5), ([], 1.0)):
            out = tmp_path / f"{kind}-{len(extra)}"
            assert main([*args, *extra, "--out", str(out)]) == 0, (kind, extra)
            assert json.loads((out / "sample.json").read_text())["guidance_scale"] == want, (kind, extra)


def test_img2img_writes_results_input_grid_and_record(run, pictures, tmp_path, capsys):
    args = ["img2img", "--run", str(run), "--image", str(pictures / "in.png"), "--strength", "0.5", "--n", "2",
            "--sampler", "ddim", "--steps", "3"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "SDEdit at strength 0.5 (from t = 10) with ddim, 3 steps on the quadratic grid" in out
    a = tmp_path / "a"
    assert sorted(p.name for p in a.iterdir()) == ["00000.png", "00001.png", "grid.png", "input.png", "sample.json"]
    with Image.open(a / "grid.png") as im:
        assert im.size == (3 * CELL + 2, CELL + 2)
    record = read_record(a / "00000.png")
    assert record["edit"] == {"kind": "img2img", "image": str(pictures / "in.png"), "strength": 0.5, "t_start": 10}
    assert record["sampler"] == "ddim" and record["steps"] == 3 and describe(record).startswith("SDEdit at strength 0.5")
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert (a / "00001.png").read_bytes() == (tmp_path / "b" / "00001.png").read_bytes()
    # steps 0: the sampler's own, at most the timesteps below the start (T = 20: t = 11 at 0.6)
    assert main(["img2img", "--run", str(run), "--image", str(pictures / "in.png"), "--n", "1", "--sampler", "ancestral",
                 "--steps", "0", "--out", str(tmp_path / "c")]) == 0
    assert read_record(tmp_path / "c")["steps"] == 11 + 1


@pytest.mark.parametrize("command, extra, message", [
    ("inpaint", ["--mask", "black.png"], "mask {d}/black.png is black everywhere, so there is nothing to generate; paint the region to fill white"),
    ("inpaint", ["--mask", "white.png"], "mask {d}/white.png is white everywhere, so no pixel is kept; use ddpm sample"),
    ("inpaint", ["--box", "0,0,8,8"], "--box 0,0,8,8 covers the whole image, so no pixel is kept"),
    ("inpaint", ["--box", "0,0,9,8"], "--box 0,0,9,8 is not a rectangle inside the 8x8 image; give 0 <= x0 < x1 <= 8"),
    ("inpaint", ["--box", "1,2,3"], "--box must be four integers x0,y0,x1,y1; got '1,2,3'"),
    ("inpaint", ["--mask", "small.png"], "mask {d}/small.png is 5x5 but the image is 10x12; give a mask of the image's size"),
    ("inpaint", ["--mask", "bottom.png", "--jump-length", "300", "--steps", "250"], "jump_length 300 leaves no room"),
    ("inpaint", ["--mask", "bottom.png", "--steps", "25"], "steps must be an integer from 1 to the 20 training timesteps"),
    ("inpaint", ["--mask", "bottom.png", "--class", "3"], "--class needs a class-conditional model"),
    ("inpaint", ["--mask", "bottom.png", "--prompt", "a seven"], "--prompt needs a text-conditional run"),
    ("inpaint", ["--mask", "bottom.png", "--guidance-scale", "2"], "--guidance-scale needs --class N on a class-conditional run or --prompt TEXT"),
    ("img2img", ["--prompt", "a seven"], "--prompt needs a text-conditional run"),
    ("inpaint", ["--mask", "bottom.png", "--image", "fake.png"], "cannot read image {d}/fake.png as a PNG, JPEG, WebP, BMP or GIF image"),
    ("inpaint", ["--mask", "bottom.png", "--image", "missing.png"], "image {d}/missing.png does not exist"),
    ("img2img", ["--strength", "0"], "--strength must lie in (0, 1] (1: plain sampling); got 0.0"),
    ("img2img", ["--strength", "0.5", "--steps", "15"], "steps must be an integer from 1 to the 11 integer timesteps up to t_start=10"),
    ("img2img", ["--sampler", "euler"], "unknown sampler 'euler'"),
])
def test_bad_edits_are_one_sentence_before_any_output(run, pictures, tmp_path, capsys, command, extra, message):
    image = ["--image", str(pictures / "in.png")] if "--image" not in extra else []
    extra = [str(pictures / v) if v.endswith(".png") else v for v in extra]
    out = tmp_path / "never"
    assert main([command, "--run", str(run), *image, *extra, "--n", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddpm: error: ") and message.format(d=pictures) in err and err.count("\n") == 1
    assert not out.exists()


def test_inpaint_needs_a_region_and_every_option_has_help(run, pictures, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["inpaint", "--run", str(run), "--image", str(pictures / "in.png")])
    assert stop.value.code == 2 and "one of the arguments --mask --box is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["inpaint", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 250, or T if smaller)" in text and "1: plain replacement, no resampling (the paper: 10) (default: 10)" in text
    assert "--box X0,Y0,X1,Y1 the rectangle to generate instead" in text


def test_image_and_box_helpers(pictures):
    logged = []
    image = read_image(pictures / "in.png", (8, 8), 3, log=logged.append)
    assert image.shape == (1, 3, 8, 8) and 0 <= image.min() and image.max() <= 1
    assert logged == [f"image {pictures / 'in.png'} is 10x12 RGB: resized to 8x8 (short side, center crop) to fit the run"]
    keep = box_mask("0,4,8,8", (8, 8))
    assert keep.shape == (1, 1, 8, 8) and keep[..., :4, :].all() and not keep[..., 4:, :].any()
