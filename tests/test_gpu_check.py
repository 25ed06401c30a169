"""benchmarks/gpu_check.py without a GPU: it refuses in one sentence, and its CPU rehearsal runs
every check that does not need CUDA and prints the table (the GPU run itself is not a test)."""

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_it_refuses_cleanly_without_cuda(monkeypatch, capsys):
    gpu_check = _script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith("gpu_check: PyTorch ") and "sees no CUDA GPU" in out.err
    assert len(out.err.strip().splitlines()) == 1


def test_the_cpu_rehearsal_runs_the_checks_and_prints_one_table(tmp_path, capsys):
    gpu_check = _script()
    code = gpu_check.main(["--cpu-rehearsal", "--skip", "cuda tests", "--skip-throughput", "--json", str(tmp_path / "t.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| check")}
    assert rows == {"cuda tests": "skipped", "fused AdamW": "pass", "bf16 autocast": "pass", "channels_last": "pass",
                    "SDPA flash": "skipped", "DDP with NCCL": "skipped", "ddpm train on CUDA": "pass"}
    assert "the flash-attention kernel is CUDA only" in out and "3 steps streamed" in out
    assert [r["check"] for r in json.loads((tmp_path / "t.json").read_text())] == list(rows)
