"""ddpm serve's JSON API through Starlette's TestClient: every endpoint and every bad input."""

import io
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from serve_helpers import TINY, decode_png, error_of, need_server_packages, parse_sse, train_runs

need_server_packages()
from starlette.testclient import TestClient  # noqa: E402

from ddpm.config import RunConfig, apply_overrides  # noqa: E402
from ddpm.data.folder import load_image  # noqa: E402
from ddpm.generate import sample_to_directory  # noqa: E402
from ddpm.sampling import SAMPLERS  # noqa: E402
from ddpm.schedules import get_schedule  # noqa: E402
from ddpm.serve import LOCAL_NAMES  # noqa: E402
from ddpm.serve.app import build_app  # noqa: E402
from ddpm.serve.catalog import Catalog  # noqa: E402
from ddpm.training.loop import train  # noqa: E402
from ddpm.viz import make_grid  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = train_runs(tmp_path_factory.mktemp("runs"))
    train(apply_overrides(RunConfig(), {**TINY, "timesteps": "20", "image_size": "12", "channels": "3",
                                        "runs_dir": str(root), "name": "rgb"}), log=lambda m: None, progress=False)
    (root / ".hidden").mkdir()
    (root / "empty").mkdir()  # no checkpoint yet: listed with its reason
    os.symlink(root / "plain", root / "linked")  # symbolic links are not followed
    return root


