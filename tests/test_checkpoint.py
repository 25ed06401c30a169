import json
import os
import pickle
import struct

import pytest
import torch

from ddpm.config import RunConfig
from ddpm.errors import CheckpointError
from ddpm.runs.checkpoint import (
    list_checkpoints,
    load_model_weights,
    load_state,
    load_weights,
    read_checkpoint,
    resolve,
    save_checkpoint,
)


def _save(run, step, keep_last=3, value=1.0):
    w = {"w": torch.full((2, 2), value)}
    return save_checkpoint(run, step, model_state=w, ema_state={"w": w["w"] * 2},
                           train_state={"step": step, "rng": torch.get_rng_state()}, config=RunConfig(), keep_last=keep_last)


def test_save_read_and_prune(tmp_path):
    for step in (100, 200, 300, 400):
        _save(tmp_path, step, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000300", "step_00000400"]
    ckpt = read_checkpoint(tmp_path)
    assert ckpt.step == 400 and ckpt.config == RunConfig()
    assert torch.equal(ckpt.weights()["w"], torch.full((2, 2), 2.0))
    assert torch.equal(ckpt.weights(ema=False)["w"], torch.full((2, 2), 1.0))
    assert ckpt.state()["step"] == 400
    assert resolve(ckpt.path / "ema.safetensors") == ckpt.path
    assert resolve(tmp_path / "checkpoints") == ckpt.path
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_saving_the_same_step_again_replaces_it(tmp_path):
    _save(tmp_path, 5, value=1.0)
    _save(tmp_path, 5, value=3.0)
    assert torch.equal(read_checkpoint(tmp_path).weights(ema=False)["w"], torch.full((2, 2), 3.0))


def test_half_written_checkpoints_are_never_taken(tmp_path):
    _save(tmp_path, 10)
    partial = tmp_path / "checkpoints" / "step_00000020"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"partial")
    (tmp_path / "checkpoints" / ".tmp-step_00000030-123").mkdir()
    assert read_checkpoint(tmp_path).step == 10


def test_non_finite_weights_are_never_written(tmp_path):
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        save_checkpoint(tmp_path, 1, model_state={"w": torch.tensor([float("nan")])}, ema_state={"w": torch.zeros(1)},
                        train_state={}, config=RunConfig())
    assert list_checkpoints(tmp_path) == []


def test_things_that_are_not_our_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no run or checkpoint at"):
        read_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="holds no complete torch-ddpm checkpoint"):
        read_checkpoint(tmp_path)
    other = tmp_path / "model.pt"
    other.write_bytes(b"whatever")
    with pytest.raises(CheckpointError, match="is not a torch-ddpm checkpoint; give a run directory"):
        read_checkpoint(other)
    ckpt = _save(tmp_path / "run", 1)
    (ckpt / "config.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointError, match="is not a torch-ddpm checkpoint"):
        read_checkpoint(ckpt)
    (ckpt / "config.json").write_text(json.dumps({"format": "torch-ddpm checkpoint", "format_version": 1, "step": 1,
                                                   "config": {"train": {"lr": "fast"}}}))
    with pytest.raises(CheckpointError, match="train.lr in"):
        read_checkpoint(ckpt)


def test_malformed_safetensors(tmp_path):
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    past_end = tmp_path / "past.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
    past_end.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    for path in (huge, past_end):
        with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
            load_weights(path)


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_state_file_never_unpickles_code(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "state.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"step": 1, "x": _Marker(str(marker))}, fh)
    with pytest.raises(CheckpointError, match="is not a loadable training state"):
        load_state(evil)
    assert not marker.exists()


def test_weights_that_do_not_fit():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match=r"weight has shape \(2, 4\) where the model needs \(2, 3\)"):
        load_model_weights(model, {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, "x.safetensors")
    with pytest.raises(CheckpointError, match="missing 'bias'"):
        load_model_weights(model, {"weight": torch.zeros(2, 3)}, "x.safetensors")


def test_a_config_describing_a_huge_model_is_refused_before_allocating(tmp_path):
    import tracemalloc

    from ddpm.config import apply_overrides
    from ddpm.runs.load import load_for_sampling

    small = apply_overrides(RunConfig(), {"dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8",
                                          "image_size": "8", "channels": "1"})
    from ddpm.runs.build import build_unet

    weights = build_unet(small).state_dict()
    huge = apply_overrides(small, {"dim": "100000"})  # about 10^12 parameters if it were built
    save_checkpoint(tmp_path, 1, model_state=weights, ema_state=weights, train_state={"step": 1}, config=huge)
    tracemalloc.start()
    with pytest.raises(CheckpointError, match="do not fit this model"):
        load_for_sampling(tmp_path, device="cpu")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20
