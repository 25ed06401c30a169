"""Batches for the training loop: streamed folders train exactly as in memory, resume exactly,
survive a worker that dies, and name an unreadable file once."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.config import RunConfig, apply_overrides
from ddpm.data.stream import open_folder_stream
from ddpm.errors import ConfigError
from ddpm.training.batches import BatchPlan
from ddpm.runs.checkpoint import read_checkpoint
from ddpm.training.loop import train
from ddpm.training.source import PlanBatches, StreamingSource, default_workers

TINY = {
    "dataset": "digits",
    "dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8", "timesteps": "20", "batch_size": "4",
    "log_every": "2", "sample_every": "0", "save_every": "4", "num_samples": "4", "sampler": "ddim", "steps": "4",
    "warmup_steps": "2", "tensorboard": "false", "image_size": "8", "hflip": "true",
}


def _folder(root, n=10):
    rng = np.random.default_rng(1)
    for i in range(n):
        path = root / ("a" if i % 2 else "b") / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path)
    return root


def _config(tmp_path, folder, **more):
    return apply_overrides(RunConfig(), {**TINY, "dataset": f"folder:{folder}", "runs_dir": str(tmp_path / "runs"),
                                         **{k: str(v) for k, v in more.items()}})


def _model(run_dir):
    return read_checkpoint(run_dir).weights(ema=False)


def _same(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_streaming_trains_exactly_as_in_memory_and_resumes_exactly(tmp_path):
    folder = _folder(tmp_path / "images")
    extra = {"class_conditional": "true", "max_steps": 8}
    lines = []
    memory = train(_config(tmp_path, folder, name="memory", stream="false", **extra), log=lines.append, progress=False)
    assert not any(line.startswith("streaming") for line in lines)
    lines = []
    streamed = train(_config(tmp_path, folder, name="stream", stream="true", num_workers=2, **extra), log=lines.append,
                     progress=False)
    assert f"streaming 10 images from {folder}" in lines
    _same(_model(memory.run_dir), _model(streamed.run_dir))  # 8 steps = 3 epochs of 10 images in batches of 4
    half = train(_config(tmp_path, folder, name="half", stream="true", num_workers=0, **{**extra, "max_steps": 4}),
                 log=lambda m: None, progress=False)
    resumed = apply_overrides(read_checkpoint(half.run_dir).config, {"max_steps": "8", "num_workers": "1"})
    train(resumed, resume=half.run_dir, log=lambda m: None, progress=False)
    _same(_model(memory.run_dir), _model(half.run_dir))
    saved = read_checkpoint(half.run_dir).config.data
    assert saved.stream is True and saved.num_workers == 1


def test_a_worker_that_dies_is_replaced_and_the_run_is_unchanged(tmp_path, monkeypatch):
    import ddpm.data.stream as stream

    folder = _folder(tmp_path / "images")
    flag = tmp_path / "die-once"
    flag.write_text("")
    real = stream.load_image

    def dying(path, size, channels):
        if path.name == "03.png":
            try:
                os.remove(flag)
            except FileNotFoundError:
                pass
            else:
                os._exit(1)  # a worker killed mid-batch (the OOM killer, say)
        return real(path, size, channels)

    monkeypatch.setattr(stream, "load_image", dying)  # the forked workers inherit it
    lines = []
    died = train(_config(tmp_path, folder, name="died", stream="true", num_workers=2, max_steps=6), log=lines.append,
                 progress=False)
    assert not flag.exists() and died.step == 6
    assert [line for line in lines if "worker stopped" in line][0].startswith("warning: a data loader worker stopped (DataLoader worker")
    monkeypatch.setattr(stream, "load_image", real)
    whole = train(_config(tmp_path, folder, name="whole", stream="false", max_steps=6), log=lambda m: None, progress=False)
    _same(_model(died.run_dir), _model(whole.run_dir))


def test_an_unreadable_file_is_named_once_and_counted(tmp_path):
    folder = _folder(tmp_path / "images")
    (folder / "a" / "05.png").write_bytes(b"\x89PNG truncated")
    lines = []
    result = train(_config(tmp_path, folder, name="bad", stream="true", num_workers=1, max_steps=10), log=lines.append,
                   progress=False)  # 4 epochs: the file comes up in each of them
    named = [line for line in lines if "05.png" in line]
    assert result.step == 10 and len(named) == 1
    assert named[0].startswith(f"skipping unreadable image {folder / 'a' / '05.png'} (") and "1 so far" in named[0]
    # a batch names the images it holds: the replacement's index (its caption, in a text run), not the file's
    stream = open_folder_stream(folder, (8, 8), 3, class_labels=False, log=lambda m: None)
    plan = BatchPlan(10, 10, seed=0)
    batch = StreamingSource(stream, plan, torch.device("cpu"), num_workers=1, log=lambda m: None).get(0)
    bad = stream.files.index("a/05.png")
    assert batch.indices.tolist() == [bad + 1 if i == bad else i for i in plan.indices(0).tolist()]


def test_plan_batches_follow_the_plan_and_settings_are_checked(tmp_path):
    plan = BatchPlan(10, 4, seed=3)
    batches = iter(PlanBatches(plan, 5))
    assert [next(batches) for _ in range(3)] == [plan.indices(m).tolist() for m in (5, 6, 7)]
    assert default_workers(0) == 0 and default_workers(3) == 3
    assert 1 <= default_workers(-1) <= 8
    data = open_folder_stream(_folder(tmp_path / "images"), (8, 8), 3, class_labels=False, log=lambda m: None)
    source = StreamingSource(data, plan, torch.device("cpu"), num_workers=0, log=lambda m: None)
    first = source.get(7)
    again = source.get(7)  # asked out of order: the loader restarts there
    assert torch.equal(first.images, again.images) and first.labels is None
    assert first.images.dtype == torch.float32 and -1 <= first.images.min() and first.images.max() <= 1
    assert first.indices.tolist() == plan.indices(7).tolist()
    source.close()
    with pytest.raises(ConfigError, match="--stream applies to folder:PATH data sets; 'digits' is read into memory"):
        train(apply_overrides(RunConfig(), {**TINY, "runs_dir": str(tmp_path / "r"), "stream": "true"}), log=lambda m: None)
    with pytest.raises(ConfigError, match="--num-workers must be -1"):
        train(_config(tmp_path, tmp_path / "images", num_workers=-2), log=lambda m: None)
