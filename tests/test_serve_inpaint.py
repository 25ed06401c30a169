"""ddpm serve's inpainting API (RePaint, as ``ddpm inpaint``): the completions and every bad request."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from serve_helpers import decode_png, error_of, need_server_packages, parse_sse, train_runs

need_server_packages()
from starlette.testclient import TestClient  # noqa: E402

from ddpm.serve import LOCAL_NAMES  # noqa: E402
from ddpm.serve.app import build_app  # noqa: E402
from ddpm.serve.catalog import Catalog  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def client(runs):
    app = build_app(Catalog(runs, device="cpu", log=lambda m: None), frame_interval=0.0, max_images=32,
                    allowed_hosts=LOCAL_NAMES)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def _train_png(client, run, index, path):
    item = client.get(f"/api/runs/{run}/train-images?start={index}&count=1").json()["images"][0]
    Image.fromarray(decode_png(item["png"])).save(path)
    return path


def _mask_url(keep_bottom_rows, size=8):
    """A PNG data URL, white (generate) on the bottom ``keep_bottom_rows`` rows."""
    mask = np.zeros((size, size), np.uint8)
    mask[size - keep_bottom_rows:] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def test_inpaint_equals_ddpm_inpaint(client, runs, tmp_path):
    from ddpm.editing import inpaint_to_directory

    settings = {"steps": 6, "jump_length": 2, "jump_n_sample": 2, "seed": 4, "n": 3}
    events = client.post("/api/runs/cc/inpaint", json={"image": "train:5", "box": [0, 4, 8, 8], **settings,
                                                       "class": 3, "guidance_scale": 2.0})
    events = parse_sse(events.text)
    steps = [d for e, d in events if e == "step"]
    start, (kind, done) = events[1][1], events[-1]
    assert kind == "done" and start["total"] == 6 + 2 * 2 and steps[-1]["done"] == start["total"]
    assert done["labels"] == [3, 3, 3] and done["sampler"] == "repaint"
    picture = _train_png(client, "cc", 5, tmp_path / "in.png")
    out = inpaint_to_directory(runs / "cc", picture, box="0,4,8,8", out=tmp_path / "cli", num=3, seed=4, steps=6,
                               jump_length=2, jump_n_sample=2, classes=[3], guidance_scale=2.0, device="cpu",
                               log=lambda m: None)
    original = np.asarray(Image.open(picture))
    for i, url in enumerate(done["images"]):
        got = decode_png(url)
        with Image.open(sorted(out.glob("0000*.png"))[i]) as im:
            assert np.array_equal(got, np.asarray(im))  # the same settings and seed: ddpm inpaint's images
        assert np.array_equal(got[:4], original[:4])  # the kept top half, exactly
    assert not np.array_equal(decode_png(done["images"][0])[4:], original[4:])
    # a mask drawn as a PNG (white = generate) is the same region as the box
    painted = parse_sse(client.post("/api/runs/cc/inpaint", json={"image": "train:5", "mask": _mask_url(4), **settings,
                                                                  "class": 3, "guidance_scale": 2.0}).text)[-1][1]
    assert painted["images"] == done["images"]


@pytest.mark.parametrize("body, status, message", [
    ({"image": "train:0"}, 400, "give the region to generate as mask (a PNG data URL) or as box"),
    ({"image": "train:0", "box": [0, 4, 8, 8], "mask": "data:image/png;base64,"}, 400, "(one of them)"),
    ({"box": [0, 0, 8, 8]}, 400, "--box 0,0,8,8 covers the whole image, so no pixel is kept"),
    ({"box": [0, 4, 9, 8]}, 400, "is not a rectangle inside the 8x8 image"),
    ({"box": "0,4,8,8"}, 400, "box must be four integers [x0, y0, x1, y1]; got '0,4,8,8'"),
    ({"mask": "mask.png"}, 400, "mask must be a PNG image as a data URL"),
    ({"mask": "data:image/png;base64,AAAA"}, 400, "mask is not a readable PNG image"),
    ({"mask": "WRONG-SIZE"}, 400, "mask is 6x6 but the run's images are 8x8; draw the mask at the run's size"),
    ({"mask": "BLACK"}, 400, "the mask is black everywhere, so there is nothing to generate"),
    ({"box": [0, 4, 8, 8], "jump_length": 15, "steps": 10}, 400, "jump_length 15 leaves no room"),
    ({"box": [0, 4, 8, 8], "steps": 25}, 400, "steps must be an integer from 1 to 20"),
    ({"box": [0, 4, 8, 8], "guidance_scale": 2.0}, 400, "guidance_scale needs a class (class-conditional runs) or a prompt"),
    ({"box": [0, 4, 8, 8], "class": 10}, 400, "class must be an integer from 0 to 9"),
    ({"box": [0, 4, 8, 8], "prompt": "a seven"}, 400, "is not text-conditional, so it takes no prompt"),
    ({"box": [0, 4, 8, 8], "image": "train:99999"}, 400, "image 'train:99999' does not exist"),
    ({"box": [0, 4, 8, 8], "image": "upload:feedbeef"}, 404, "upload 'feedbeef' is not (or no longer) held"),
    ({"box": [0, 4, 8, 8], "sampler": "ddim"}, 400, "unknown parameter 'sampler'"),
])
def test_bad_inpaint_requests_are_one_sentence(client, body, status, message):
    body = dict(body)
    if body.get("mask") == "WRONG-SIZE":
        body["mask"] = _mask_url(3, size=6)
    if body.get("mask") == "BLACK":
        body["mask"] = _mask_url(0)
    assert message in error_of(client.post("/api/runs/cc/inpaint", json=body), status)
