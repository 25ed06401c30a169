"""Files from strangers: loading never runs code, and every bad file is one clear sentence.

The hostile payload is a pickle whose unpickling calls ``os.mkdir(marker)``: an ordinary
``pickle.load`` or ``torch.load(weights_only=False)`` of it creates the marker folder (checked
first, so the payload is known to be live). It is planted in every place that accepts a
checkpoint, model or statistics file; each must refuse it with one sentence and leave no marker.
"""

import io
import json
import os
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch

from ddpm.cli import main
from ddpm.errors import CheckpointError
from ddpm.eval.classifier import INFO_FILE, WEIGHTS_FILE, SmallClassifier, load_classifier, save_classifier
from ddpm.eval.features import load_statistics, save_statistics
from ddpm.eval.inception import InceptionFeatures
from ddpm.runs.checkpoint import list_checkpoints

TINY = ["--dataset", "digits", "--dim", "8", "--dim-mults", "1,2", "--attn-heads", "2", "--attn-dim-head", "8", "--timesteps", "20",
        "--batch-size", "8", "--log-every", "2", "--sample-every", "0", "--save-every", "0", "--num-samples", "4",
        "--sampler", "ddim", "--steps", "4", "--no-tensorboard"]


class _MakesMarker:
    """Unpickling this calls os.mkdir(path)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _raw_pickle(marker) -> bytes:
    return pickle.dumps({"weight": _MakesMarker(marker)})


def _torch_pickle(marker) -> bytes:
    """torch.save's zip format, the usual shape of a malicious .pt/.pth/.bin file."""
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "payload": _MakesMarker(marker)}, buf)
    return buf.getvalue()


PAYLOADS = {"raw-pickle": _raw_pickle, "torch-zip": _torch_pickle}


