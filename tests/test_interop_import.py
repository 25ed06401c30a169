"""``ddpm import diffusers:SOURCE``: the run it writes, what works on it unchanged, the download through
huggingface_hub from a Hub served on 127.0.0.1, and one sentence (exit 2) for each kind of bad input."""

import hashlib
import json
import sys
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from diffusers_helpers import GOOGLE_SCHEDULER, NEEDS_DIFFUSERS, TINY, save_pipeline

from ddpm.cli import main

pytestmark = pytest.mark.needs(*NEEDS_DIFFUSERS)


def one_sentence_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ddpm: error: ") and "\n" not in err and "Traceback" not in err
    return err


def same_output(diffusion, unet, size=16):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.allclose(diffusion.model(x, torch.tensor([3, 900])), unet(x, torch.tensor([3, 900])).sample,
                              rtol=1e-5, atol=1e-6)


def test_import_is_an_ordinary_run(tmp_path, capsys):
    """Imported from a pipeline folder: load_run, sample and inpaint work on it as on any run."""
    from ddpm import load_run

    unet, _ = save_pipeline(tmp_path / "pipe", TINY)
    run = tmp_path / "runs" / "tiny"
    assert main(["import", f"diffusers:{tmp_path / 'pipe'}", "--out", str(run)]) == 0
    record = json.loads((run / "import.json").read_text())
    weights = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
    assert record["path"] == str((tmp_path / "pipe").resolve())
    assert record["weights_file"] == "unet/diffusion_pytorch_model.safetensors"
    assert record["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    ema = run / "checkpoints" / "step_00000000" / "ema.safetensors"
    assert record["stored_weights_sha256"] == hashlib.sha256(ema.read_bytes()).hexdigest()
    assert (run / "config.toml").is_file()

    diffusion = load_run(run)
    assert diffusion.variance_type == "fixed_large" and diffusion.objective == "pred_noise"
    assert same_output(diffusion, unet)
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--n", "2", "--steps", "3", "--out", str(tmp_path / "s")]) == 0
    assert sorted(p.name for p in (tmp_path / "s").glob("0000*.png")) == ["00000.png", "00001.png"]
    assert main(["inpaint", "--run", str(run), "--image", str(tmp_path / "s" / "00000.png"), "--box", "0,0,8,8",
                 "--n", "1", "--steps", "4", "--jump-length", "2", "--jump-n-sample", "2",
                 "--out", str(tmp_path / "i")]) == 0
    assert (tmp_path / "i" / "grid.png").is_file()
    # it has no optimizer history: --resume is refused in one sentence that points to --init-from
    from ddpm.errors import CheckpointError
    from ddpm.runs import read_checkpoint

    with pytest.raises(CheckpointError, match=f"ddpm train --init-from {run}$"):
        read_checkpoint(run).state()
    # an existing run is replaced only with --overwrite
    err = one_sentence_error(capsys, ["import", f"diffusers:{tmp_path / 'pipe'}", "--out", str(run)])
    assert "already exists" in err
    assert main(["import", f"diffusers:{tmp_path / 'pipe'}", "--out", str(run), "--overwrite"]) == 0


def test_bin_weights_and_old_attention_names(tmp_path):
    """A .bin state dict (read with weights_only=True) whose attention projections carry diffusers
    0.0.x's names (query, key, value, proj_attn), as the google DDPMs were first written."""
    from ddpm import load_run
    from ddpm.interop import import_diffusers

    unet, _ = save_pipeline(tmp_path / "pipe", TINY, safe=False)
    path = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.bin"
    new = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for k, v in torch.load(path, weights_only=True).items():
        for now, old in new.items():
            if "attentions" in k and f".{now}." in k:
                k = k.replace(f".{now}.", f".{old}.")
        state[k] = v
    assert any(".query." in k for k in state)
    torch.save(state, path)
    assert same_output(load_run(import_diffusers(tmp_path / "pipe", tmp_path / "run")), unet)


class Payload:
    """Unpickled by a plain torch.load, it would create the file ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bin_that_runs_code_is_refused(tmp_path, capsys):
    save_pipeline(tmp_path / "pipe", TINY, safe=False)
    marker = tmp_path / "ran.txt"
    torch.save({"conv_in.weight": Payload(marker)}, tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.bin")
    err = one_sentence_error(capsys, ["import", f"diffusers:{tmp_path / 'pipe'}", "--out", str(tmp_path / "run")])
    assert "weights_only=True" in err and not marker.exists() and not (tmp_path / "run").exists()


def test_bare_unet_folder_takes_scheduler_settings(tmp_path, capsys):
    from ddpm.runs import read_checkpoint

    save_pipeline(tmp_path / "pipe", TINY)
    (tmp_path / "pipe" / "scheduler" / "scheduler_config.json").unlink()
    unet_dir = f"diffusers:{tmp_path / 'pipe' / 'unet'}"
    err = one_sentence_error(capsys, ["import", unet_dir, "--out", str(tmp_path / "r")])
    assert "--scheduler" in err
    assert main(["import", unet_dir, "--out", str(tmp_path / "r"),
                 "--scheduler", "variance_type=fixed_large,prediction_type=v_prediction,clip_sample=false"]) == 0
    config = read_checkpoint(tmp_path / "r").config
    assert (config.diffusion.variance_type, config.diffusion.objective, config.sample.clip) == ("fixed_large", "pred_v", "none")


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage, words", [
    ("empty", "holds no UNet"),
    ("no-such-block", "cannot build"),
    ("scheduler-type", "does not cover"),
    ("beta-schedule", "not covered"),
    ("weights-misfit", "do not fit"),
    ("learned-mismatch", "does not fit a network"),
    ("prefix", "unknown import source"),
    ("neither", "neither a folder nor a Hub id"),
])
def test_bad_input_is_one_sentence(tmp_path, capsys, damage, words):
    pipe = tmp_path / "pipe"
    save_pipeline(pipe, TINY)
    source = f"diffusers:{pipe}"
    if damage == "empty":
        source = f"diffusers:{tmp_path / 'empty'}"
        (tmp_path / "empty").mkdir()
    elif damage == "no-such-block":
        edit_json(pipe / "unet" / "config.json", down_block_types=["DownBlock2D", "NoSuchBlock2D"])
    elif damage == "scheduler-type":
        edit_json(pipe / "scheduler" / "scheduler_config.json", _class_name="EulerDiscreteScheduler")
    elif damage == "beta-schedule":
        edit_json(pipe / "scheduler" / "scheduler_config.json", beta_schedule="exp")
    elif damage == "weights-misfit":
        edit_json(pipe / "unet" / "config.json", block_out_channels=[32, 64])
    elif damage == "learned-mismatch":
        edit_json(pipe / "scheduler" / "scheduler_config.json", variance_type="learned_range")
    elif damage == "prefix":
        source = f"hf:{pipe}"
    elif damage == "neither":
        source = "diffusers:no/such/folder"
    err = one_sentence_error(capsys, ["import", source, "--out", str(tmp_path / "runs" / "x")])
    assert words in err
    assert not (tmp_path / "runs" / "x").exists()


def test_without_diffusers_one_sentence_names_the_install(tmp_path, capsys, monkeypatch):
    from ddpm.interop import import_diffusers

    save_pipeline(tmp_path / "pipe", TINY)
    run = import_diffusers(tmp_path / "pipe", tmp_path / "run")
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers now raises ImportError
    err = one_sentence_error(capsys, ["sample", "--run", str(run), "--n", "1", "--steps", "1", "--out", str(tmp_path / "s")])
    assert 'pip install "torch-ddpm[diffusers]"' in err


# ---- the Hub, served on 127.0.0.1 and reached through huggingface_hub's endpoint setting --------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubHandler(BaseHTTPRequestHandler):
    """The two routes hf_hub_download uses: HEAD and GET /{owner}/{name}/resolve/{revision}/{path}."""

    def __init__(self, *args, repos, **kwargs):
        self.repos = repos
        super().__init__(*args, **kwargs)

    def log_message(self, *args):
        pass

    def _answer(self, body: bool):
        parts = self.path.split("?")[0].strip("/").split("/")
        repo, rest = "/".join(parts[:2]), parts[2:]
        if repo not in self.repos or len(rest) < 3 or rest[0] != "resolve":
            return self._error("RepoNotFound")
        if rest[1] not in ("main", COMMIT):
            return self._error("RevisionNotFound")
        path = self.repos[repo] / "/".join(rest[2:])
        if not path.is_file():
            return self._error("EntryNotFound")
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, code):
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self._answer(False)

    def do_GET(self):
        self._answer(True)


@pytest.fixture
def hub(tmp_path):
    """A Hub on 127.0.0.1 serving one repository, google-test/ddpm-tiny (a pipeline folder)."""
    unet, _ = save_pipeline(tmp_path / "served", TINY, GOOGLE_SCHEDULER)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(HubHandler, repos={"google-test/ddpm-tiny": tmp_path / "served"}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", unet, server
    server.shutdown()
    server.server_close()


def test_hub_download_through_huggingface_hub(tmp_path, hub):
    from ddpm import load_run
    from ddpm.interop import import_diffusers

    endpoint, unet, server = hub
    cache = tmp_path / "hf-cache"
    run = import_diffusers("google-test/ddpm-tiny", tmp_path / "run", cache_dir=cache, endpoint=endpoint)
    record = json.loads((run / "import.json").read_text())
    assert (record["hub_id"], record["revision"], record["commit"]) == ("google-test/ddpm-tiny", "main", COMMIT)
    served = tmp_path / "served" / "unet" / "diffusion_pytorch_model.safetensors"
    assert record["weights_sha256"] == hashlib.sha256(served.read_bytes()).hexdigest()
    assert (cache / "models--google-test--ddpm-tiny" / "snapshots" / COMMIT / "unet" / "config.json").is_file()
    assert same_output(load_run(run), unet)
    # the same commit by its hash; then, with the Hub gone, from huggingface_hub's cache alone
    import_diffusers("google-test/ddpm-tiny", tmp_path / "run2", revision=COMMIT, cache_dir=cache, endpoint=endpoint)
    server.shutdown()
    server.server_close()
    again = import_diffusers("google-test/ddpm-tiny", tmp_path / "run3", cache_dir=cache, endpoint=endpoint)
    assert json.loads((again / "import.json").read_text())["commit"] == COMMIT


def test_hub_unknown_id_revision_and_offline(tmp_path, hub):
    from ddpm.errors import ConfigError
    from ddpm.interop import import_diffusers

    endpoint, _, server = hub
    cache = tmp_path / "hf-cache"
    with pytest.raises(ConfigError, match="there is no model 'google-test/nope' on the Hub"):
        import_diffusers("google-test/nope", tmp_path / "r", cache_dir=cache, endpoint=endpoint)
    with pytest.raises(ConfigError, match="has no revision 'v9'"):
        import_diffusers("google-test/ddpm-tiny", tmp_path / "r", revision="v9", cache_dir=cache, endpoint=endpoint)
    server.shutdown()
    server.server_close()
    with pytest.raises(ConfigError, match="could not download google-test/ddpm-tiny from the Hub"):
        import_diffusers("google-test/ddpm-tiny", tmp_path / "r", cache_dir=cache, endpoint=endpoint)
    assert not (tmp_path / "r").exists()


def test_a_pipeline_s_scheduler_is_the_component_whose_class_is_a_scheduler():
    from ddpm.interop.source import component, scheduler_component

    index = {"_class_name": "DDPMPipeline", "_diffusers_version": "0.0.4", "unet": ["diffusers", "UNet2DModel"],
             "noise": ["diffusers", "DDIMScheduler"]}
    assert scheduler_component(index) == "noise" and component(index, ("UNet2DModel",)) == "unet"
    assert scheduler_component({"unet": ["diffusers", "UNet2DModel"], "odd": ["diffusers", None]}) is None