@pytest.fixture(scope="module")
def client(runs):
    app = build_app(Catalog(runs, device="cpu", log=lambda m: None), frame_interval=0.0, max_images=32,
                    max_upload_bytes=20_000, allowed_hosts=LOCAL_NAMES)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def generate(client, run, **body):
    response = client.post(f"/api/runs/{run}/generate", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_sse(response.text)


# ---- the page and the lists ---------------------------------------------------------------


def test_page_static_files_and_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and '<script type="module" src="/static/app.js">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]  # nothing from a CDN
    for name in ("app.js", "api.js", "generate.js", "forward.js", "inpaint.js", "picker.js", "pixels.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert "http://" not in page.text and "https://" not in page.text
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/nothing"):
        assert client.get(path).status_code == 404
    assert client.get("/api/info", headers={"host": "evil.example"}).status_code == 403  # DNS rebinding
    assert client.get("/api/info", headers={"host": "localhost:8000"}).status_code == 200
    assert error_of(client.put("/api/runs"), 405).startswith("PUT /api/runs: ")


def test_info_and_runs(client):
    info = client.get("/api/info").json()
    assert [s["name"] for s in info["samplers"]] == list(SAMPLERS)  # every sampler of the registry, in its order
    assert info["samplers"][1] == {"name": "ddim", "default_steps": 50, "default_grid": "quadratic"}
    assert info["limits"] == {"max_images": 32, "max_waiting": 4, "max_upload_bytes": 20_000}
    runs = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert sorted(runs) == ["cc", "empty", "plain", "rgb"]  # not .hidden, not the symbolic link
    assert runs["plain"] == {
        "name": "plain", "dataset": "digits", "image_size": [8, 8], "channels": 1, "step": 2,
        "conditioning": "none", "num_classes": None, "text": None, "timesteps": 1000, "beta_schedule": "linear",
        "objective": "pred_noise", "sample": {"sampler": "ddim", "steps": 4, "eta": 0.0, "guidance_scale": 1.0}}
    assert runs["cc"]["conditioning"] == "class" and runs["cc"]["num_classes"] == 10
    assert "holds no complete torch-ddpm checkpoint" in runs["empty"]["error"]


@pytest.mark.parametrize("name", ["nope", "linked", ".hidden", "..", "%2e%2e", "..%2fplain", "plain%2f..%2fcc"])
def test_runs_by_name_only(client, name):
    for path in ("schedule", "train-images", "forward"):
        response = client.get(f"/api/runs/{name}/{path}")
        assert response.status_code == 404, (name, path, response.text)
    assert client.post(f"/api/runs/{name}/generate", json={}).status_code == 404
    assert client.post(f"/api/runs/{name}/images", content=b"x").status_code == 404


def test_unknown_run_message(client, runs):
    assert error_of(client.get("/api/runs/nope/schedule"), 404) == (
        f"there is no run called 'nope' in {runs}; GET /api/runs lists the runs")


def test_unusable_run_answers_409(client):
    assert "holds no complete torch-ddpm checkpoint" in error_of(client.get("/api/runs/empty/schedule"), 409)


# ---- generate ----------------------------------------------------------------------------------


def test_generate_streams_frames_and_equals_ddpm_sample(client, runs, tmp_path):
    events = generate(client, "plain", sampler="ddim", steps=4, seed=3, n=5)
    names = [e for e, _ in events]
    assert names == ["queued", "start", "step", "step", "step", "step", "done"]
    start, steps, done = events[1][1], [d for e, d in events if e == "step"], events[-1][1]
    assert start["total"] == 4 and start["n"] == 5 and start["sampler"] == "ddim"
    assert [s["done"] for s in steps] == [1, 2, 3, 4] and all(s["total"] == 4 for s in steps)
    grid_shape = make_grid(torch.zeros(5, 1, 8, 8)).shape
    for s in steps:
        assert decode_png(s["x_t"]).shape == grid_shape and decode_png(s["x0"]).shape == grid_shape
    assert len(done["images"]) == 5 and done["labels"] is None and done["seed"] == 3
    out = sample_to_directory(runs / "plain", out=tmp_path / "cli", num=5, seed=3, sampler="ddim", steps=4,
                              device="cpu", log=lambda m: None)
    for i, url in enumerate(done["images"]):
        with Image.open(out / f"{i:05d}.png") as im:
            assert np.array_equal(decode_png(url), np.asarray(im))  # the same seed: the same images
    assert decode_png(done["grid"]).shape == grid_shape
    assert not np.array_equal(decode_png(generate(client, "plain", sampler="ddim", steps=4, seed=4, n=5)[-1][1]["images"][0]),
                              decode_png(done["images"][0]))


def test_generate_class_and_guidance_equal_ddpm_sample(client, runs, tmp_path):
    done = generate(client, "cc", sampler="dpm++2m", steps=3, seed=1, n=3, **{"class": 7}, guidance_scale=2.0)[-1][1]
    assert done["labels"] == [7, 7, 7]
    out = sample_to_directory(runs / "cc", out=tmp_path / "cli", num=3, seed=1, sampler="dpm++2m", steps=3,
                              classes=[7], guidance_scale=2.0, device="cpu", log=lambda m: None)
    for i, url in enumerate(done["images"]):
        with Image.open(out / f"{i:05d}_class7.png") as im:
            assert np.array_equal(decode_png(url), np.asarray(im))
    every = generate(client, "cc", n=3)[-1][1]  # no class: all classes in turn, the run's own sampler
    assert every["labels"] == [0, 1, 2] and every["sampler"] == "ddim" and every["steps"] == 4


def test_generate_over_several_batches(runs):
    app = build_app(Catalog(runs, device="cpu", log=lambda m: None), frame_interval=0.0, max_images=65)
    with TestClient(app) as client:
        events = generate(client, "cc", sampler="ddim", steps=2, n=65, seed=2)
    steps = [d for e, d in events if e == "step"]
    assert events[1][1]["total"] == 4 and events[1][1]["batches"] == 2  # 64 images, then 1, as ddpm sample draws them
    assert [(s["batch"], s["done"]) for s in steps] == [(0, 1), (0, 2), (1, 3), (1, 4)]
    assert decode_png(steps[-1]["x_t"]).shape == (8, 8)  # the last batch holds one image
    assert len(events[-1][1]["images"]) == 65


@pytest.mark.parametrize("run, body, status, expected", [
    ("plain", {"steps": 0}, 400, "steps must be an integer from 1 to 1000; got 0"),
    ("plain", {"steps": 1001}, 400, "steps must be an integer from 1 to 1000; got 1001"),
    ("plain", {"steps": 2.5}, 400, "steps must be an integer from 1 to 1000; got 2.5"),
    ("plain", {"steps": True}, 400, "steps must be an integer from 1 to 1000; got True"),
    ("plain", {"sampler": "euler"}, 400, "unknown sampler 'euler'; choose one of ancestral, ddim, dpm++2m"),
    ("plain", {"n": 0}, 400, "n must be an integer from 1 to 32; got 0"),
    ("plain", {"n": 100000}, 400, "n must be an integer from 1 to 32; got 100000"),
    ("plain", {"seed": -1}, 400, "seed must be an integer from 0 to 9223372036854775807; got -1"),
    ("plain", {"seed": 1.5}, 400, "seed must be an integer from 0 to 9223372036854775807; got 1.5"),
    ("plain", {"guidance_scale": 3}, 400, "run 'plain' is not class-conditional, so guidance_scale must be 1; got 3"),
    ("plain", {"class": 3}, 400, "run 'plain' is not class-conditional, so it takes no class"),
    ("plain", {"prompt": "a seven"}, 400, "run 'plain' is not text-conditional, so it takes no prompt"),
    ("plain", {"prompt": 7}, 400, "prompt must be a string; got 7"),
    ("plain", {"sampler": "dpm++2m", "eta": 0.5}, 400, "--eta applies only to the ddim sampler, not to dpm++2m"),
    ("plain", {"sampler": "ddim", "eta": 2}, 400, "--eta must lie between 0 and 1; got 2"),
    ("plain", {"eta": "x"}, 400, "eta must be a finite number; got 'x'"),
    ("plain", {"colour": "red"}, 400, "unknown parameter 'colour'; the accepted ones are sampler, steps, seed"),
    ("cc", {"class": 10}, 400, "class must be an integer from 0 to 9; got 10"),
    ("cc", {"class": -1}, 400, "class must be an integer from 0 to 9; got -1"),
])
def test_generate_bad_parameters(client, run, body, status, expected):
    message = error_of(client.post(f"/api/runs/{run}/generate", json=body), status)
    assert message.startswith(expected), message


def test_generate_bad_bodies(client):
    headers = {"content-type": "application/json"}
    assert error_of(client.post("/api/runs/plain/generate", content=b"{nope", headers=headers), 400).startswith(
        "the request body is not valid JSON")
    assert error_of(client.post("/api/runs/plain/generate", json=[1, 2]), 400).startswith(
        "the request body must be a JSON object")
    assert error_of(client.post("/api/runs/plain/generate", content=b"{" + b" " * 70_000 + b"}", headers=headers),
                    413).startswith("the request body is 70002 bytes, more than this server's limit")
    assert client.get("/api/runs/plain/generate").status_code == 405
    for raw, shown in ((b'{"guidance_scale": NaN}', "nan"), (b'{"guidance_scale": -Infinity}', "-inf")):
        message = error_of(client.post("/api/runs/cc/generate", content=raw, headers=headers), 400)
        assert message == f"guidance_scale must be a finite number; got {shown}"


def test_full_queue_answers_429_and_jobs_can_be_cancelled(runs):
    import asyncio
    import threading

    app = build_app(Catalog(runs, device="cpu", log=lambda m: None), max_waiting=0)
    started = threading.Event()

    def busy(job):  # holds the model's one slot until cancelled
        started.set()
        while True:
            job.check()
            threading.Event().wait(0.01)

    with TestClient(app) as client:
        job = app.state.jobs.submit("plain", busy, loop=asyncio.new_event_loop())
        assert started.wait(10)
        message = error_of(client.post("/api/runs/plain/generate", json={}), 429)
        assert message == ("run 'plain' is busy: one generation is running and 0 waiting, the most this server allows; "
                           "try again when one has finished")
        assert client.get("/api/jobs").json()["runs"] == {"plain": {"running": job.id, "waiting": []}}
        assert generate(client, "cc", n=1)[-1][0] == "done"  # another run is not held up
        assert client.delete(f"/api/jobs/{job.id}").json() == {"cancelled": job.id}
        for _ in range(500):
            if client.get("/api/jobs").json()["runs"] == {}:
                break
            threading.Event().wait(0.01)
        finished = client.get("/api/jobs").json()["finished"]
        assert {"job": job.id, "run": "plain", "state": "cancelled"} in finished
        assert "there is no unfinished job 'abc'" in error_of(client.delete("/api/jobs/abc"), 404)
        assert generate(client, "plain", n=1)[-1][0] == "done"  # the slot is free again


# ---- the forward process ------------------------------------------------------------------


def test_forward_view_is_eq4(client):
    s = get_schedule("linear", 1000)
    images = client.get("/api/runs/plain/train-images?start=3&count=1").json()["images"]
    x0 = decode_png(images[0]["png"]).astype(np.float64) / 127.5 - 1  # the training image, [-1, 1]
    views = {t: client.get(f"/api/runs/plain/forward?image=train:3&t={t}&seed=5").json() for t in (0, 250, 999)}
    noise0 = decode_png(views[0]["noise"])
    for t, view in views.items():
        ab = float(s.alphas_cumprod[t])
        assert view["alpha_bar"] == pytest.approx(ab, rel=1e-12) and view["timesteps"] == 1000
        assert view["snr"] == pytest.approx(ab / (1 - ab), rel=1e-9)
        assert view["log_snr"] == pytest.approx(math.log(ab / (1 - ab)), rel=1e-9)
        assert view["sqrt_alpha_bar"] == pytest.approx(math.sqrt(ab))
        assert view["sqrt_one_minus_alpha_bar"] == pytest.approx(math.sqrt(1 - ab))
        assert np.array_equal(decode_png(view["x0"]), decode_png(images[0]["png"]))
        assert np.array_equal(decode_png(view["noise"]), noise0)  # one noise draw for every t
        eps = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(5)).double().numpy()[0, 0]
        xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps  # Ho et al. eq. 4, written out here
        expected = np.round(np.clip((xt + 1) / 2, 0, 1) * 255)
        assert np.abs(decode_png(view["x_t"]).astype(int) - expected).max() <= 1
    assert not np.array_equal(decode_png(views[0]["x_t"]), decode_png(views[999]["x_t"]))
    other = client.get("/api/runs/plain/forward?image=train:3&t=250&seed=6").json()
    assert not np.array_equal(decode_png(other["noise"]), noise0)


@pytest.mark.parametrize("query, status, expected", [
    ("t=-1", 400, "t must be an integer from 0 to 999; got -1"),
    ("t=1000", 400, "t must be an integer from 0 to 999; got 1000"),
    ("t=abc", 400, "t must be an integer from 0 to 999; got 'abc'"),
    ("seed=-3", 400, "seed must be an integer from 0 to"),
    ("image=train:99999", 400, "image 'train:99999' does not exist; training images run from train:0 to train:1497"),
    ("image=train:-1", 400, "image 'train:-1' does not exist"),
    ("image=../../etc/passwd", 400, "image must be 'train:INDEX' or 'upload:TOKEN'; got '../../etc/passwd'"),
    ("image=upload:nope", 404, "upload 'nope' is not (or no longer) held by the server"),
    ("x=1", 400, "unknown parameter 'x'; the accepted ones are image, t, seed"),
])
def test_forward_bad_parameters(client, query, status, expected):
    assert error_of(client.get(f"/api/runs/plain/forward?{query}"), status).startswith(expected)


def test_schedule(client):
    s = get_schedule("linear", 20)
    body = client.get("/api/runs/cc/schedule").json()
    assert body["timesteps"] == 20 and body["alpha_bar"] == pytest.approx(s.alphas_cumprod.tolist(), rel=1e-12)
    assert body["log_snr"] == pytest.approx(s.log_snr.tolist(), rel=1e-12)


def test_train_images(client):
    from ddpm.data import get_dataset

    data = get_dataset("digits")
    page = client.get("/api/runs/plain/train-images?start=10&count=3").json()
    assert page["total"] == len(data) and page["start"] == 10
    assert [i["image"] for i in page["images"]] == ["train:10", "train:11", "train:12"]
    for k, item in enumerate(page["images"]):
        assert np.array_equal(decode_png(item["png"]), data.images[10 + k, 0].numpy())
        assert item["label"] is None  # an unconditional run trained without labels
    labelled = client.get("/api/runs/cc/train-images?count=2").json()["images"]
    assert [i["label"] for i in labelled] == data.labels[:2].tolist()
    assert client.get(f"/api/runs/plain/train-images?start={len(data)}").json()["images"] == []
    for query, expected in (("count=0", "count must be an integer from 1 to 64; got 0"),
                            ("count=65", "count must be an integer from 1 to 64; got 65"),
                            ("start=-2", "start must be an integer from 0")):
        assert error_of(client.get(f"/api/runs/plain/train-images?{query}"), 400).startswith(expected)


# ---- uploads ----------------------------------------------------------------------------------


PNG, OCTETS = {"content-type": "image/png"}, {"content-type": "application/octet-stream"}


def png_bytes(array, fmt="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def test_upload_is_decoded_like_the_folder_loader(client, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    data = png_bytes(rgb)
    done = client.post("/api/runs/plain/images", content=data, headers={"content-type": "image/png"}).json()
    assert done["image"].startswith("upload:")
    (tmp_path / "a.png").write_bytes(data)
    expected = load_image(tmp_path / "a.png", (8, 8), 1)[0]  # what training on a folder would see
    assert np.array_equal(decode_png(done["png"]), expected)
    view = client.get(f"/api/runs/plain/forward?image={done['image']}&t=0").json()
    assert np.array_equal(decode_png(view["x0"]), expected)
    assert client.get(f"/api/runs/cc/forward?image={done['image']}").status_code == 200  # same size and channels
    assert error_of(client.get(f"/api/runs/rgb/forward?image={done['image']}"), 400) == (
        f"upload {done['image'][7:]!r} was decoded for another image size or colour; upload it again for run 'rgb'")
    colour = client.post("/api/runs/rgb/images", content=data, headers=OCTETS).json()  # a type the browser did not know
    assert np.array_equal(decode_png(colour["png"]), load_image(tmp_path / "a.png", (12, 12), 3).transpose(1, 2, 0))
    view = client.get(f"/api/runs/rgb/forward?image={colour['image']}&t=5").json()
    assert decode_png(view["x_t"]).shape == (12, 12, 3) and view["timesteps"] == 20


def test_bad_uploads(client, monkeypatch):
    small = np.random.default_rng(1).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    unknown = "the upload is not an image in a format the folder loader reads (png, jpg, jpeg, webp, bmp, gif)"
    full = png_bytes(small)
    cases = [
        (b"not an image", 400, unknown),
        (png_bytes(small, "TIFF"), 400, unknown),  # PIL reads TIFF, but the folder loader never runs that decoder
        (full[: len(full) // 2], 400, "the upload is not a readable image (OSError: "),  # truncated
        (b"\0" * 20_001, 413, "the upload is 20001 bytes, more than this server's limit of 20000 bytes"),
    ]
    for body, status, expected in cases:
        assert error_of(client.post("/api/runs/plain/images", content=body, headers=PNG), status).startswith(expected)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 600 pixels: a "decompression bomb" at this limit
    assert "DecompressionBomb" in error_of(client.post("/api/runs/plain/images", content=png_bytes(small), headers=PNG), 400)

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(30):
            yield b"\0" * 1000

    assert error_of(client.post("/api/runs/plain/images", content=chunks(), headers=PNG), 413).startswith(
        "the upload is more than this server's limit of 20000 bytes")
