"""Helpers shared by the ``ddpm serve`` tests: two tiny runs trained for two steps, and a reader
of server-sent events written independently of the page's."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpm.config import RunConfig, apply_overrides
from ddpm.training.loop import train

TINY = {"dataset": "digits", "dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8", "batch_size": "8",
        "sample_every": "0", "save_every": "0", "num_samples": "4", "sampler": "ddim", "steps": "4",
        "tensorboard": "false", "max_steps": "2",
        # the paper's process (eps on the linear schedule), which the page's closed-form checks assume
        "beta_schedule": "linear", "objective": "pred_noise", "min_snr_gamma": "0"}


def need_server_packages() -> None:
    """Skip the calling test module without Starlette, uvicorn or httpx (the test extra), except
    under CI (the CI variable, set by .ci/run), where their absence is an error."""
    try:
        import httpx  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"ddpm serve's tests need {err.name} (pip install '.[test]')", allow_module_level=True)


def train_runs(root: Path) -> Path:
    """``root/plain`` (unconditional digits, T = 1000) and ``root/cc`` (10 classes, T = 20)."""
    quiet = dict(log=lambda m: None, progress=False)
    train(apply_overrides(RunConfig(), {**TINY, "timesteps": "1000", "runs_dir": str(root), "name": "plain"}), **quiet)
    train(apply_overrides(RunConfig(), {**TINY, "timesteps": "20", "class_conditional": "true",
                                        "runs_dir": str(root), "name": "cc"}), **quiet)
    return root


def parse_sse(text: str) -> list[tuple[str, dict]]:
    """(event, data) pairs of a server-sent event stream; comment lines are skipped."""
    events = []
    for block in text.split("\n\n"):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
        if name is not None:
            events.append((name, json.loads("\n".join(data))))
    return events


def decode_png(url: str) -> np.ndarray:
    """The pixels of a ``data:image/png;base64,...`` URL ([H, W] gray or [H, W, 3])."""
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix), url[:40]
    with Image.open(io.BytesIO(base64.b64decode(url[len(prefix):]))) as im:
        assert im.format == "PNG"
        return np.asarray(im)


def error_of(response, status: int, *, shortened_prompt: bool = False) -> str:
    """The one-sentence error of an API answer with ``status``, checked to be one sentence without a
    traceback (``shortened_prompt``: the sentence quotes a prompt cut off with "...")."""
    assert response.status_code == status, response.text
    message = response.json()["error"]
    text = message.replace("...", "") if shortened_prompt else message
    assert "\n" not in message and "Traceback" not in message and text.count(". ") == 0, message
    return message