def test_the_payloads_are_live(tmp_path):
    pickle.loads(_raw_pickle(tmp_path / "a"))
    torch.load(io.BytesIO(_torch_pickle(tmp_path / "b")), weights_only=False)
    assert (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A complete two-step run of the tiny model (copied by each test before it is damaged)."""
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", *TINY, "--max-steps", "2", "--runs-dir", str(runs), "--name", "good"]) == 0
    return runs / "good"


@pytest.fixture()
def run(trained_run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    capsys.readouterr()
    return copy


def _cli_refuses(capsys, args, message):
    """``ddpm args`` exits with status 2 and prints exactly one line: the error containing ``message``."""
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("ddpm: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    return err


# ---- hostile pickles wherever a checkpoint is accepted -------------------------------------------

IN_CHECKPOINT = [
    # (file replaced inside step_00000002/, command; {run} and {ckpt} are filled in, message)
    ("ema.safetensors", ["sample", "--run", "{run}"], "is not a readable safetensors file"),
    ("ema.safetensors", ["sample", "--checkpoint", "{ckpt}/ema.safetensors"], "is not a readable safetensors file"),
    ("model.safetensors", ["sample", "--checkpoint", "{ckpt}", "--no-ema"], "is not a readable safetensors file"),
    ("model.safetensors", ["train", "--resume", "{run}", "--max-steps", "4"], "is not a readable safetensors file"),
    ("ema.safetensors", ["train", "--resume", "{ckpt}", "--max-steps", "4"], "is not a readable safetensors file"),
    ("state.pt", ["train", "--resume", "{run}", "--max-steps", "4"], "is not a loadable training state"),
    ("config.json", ["sample", "--run", "{run}"], "config.json is not readable JSON"),
    ("config.json", ["train", "--resume", "{run}"], "config.json is not readable JSON"),
    ("ema.safetensors", ["eval", "--run", "{run}", "--cache-dir", "{tmp}/cache"], "is not a readable safetensors file"),
    ("model.safetensors", ["eval", "--run", "{ckpt}", "--no-ema", "--cache-dir", "{tmp}/cache"], "is not a readable safetensors file"),
    ("ema.safetensors", ["viz", "reverse", "--run", "{run}", "--out", "{tmp}/r.gif"], "is not a readable safetensors file"),
    ("ema.safetensors", ["viz", "interpolate", "--run", "{run}", "--out", "{tmp}/i.png"], "is not a readable safetensors file"),
]


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("planted, args, message", IN_CHECKPOINT)
def test_a_pickle_planted_in_a_checkpoint_is_refused_by_the_cli(run, tmp_path, capsys, payload, planted, args, message):
    ckpt = run / "checkpoints" / "step_00000002"
    marker = tmp_path / "marker"
    (ckpt / planted).write_bytes(PAYLOADS[payload](marker))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    args = [a.format(run=run, ckpt=ckpt, tmp=tmp_path) for a in args]
    if args[0] == "sample":
        args += ["--n", "1", "--out", str(tmp_path / "out")]
    _cli_refuses(capsys, args, message)
    assert not marker.exists()
    # the refused resume left the run as it was (no rewritten metrics, no new checkpoint)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("name", ["evil.pt", "evil.pth", "evil.safetensors", "model.bin"])
def test_a_pickle_given_as_the_checkpoint_is_refused_by_the_cli(tmp_path, capsys, payload, name):
    marker = tmp_path / "marker"
    evil = tmp_path / name
    evil.write_bytes(PAYLOADS[payload](marker))
    _cli_refuses(capsys, ["sample", "--checkpoint", str(evil), "--out", str(tmp_path / "out")],
                 f"{evil} is not a torch-ddpm checkpoint; give a run directory")
    refused = f"{evil} is not a torch-ddpm checkpoint"
    _cli_refuses(capsys, ["train", "--resume", str(evil)], refused)
    _cli_refuses(capsys, ["eval", "--run", str(evil), "--cache-dir", str(tmp_path / "cache")], refused)
    _cli_refuses(capsys, ["viz", "reverse", "--run", str(evil), "--out", str(tmp_path / "r.gif")], refused)
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_pickle_given_as_the_inception_weights_is_refused_by_the_cli(run, tmp_path, capsys, payload):
    marker = tmp_path / "marker"
    evil = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    evil.write_bytes(PAYLOADS[payload](marker))
    _cli_refuses(capsys, ["eval", "--run", str(run), "--features", "inception", "--inception-weights", str(evil),
                          "--num-samples", "2", "--cache-dir", str(tmp_path / "cache")],
                 f"{evil} cannot be read as a weights-only PyTorch state dict")
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_fid_inception_file_never_unpickles_code(tmp_path, payload):
    marker = tmp_path / "marker"
    evil = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    evil.write_bytes(PAYLOADS[payload](marker))
    with pytest.raises(CheckpointError) as err:
        InceptionFeatures.from_file(evil)
    assert str(err.value).startswith(f"{evil} cannot be read as a weights-only PyTorch state dict (")
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("planted", [WEIGHTS_FILE, INFO_FILE])
def test_the_classifier_directory_never_unpickles_code(tmp_path, payload, planted):
    d = tmp_path / "clf"
    save_classifier(SmallClassifier(1, 3, 8, widths=(4, 8)), d, accuracy=0.5)
    load_classifier(d)  # the untouched directory loads
    marker = tmp_path / "marker"
    (d / planted).write_bytes(PAYLOADS[payload](marker))
    with pytest.raises(CheckpointError) as err:
        load_classifier(d)
    assert str(err.value).startswith(f"{d / planted} is damaged")
    assert not marker.exists()


def test_the_statistics_cache_never_unpickles_code(tmp_path):
    marker = tmp_path / "marker"
    damaged = "is damaged or not a statistics file written by save_statistics; delete it to recompute"
    raw = tmp_path / "raw.npz"
    raw.write_bytes(_raw_pickle(marker))
    # an .npz whose arrays are object arrays: numpy stores them as pickles inside the zip
    inside = tmp_path / "inside.npz"
    np.savez(inside, format=np.array("ddpm-feature-statistics"), extractor=np.array(""), version=np.array(1),
             mu=np.array([_MakesMarker(marker)], dtype=object), sigma=np.eye(1))
    # a single .npy holding a pickled object array
    npy = tmp_path / "stats.npy"
    np.save(npy, np.array([_MakesMarker(marker)], dtype=object), allow_pickle=True)
    for path in (raw, inside, npy):
        with pytest.raises(CheckpointError) as err:
            load_statistics(path)
        assert str(err.value) == f"{path} {damaged}"
    assert not marker.exists()
    good = save_statistics(tmp_path / "good.npz", np.zeros(2), np.eye(2))
    assert load_statistics(good)[1].shape == (2, 2)


# ---- malformed but pickle-free files --------------------------------------------------------------


def _safetensors(header: dict, data: bytes, length: int | None = None) -> bytes:
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob) if length is None else length) + blob + data


MALFORMED_SAFETENSORS = {
    "huge header length": _safetensors({}, b"", length=2**62),
    "header longer than the file": _safetensors({}, b"", length=10_000),
    "offsets past the end": _safetensors({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}, bytes(16)),
    "shape larger than its bytes": _safetensors({"w": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 16]}}, bytes(16)),
    "header not JSON": struct.pack("<Q", 8) + b"\xff\xfe{[]}!!" + bytes(8),
    "empty file": b"",
}


@pytest.mark.parametrize("case", MALFORMED_SAFETENSORS)
def test_malformed_safetensors_in_a_run_are_one_sentence(run, tmp_path, capsys, case):
    ema = run / "checkpoints" / "step_00000002" / "ema.safetensors"
    ema.write_bytes(MALFORMED_SAFETENSORS[case])
    _cli_refuses(capsys, ["sample", "--run", str(run), "--n", "1", "--out", str(tmp_path / "o")],
                 f"{ema} is not a readable safetensors file")


def _edit_config(run, edit):
    path = run / "checkpoints" / "step_00000002" / "config.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["config"]["model"].update(width=3), "unknown field 'width' in [model] of {path}; known fields: dim,"),
        (lambda m: m["config"].update(optimiser={}), "unknown section or field 'optimiser' in {path}"),
        (lambda m: m["config"]["model"].update(dim="eight"), "model.dim in {path} must be an integer; got 'eight'"),
        (lambda m: m["config"]["model"].update(dim_mults=[1, "2"]), "model.dim_mults in {path} must be an integer"),
        (lambda m: m["config"]["train"].update(lr=None), "train.lr in {path} must be a number; got None"),
        (lambda m: m["config"].update(model=[8]), "[model] in {path} must be a table; got [8]"),
        (lambda m: m.update(step="2"), "{path} has no valid step"),
        (lambda m: m.update(format_version=99), "has checkpoint format 99; this torch-ddpm reads format 1"),
    ],
)
def test_a_config_with_unknown_or_mistyped_fields_is_one_sentence(run, tmp_path, capsys, edit, message):
    path = _edit_config(run, edit)
    for args in (["sample", "--run", str(run), "--n", "1", "--out", str(tmp_path / "o")],
                 ["train", "--resume", str(run), "--max-steps", "4"]):
        _cli_refuses(capsys, args, message.format(path=path))


@pytest.mark.parametrize(
    "edit, message",
    [
        # a wider network: every tensor is there, with the wrong shape
        (lambda m: m["config"]["model"].update(dim=16),
         r"do not fit this model: \S+ has shape \(\d+(, \d+)*\) where the model needs"),
        # one resolution level fewer: tensors are missing
        (lambda m: m["config"]["model"].update(dim_mults=[1]),
         r"do not fit this model \((missing|unexpected) '[^']+', \d+ missing and \d+ unexpected tensors\); "
         r"was it written for another configuration\?"),
        (lambda m: m["config"]["data"].update(channels=3), r"do not fit this model: \S+ has shape"),
    ],
)
def test_weights_of_another_shape_are_one_sentence(run, tmp_path, capsys, edit, message):
    import re

    _edit_config(run, edit)
    err = _cli_refuses(capsys, ["sample", "--run", str(run), "--n", "1", "--out", str(tmp_path / "o")],
                       "the weights in ")
    assert re.search(message, err), err
    assert str(run / "checkpoints" / "step_00000002" / "ema.safetensors") in err


def test_half_written_or_abandoned_checkpoint_directories_are_refused(run, tmp_path, capsys):
    """A .tmp- directory (a save a crash interrupted) is refused even when named explicitly."""
    ckpt = list_checkpoints(run)[-1]
    leftover = run / "checkpoints" / f".tmp-step_00000004-{2**22 + 1}"
    shutil.copytree(ckpt, leftover)
    for given in (leftover, leftover / "ema.safetensors"):
        _cli_refuses(capsys, ["sample", "--checkpoint", str(given), "--out", str(tmp_path / "o")],
                     f"{leftover} is a checkpoint that was being written, replaced or deleted, not a complete one")
    assert main(["sample", "--run", str(run), "--n", "1", "--out", str(tmp_path / "o")]) == 0
    assert f"drawing 1 images from {ckpt}" in capsys.readouterr().out


# ---- every file of a checkpoint is looked at when it is opened --------------------------------------

OPENERS = [
    ["sample", "--run", "{run}", "--n", "1", "--out", "{tmp}/o"],
    ["eval", "--run", "{run}", "--cache-dir", "{tmp}/cache"],
    ["viz", "reverse", "--run", "{run}", "--out", "{tmp}/r.gif"],
    ["train", "--resume", "{run}", "--max-steps", "4"],
]


@pytest.mark.parametrize("args", OPENERS, ids=lambda a: " ".join(a[:2]))
@pytest.mark.parametrize("name, damage, message", [
    ("model.safetensors", lambda b: b[: len(b) - 100], "is not a readable safetensors file"),  # truncated
    ("state.pt", lambda b: b[: len(b) // 2], "is not a loadable training state"),
])
def test_a_damaged_file_the_command_does_not_read_is_still_named(run, tmp_path, capsys, args, name, damage, message):
    """sample, eval and viz read only the EMA weights; a broken model.safetensors or state.pt
    (which a resume needs) is still named when the checkpoint is opened."""
    path = run / "checkpoints" / "step_00000002" / name
    path.write_bytes(damage(path.read_bytes()))
    _cli_refuses(capsys, [a.format(run=run, tmp=tmp_path) for a in args], f"{path} {message}")
    assert not (tmp_path / "o").exists() and not (tmp_path / "r.gif").exists()
