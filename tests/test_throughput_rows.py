"""benchmarks/throughput.py's helpers: its rows of ours train with the loop's own step (not a copy
that could drift from it), and its timer interleaves the rows. The timings themselves are not tests."""

import sys
from pathlib import Path

import pytest
import torch

from ddpm.training.step import Stepper

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import each other as top-level modules
    import measure
    import throughput_rows

    yield measure, throughput_rows
    for name in ("measure", "throughput_rows"):
        sys.modules.pop(name, None)


def test_our_row_steps_with_the_training_loops_stepper(bench, monkeypatch):
    _, rows = bench
    calls = []
    real = Stepper.step
    monkeypatch.setattr(Stepper, "step", lambda self, micro_batch: calls.append(self) or real(self, micro_batch))
    net = rows.Net("tiny", 1, 8, 4, dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8))
    step, model, _ = rows.build_train(rows.TrainSpec("tiny", "ours", net, optimizer="foreach"), torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    step()
    step()
    assert len(calls) == 2 and calls[0].model is model and calls[0].ema.updates == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_rows_are_timed_interleaved(bench):
    measure, _ = bench
    order = []
    times = measure.interleaved({k: (lambda k=k: order.append(k)) for k in "abc"}, 2, torch.device("cpu"), {"b": 2})
    assert order == ["a", "b", "b", "c", "a", "b", "b", "c"]
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2, "c": 2}
