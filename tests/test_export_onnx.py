"""ddpm export onnx: the graph onnxruntime runs equals the PyTorch network (within 1e-4, fp32) at any
batch, for unconditional, class-conditional and text-conditional runs; what cannot be exported is one
sentence and exit status 2, and nothing is left under the name asked for."""

import numpy as np
import pytest
import torch

from export_helpers import tiny_run
from ddpm import load_run
from ddpm.cli import main
from ddpm.text.base import TextBatch

try:
    import onnx  # noqa: F401
    import onnxruntime
    import onnxscript  # noqa: F401
    MISSING = False
except ImportError:
    MISSING = True

pytestmark = pytest.mark.needs(MISSING, 'the export extra is not installed (pip install ".[export]")')


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    tiny_run(root, "plain", objective="pred_v")
    tiny_run(root, "cc", class_conditional="true", learned_variance="true")
    tiny_run(root, "words", text_conditional="true", text_encoder="builtin", builtin_text_dim="8", builtin_text_layers="1")
    return root


def run_onnx(path, feeds):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, session.run(None, feeds)[0]


def test_class_conditional_graph_equals_the_network_at_any_batch(runs, tmp_path, capsys):
    out = tmp_path / "cc.onnx"
    assert main(["export", "onnx", "--run", str(runs / "cc"), "--out", str(out)]) == 0
    assert "onnxruntime matches PyTorch within" in capsys.readouterr().out
    model = load_run(runs / "cc").model
    g = torch.Generator().manual_seed(1)
    for b in (1, 7):  # the graph was traced at batch 2: the batch is dynamic
        x, t = torch.randn(b, 1, 8, 8, generator=g), torch.randint(0, 50, (b,), generator=g)
        classes = torch.randint(0, 11, (b,), generator=g)  # 10: the null label
        session, got = run_onnx(out, {"x": x.numpy(), "t": t.float().numpy(), "class": classes.numpy()})
        with torch.inference_mode():
            want = model(x, t, classes).numpy()
        assert got.shape == (b, 2, 8, 8)  # learned variance: 2C channels, as the network returns
        assert np.abs(got - want).max() <= 1e-4 and np.abs(want).max() > 0.1  # outputs far from zero
    kinds = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    assert kinds["x"][0] == "tensor(float)" and kinds["class"][0] == "tensor(int64)" and isinstance(kinds["x"][1][0], str)
    assert [o.name for o in session.get_outputs()] == ["prediction"]


def test_unconditional_graph_takes_x_and_t(runs, tmp_path):
    out = tmp_path / "plain.onnx"
    assert main(["export", "onnx", "--run", str(runs / "plain"), "--out", str(out), "--no-ema"]) == 0
    model = load_run(runs / "plain", ema=False).model
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0.0, 17.5, 49.0])  # a fractional time too
    session, got = run_onnx(out, {"x": x.numpy(), "t": t.numpy()})
    assert [i.name for i in session.get_inputs()] == ["x", "t"]
    with torch.inference_mode():
        assert np.abs(got - model(x, t).numpy()).max() <= 1e-4


def test_text_graph_holds_the_prompts_and_the_null_caption(runs, tmp_path):
    out = tmp_path / "words.onnx"
    prompts = ["a three", "a seven"]
    assert main(["export", "onnx", "--run", str(runs / "words"), "--out", str(out),
                 "--prompt", prompts[0], "--prompt", prompts[1]]) == 0
    diffusion = load_run(runs / "words")
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([3, 40, 49, 0])
    index = torch.tensor([1, 0, 2, 1])  # 2: the null caption
    _, got = run_onnx(out, {"x": x.numpy(), "t": t.float().numpy(), "prompt": index.numpy()})
    encoded = diffusion.text_encoder.encode([prompts[i] for i in [1, 0, 0, 1]])
    text = TextBatch(encoded.tokens, encoded.mask, encoded.pooled, torch.tensor([False, False, True, False]))
    with torch.inference_mode():
        want = diffusion.model(x, t, text=text).numpy()
    assert np.abs(got - want).max() <= 1e-4
    # and the prompts matter: another index gives another prediction
    _, other = run_onnx(out, {"x": x.numpy(), "t": t.float().numpy(), "prompt": np.array([0, 1, 0, 0])})
    assert np.abs(other - got).max() > 1e-2


@pytest.mark.parametrize("extra, expected", [
    (["--prompt", "a three"], "--prompt needs a text-conditional run"),
    (["--out", "model.txt"], "--out must name a .onnx file; got"),
])
def test_what_cannot_be_exported_is_one_sentence(runs, tmp_path, capsys, extra, expected):
    args = ["export", "onnx", "--run", str(runs / "cc"), "--out", str(tmp_path / "m.onnx"), *extra]
    if "--out" in extra:
        args = ["export", "onnx", "--run", str(runs / "cc"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_a_text_run_without_prompts_and_a_missing_run(runs, tmp_path, capsys):
    assert main(["export", "onnx", "--run", str(runs / "words"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "this run is text-conditional: give the prompts" in capsys.readouterr().err
    assert main(["export", "onnx", "--run", str(tmp_path / "none"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_failed_check_leaves_nothing_behind(runs, tmp_path, capsys, monkeypatch):
    import ddpm.export.onnx as exporter

    out = tmp_path / "m.onnx"
    out.write_bytes(b"the user's earlier file")
    monkeypatch.setattr(exporter, "TOLERANCE", -1.0)  # every comparison fails
    assert main(["export", "onnx", "--run", str(runs / "plain"), "--out", str(out)]) == 2
    assert "onnxruntime and PyTorch disagree by" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's earlier file" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
