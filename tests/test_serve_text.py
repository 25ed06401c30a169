"""ddpm serve with a text-conditional run: the prompt box draws what ``ddpm sample --prompt``
draws, and a prompt the text encoder would refuse is refused before any job is queued."""

import types

import numpy as np
import pytest
from PIL import Image

from serve_helpers import TINY, decode_png, error_of, need_server_packages, parse_sse

need_server_packages()
from starlette.testclient import TestClient  # noqa: E402

from ddpm.config import RunConfig, apply_overrides  # noqa: E402
from ddpm.errors import ConfigError  # noqa: E402
from ddpm.generate import sample_to_directory  # noqa: E402
from ddpm.serve.app import build_app  # noqa: E402
from ddpm.serve.catalog import Catalog  # noqa: E402
from ddpm.training.loop import train  # noqa: E402


def generate(client, run, **body):
    response = client.post(f"/api/runs/{run}/generate", json=body)
    assert response.status_code == 200, response.text
    return parse_sse(response.text)


@pytest.fixture(scope="module")
def text_client(tmp_path_factory):
    """A tiny text-conditional run (the built-in encoder) whose own [sample] guidance is 3."""
    root = tmp_path_factory.mktemp("text-runs")
    train(apply_overrides(RunConfig(), {**TINY, "timesteps": "20", "text_conditional": "true", "text_encoder": "builtin",
                                        "builtin_text_dim": "8", "builtin_text_layers": "0", "guidance_scale": "3",
                                        "runs_dir": str(root), "name": "words"}), log=lambda m: None, progress=False)
    app = build_app(Catalog(root, device="cpu", log=lambda m: None), frame_interval=0.0, max_images=32)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c, root, app


def test_the_prompt_box_draws_what_ddpm_sample_draws(text_client, tmp_path, monkeypatch):
    from ddpm.serve import work

    client, root, _ = text_client
    (run,) = client.get("/api/runs").json()["runs"]
    assert run["conditioning"] == "text" and run["num_classes"] is None
    assert run["text"] == {"encoder": "builtin", "max_tokens": 77}  # what the prompt box says
    seen = []

    def recording(*args, **kw):
        seen.append((kw.get("prompts"), kw["sample"].guidance_scale))
        return real(*args, **kw)

    real = work.generate
    monkeypatch.setattr(work, "generate", recording)
    done = generate(client, "words", sampler="ddim", steps=3, seed=2, n=3, prompt="  a handwritten seven ")[-1][1]
    assert done["prompt"] == "a handwritten seven"
    assert seen == [(["a handwritten seven"] * 3, 3.0)]  # the prompt of every image, the run's own guidance
    out = sample_to_directory(root / "words", out=tmp_path / "cli", num=3, seed=2, sampler="ddim", steps=3,
                              prompts=["a handwritten seven"], device="cpu", log=lambda m: None)
    for i, url in enumerate(done["images"]):
        with Image.open(out / f"{i:05d}_prompt0.png") as im:
            assert np.array_equal(decode_png(url), np.asarray(im))  # the run's guidance 3, as ddpm sample uses it
    # no prompt: unconditional images (the null caption), as ddpm sample draws them
    plain = generate(client, "words", sampler="ddim", steps=3, seed=2, n=3)[-1][1]
    out = sample_to_directory(root / "words", out=tmp_path / "plain", num=3, seed=2, sampler="ddim", steps=3,
                              device="cpu", log=lambda m: None)
    with Image.open(out / "00000.png") as im:
        assert plain["prompt"] is None and np.array_equal(decode_png(plain["images"][0]), np.asarray(im))
    assert seen[-1] == (None, 1.0)
    response = client.post("/api/runs/words/generate", json={"guidance_scale": 2.0})
    assert "guidance_scale needs a prompt on a text-conditional run" in error_of(response, 400)


LONG = "a seven " * 50  # 100 words: 100 tokens of the built-in encoder, whose limit is 77


@pytest.mark.parametrize("route, extra", [("generate", {"steps": 2}),
                                          ("inpaint", {"box": [0, 4, 8, 8], "steps": 2, "jump_length": 1})])
@pytest.mark.parametrize("prompt, expected", [
    (LONG, f"prompt {LONG.strip()[:60]!r}... has 100 tokens, more than the 77 the builtin text encoder of this model "
           "takes; shorten it"),
    ("?!", "prompt '?!' has no words (letters or digits) for the built-in text encoder"),
])
def test_a_prompt_the_encoder_refuses_is_refused_before_queueing(text_client, monkeypatch, route, extra, prompt, expected):
    client, _, app = text_client
    submitted = []
    submit = app.state.jobs.submit
    monkeypatch.setattr(app.state.jobs, "submit", lambda *a, **kw: submitted.append(a) or submit(*a, **kw))
    finished = list(app.state.jobs.finished)
    message = error_of(client.post(f"/api/runs/words/{route}", json={"prompt": prompt, "n": 1, **extra}), 400,
                       shortened_prompt=True)
    assert message == expected
    assert submitted == [] and list(app.state.jobs.finished) == finished  # no job was made
    # 77 words is the limit itself: accepted, and drawn
    ok = client.post(f"/api/runs/words/{route}", json={"prompt": "seven " * 77, "n": 1, **extra})
    assert ok.status_code == 200 and parse_sse(ok.text)[-1][0] == "done" and len(submitted) == 1


def test_minilm_prompts_are_counted_without_loading_the_encoder(tmp_path):
    """WordPiece tokens with [CLS] and [SEP], from tokenizer.json alone (the weights stay unread)."""
    pytest.importorskip("tokenizers")
    config = apply_overrides(RunConfig(), {"text_conditional": "true", "text_encoder": "minilm", "text_max_tokens": "8"})
    run = types.SimpleNamespace(name="m", config=config)
    catalog = Catalog(tmp_path, device="cpu", log=lambda m: None)
    try:
        catalog.check_prompt(run, "a photo of a small cat")  # 6 words + [CLS] + [SEP] = 8: the limit
    except ConfigError as err:
        if "needs" in str(err) or "cannot" in str(err):
            pytest.skip(str(err))  # the tokenizer's package is not installed here
        raise
    with pytest.raises(ConfigError, match=r"has 9 tokens, more than the 8 the minilm text encoder of this model takes"):
        catalog.check_prompt(run, "a photo of a very small cat")
