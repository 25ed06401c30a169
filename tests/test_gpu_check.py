"""benchmarks/gpu_check.py without a GPU: it refuses in one sentence, and its CPU rehearsal runs
every check that does not need CUDA and prints the table (the GPU run itself is not a test)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run the script itself")
def test_it_refuses_cleanly_without_cuda():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("gpu_check: PyTorch ") and "sees no CUDA GPU" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_the_cpu_rehearsal_runs_the_checks_and_prints_one_table(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--cpu-rehearsal", "--skip", "cuda tests", "--skip-throughput",
                          "--json", str(tmp_path / "t.json")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in out.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| check")}
    assert rows == {"cuda tests": "skipped", "fused AdamW": "pass", "bf16 autocast": "pass", "channels_last": "pass",
                    "SDPA flash": "skipped", "DDP with NCCL": "skipped", "ddpm train on CUDA": "pass"}
    assert "the flash-attention kernel is CUDA only" in out.stdout and "3 steps streamed" in out.stdout
    assert (tmp_path / "t.json").read_text().count('"check"') == 7
