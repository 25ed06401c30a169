"""Non-finite values during training: a bad step is skipped (not retried forever), counted in
metrics.csv and warned about; the run goes on, and its checkpoints hold finite weights.

test_loop.py covers the other half: many non-finite steps in a row stop the run with a message
naming the likely causes, and a checkpoint with non-finite weights is never written.
"""

import csv
import math

import pytest
import torch

from ddpm.config import RunConfig, apply_overrides
from ddpm.data import get_dataset
from ddpm.data.base import ImageDataset
from ddpm.training.batches import BatchPlan
from ddpm.runs.checkpoint import list_checkpoints, read_checkpoint
from ddpm.training.loop import train

TINY = {
    "dataset": "digits", "dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8", "timesteps": "20", "batch_size": "8",
    "log_every": "1", "sample_every": "0", "save_every": "4", "num_samples": "4", "sampler": "ddim", "steps": "4",
    "warmup_steps": "2", "tensorboard": "false",
}
BAD_STEP = 3  # 1-based: the third optimizer step meets the poisoned image



def _config(tmp_path, **more) -> RunConfig:
    return apply_overrides(RunConfig(), {**TINY, "runs_dir": str(tmp_path / "runs"), **{k: str(v) for k, v in more.items()}})


@pytest.fixture()
def poisoned(monkeypatch):
    """One image of the digits turns into ``value`` whenever it is in a batch: a deterministic bad
    batch, as corrupt data gives. It is in the batch of step 3 only (the first epoch has 187 batches)."""
    n = len(get_dataset("digits", log=lambda line: None))
    victim = int(BatchPlan(n, int(TINY["batch_size"]), seed=0).indices(BAD_STEP - 1)[0])
    real = ImageDataset.to_float
    value = {"v": float("nan")}

    def to_float(self, indices):
        x = real(self, indices)
        x[torch.as_tensor(indices) == victim] = value["v"]
        return x

    monkeypatch.setattr(ImageDataset, "to_float", to_float)
    return value


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_bad_batch_is_skipped_counted_and_the_run_goes_on(tmp_path, poisoned, value):
    poisoned["v"] = value
    messages = []
    result = train(_config(tmp_path, name="n", max_steps=8), log=messages.append, progress=False)
    assert result.step == 8
    warnings = [m for m in messages if m.startswith("warning:")]
    assert warnings == [f"warning: non-finite loss or gradient at step {BAD_STEP}; the step was skipped"]
    rows = _rows(result.run_dir)
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)
    assert [r["nonfinite_skipped"] for r in rows if r["step"] < BAD_STEP] == [0] * (BAD_STEP - 1)
    after = [r["nonfinite_skipped"] for r in rows if r["step"] > BAD_STEP]
    assert after and set(after) == {1}
    for ckpt in list_checkpoints(result.run_dir):
        for ema in (False, True):
            assert all(torch.isfinite(t).all() for t in read_checkpoint(ckpt).weights(ema=ema).values())


def test_the_skip_count_survives_a_resume(tmp_path, poisoned):
    first = train(_config(tmp_path, name="r", max_steps=4), log=lambda m: None, progress=False)
    assert _rows(first.run_dir)[-1]["nonfinite_skipped"] == 1
    resumed = train(apply_overrides(read_checkpoint(first.run_dir).config, {"max_steps": "6"}), resume=first.run_dir,
                    log=lambda m: None, progress=False)
    assert resumed.step == 6
    assert [r["nonfinite_skipped"] for r in _rows(first.run_dir) if r["step"] > 4] == [1, 1]


def test_a_skipped_step_is_the_same_in_a_resumed_run(tmp_path, poisoned):
    """Skipping stays deterministic: a run resumed across the bad step ends with the same weights."""
    whole = train(_config(tmp_path, name="whole", max_steps=6), log=lambda m: None, progress=False)
    half = train(_config(tmp_path, name="half", max_steps=2, save_every=2), log=lambda m: None, progress=False)
    resumed = train(apply_overrides(read_checkpoint(half.run_dir).config, {"max_steps": "6"}), resume=half.run_dir,
                    log=lambda m: None, progress=False)
    a, b = read_checkpoint(whole.run_dir).weights(ema=False), read_checkpoint(resumed.run_dir).weights(ema=False)
    assert all(torch.equal(a[k], b[k]) for k in a)
