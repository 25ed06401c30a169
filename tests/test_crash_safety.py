"""`ddpm train` killed with SIGKILL at random moments: the run directory always stays usable.

Each trial starts the real command on the built-in digits with a tiny model that writes a
checkpoint every step or two, and kills it after a seeded random delay: during start-up, in the
middle of training, or right after a checkpoint directory starts being written (the test watches
for ``.tmp-step_*``). After each kill:

- every complete checkpoint loads fully and holds exactly the weights an uninterrupted run had at
  that step (so nothing half-written was ever taken for a checkpoint), and the latest one is what
  ``read_checkpoint`` picks; leftover hidden ``.tmp-*`` directories are refused even when named;
- at most ``save_every`` steps are lost (metrics.csv shows how far the run had come);
- for a few trials, ``ddpm train --resume`` is not refused by the dead process's lock, continues
  from the latest checkpoint to the same weights as an uninterrupted run, removes the leftovers,
  and leaves a metrics.csv with each step exactly once.

Also: a live run refuses a second writer, and a write error while saving (a file size limit,
as a full disk gives) keeps the previous checkpoint and stops with one sentence.
"""

from __future__ import annotations

import csv
import os
import random
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ddpm.cli import main
from ddpm.errors import CheckpointError
from ddpm.runs.build import build_diffusion
from ddpm.runs.checkpoint import list_checkpoints, load_model_weights, read_checkpoint

TINY = ["--dataset", "digits", "--dim", "8", "--dim-mults", "1,2", "--attn-heads", "2", "--attn-dim-head", "8", "--timesteps", "20",
        "--batch-size", "8", "--sampler", "ddim", "--steps", "4", "--num-samples", "4", "--no-tensorboard",
        "--log-every", "1", "--sample-every", "0", "--warmup-steps", "2"]
REFERENCE_STEPS = 30  # the uninterrupted run; no trial gets this far (kills come by step ~16)
# when to kill: a random delay after the start; a random delay after the run directory appears;
# right after the k-th metrics row; right after the k-th checkpoint directory appears
TRIALS = [("start-up", 3), ("run directory made", 3), ("training", 6), ("checkpoint write", 10)]
RESUMED = 4  # trials that are resumed (each costs a short training run)


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _spawn(runs: Path, name: str, *extra: str, **popen) -> subprocess.Popen:
    log = open(runs.parent / f"{name}.log", "wb")
    cmd = [sys.executable, "-m", "ddpm", "train", *TINY, "--runs-dir", str(runs), "--name", name, *extra]
    with log:
        return subprocess.Popen(cmd, cwd=runs.parent, stdout=log, stderr=subprocess.STDOUT, env=_env(), **popen)


@dataclass
class Trial:
    name: str
    mode: str
    save_every: int
    pid: int = 0
    killed: bool = False
    hidden_after_kill: tuple[str, ...] = ()


def _wait_for(proc: subprocess.Popen, ready) -> None:
    """Poll (every half millisecond: checkpoint writes are short) until ``ready()`` or the process ends."""
    give_up = time.monotonic() + 120
    while proc.poll() is None and not ready() and time.monotonic() < give_up:
        time.sleep(0.0005)


def _count_rows(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n") - 1
    except FileNotFoundError:
        return 0


def _run_trial(runs: Path, trial: Trial, seed: int) -> Trial:
    """Start a run, kill it when ``trial.mode`` says (seeded), and note what the kill left behind."""
    rng = random.Random(seed)
    run = runs / trial.name
    proc = _spawn(runs, trial.name, "--save-every", str(trial.save_every), "--max-steps", "1000")
    trial.pid = proc.pid
    if trial.mode == "checkpoint write":  # events, not times: robust to a slow or busy machine
        wanted, seen = rng.randint(1, 10), set()

        def ready():
            try:
                seen.update(n for n in os.listdir(run / "checkpoints") if n.startswith(".tmp-step_"))
            except FileNotFoundError:
                pass
            return len(seen) >= wanted

        _wait_for(proc, ready)
        time.sleep(rng.choice([0, 0, rng.uniform(0, 0.01)]))  # now and then a little later: rename, pruning
    elif trial.mode == "training":
        wanted = rng.randint(1, 12)
        _wait_for(proc, lambda: _count_rows(run / "metrics.csv") >= wanted)
        time.sleep(rng.uniform(0, 0.05))
    else:
        if trial.mode == "run directory made":
            _wait_for(proc, run.exists)
        try:
            proc.wait(timeout=rng.uniform(0, 1.0 if trial.mode == "start-up" else 0.3))
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        trial.killed = True
    proc.wait()
    ckdir = runs / trial.name / "checkpoints"
    trial.hidden_after_kill = tuple(sorted(n for n in os.listdir(ckdir) if n.startswith("."))) if ckdir.is_dir() else ()
    return trial


def _metrics(run: Path) -> list[dict[str, float]]:
    """The complete rows of metrics.csv (a crash may cut the last line short)."""
    rows = []
    with open(run / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                rows.append({k: float(v) for k, v in row.items()})
            except (TypeError, ValueError):  # a cut line: missing fields are None
                continue
    return rows


def _load_fully(ckpt_dir: Path, reference: Path) -> int:
    """Load a checkpoint as resume and sample would, compare it with the uninterrupted run; its step."""
    ckpt = read_checkpoint(ckpt_dir)
    assert ckpt.path == ckpt_dir and ckpt_dir.name == f"step_{ckpt.step:08d}"
    state = ckpt.state()
    assert state["step"] == ckpt.step and state["ema_updates"] == ckpt.step
    same_step = read_checkpoint(reference / "checkpoints" / ckpt_dir.name)
    for ema in (False, True):
        weights = ckpt.weights(ema=ema)
        load_model_weights(build_diffusion(ckpt.config).model, weights, ckpt_dir)
        expected = same_step.weights(ema=ema)
        assert weights.keys() == expected.keys()
        assert all(torch.equal(weights[k], expected[k]) for k in weights), f"{ckpt_dir} differs from the uninterrupted run"
    return ckpt.step


@pytest.fixture()
def one_thread():
    """In-process training with one thread, as the subprocesses, so that the weights match bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_sigkill_at_random_moments_never_damages_a_run(tmp_path, capsys, one_thread):
    runs = tmp_path / "runs"
    runs.mkdir()
    trials = [Trial(f"{mode.split()[0]}{i}", mode, save_every=1 + i % 2) for mode, n in TRIALS for i in range(n)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        reference = pool.submit(lambda: _spawn(runs, "reference", "--save-every", "1", "--keep-last", "1000",
                                               "--max-steps", str(REFERENCE_STEPS)).wait())
        done = list(pool.map(lambda a: _run_trial(runs, *a), [(t, 1000 + i) for i, t in enumerate(trials)]))
        assert reference.result() == 0, (tmp_path / "reference.log").read_text()
    ref = runs / "reference"
    assert len(list_checkpoints(ref)) == REFERENCE_STEPS

    killed = [t for t in done if t.killed]
    assert len(killed) >= 20, [(t.name, t.killed) for t in done]
    outcomes = {"no run directory": 0, "no checkpoint yet": 0, "checkpoints": 0}
    resumable = []
    for t in done:
        run = runs / t.name
        if not run.exists():  # killed before the run directory was made
            outcomes["no run directory"] += 1
            continue
        found = list_checkpoints(run)
        ckdir = run / "checkpoints"
        hidden = [p for p in ckdir.iterdir() if p.name.startswith(".")] if ckdir.exists() else []
        for leftover in hidden:  # never taken, even when named explicitly
            with pytest.raises(CheckpointError, match="not a complete one"):
                read_checkpoint(leftover)
        rows = _metrics(run) if (run / "metrics.csv").exists() else []
        assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
        if not found:
            outcomes["no checkpoint yet"] += 1
            with pytest.raises(CheckpointError, match="holds no complete torch-ddpm checkpoint"):
                read_checkpoint(run)
            assert len(rows) <= t.save_every  # the first checkpoint was due at step save_every
            continue
        outcomes["checkpoints"] += 1
        steps = [_load_fully(p, ref) for p in found]
        latest = read_checkpoint(run)
        assert latest.path == found[-1] and latest.step == max(steps)
        assert 0 <= len(rows) - latest.step <= t.save_every, (t, len(rows), latest.step)
        if t.killed:
            assert (run / ".lock").read_text() == f"process {t.pid}"  # it died holding the lock
            resumable.append(t)

    # the kills did land where they were meant to
    summary = (outcomes, [(t.name, t.killed, t.hidden_after_kill) for t in done])
    assert outcomes["no checkpoint yet"] + outcomes["no run directory"] >= 2, summary
    assert outcomes["checkpoints"] >= 10, summary
    mid_write = [t for t in done if any(n.startswith(".tmp-step_") for n in t.hidden_after_kill)]
    assert len(mid_write) >= 3, summary

    # resume some: those killed mid-write first, then the others
    chosen = ([t for t in mid_write if t in resumable] + [t for t in resumable if t not in mid_write])[:RESUMED]
    for t in chosen:
        run = runs / t.name
        start = read_checkpoint(run).step
        target = start + 2
        capsys.readouterr()
        assert main(["train", "--resume", str(run), "--max-steps", str(target)]) == 0, capsys.readouterr().err
        assert f"done: reached max_steps at step {target}" in capsys.readouterr().out
        assert _load_fully(list_checkpoints(run)[-1], ref) == target
        assert [r["step"] for r in _metrics(run)] == list(range(1, target + 1))
        assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    # a run killed before its first checkpoint says so in one sentence
    empty = next(t for t in done if (runs / t.name).exists() and not list_checkpoints(runs / t.name))
    assert main(["train", "--resume", str(runs / empty.name)]) == 2
    assert capsys.readouterr().err == f"ddpm: error: {runs / empty.name} holds no complete torch-ddpm checkpoint\n"


def test_a_live_run_refuses_a_second_writer_and_a_killed_one_does_not(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    run = runs / "busy"
    proc = _spawn(runs, "busy", "--save-every", "2", "--max-steps", "100000", "--no-compile")  # not auto: a long run
    try:
        give_up = time.monotonic() + 120
        while not list_checkpoints(run) and proc.poll() is None and time.monotonic() < give_up:
            time.sleep(0.02)
        assert proc.poll() is None and list_checkpoints(run), (runs.parent / "busy.log").read_text()
        in_use = f"ddpm: error: run directory {run} is in use by process {proc.pid}; wait for it to finish or stop it first\n"
        capsys.readouterr()
        assert main(["train", "--resume", str(run), "--max-steps", "4"]) == 2
        assert capsys.readouterr().err == in_use
        # --overwrite must not delete a run that is being written
        assert main(["train", *TINY, "--runs-dir", str(runs), "--name", "busy", "--overwrite"]) == 2
        assert capsys.readouterr().err == in_use
        assert list_checkpoints(run) and proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the lock file still names the dead process, but the kernel released its lock
    assert (run / ".lock").read_text() == f"process {proc.pid}"
    step = read_checkpoint(run).step
    assert main(["train", "--resume", str(run), "--max-steps", str(step + 1)]) == 0
    assert read_checkpoint(run).step == step + 1


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("failing", ["model.safetensors", "state.pt"])
def test_a_write_error_while_saving_keeps_the_previous_checkpoint(tmp_path, capsys, failing):
    """A file size limit (RLIMIT_FSIZE: writes fail with EFBIG, as with ENOSPC on a full disk) makes
    the second checkpoint's ``failing`` file fail to write: the run stops with one sentence."""
    runs = tmp_path / "runs"
    assert main(["train", *TINY, "--runs-dir", str(runs), "--name", "r", "--save-every", "2", "--max-steps", "2"]) == 0
    run = runs / "r"
    first = list_checkpoints(run)[-1]
    sizes = {p.name: p.stat().st_size for p in first.iterdir()}
    assert sizes["model.safetensors"] < sizes["state.pt"]
    small, large = sizes["model.safetensors"], sizes["state.pt"]
    limit = small // 2 if failing == "model.safetensors" else (small + large) // 2
    out = subprocess.run([sys.executable, "-m", "ddpm", "train", "--resume", str(run), "--max-steps", "6"],
                         cwd=tmp_path, capture_output=True, text=True, env=_env(), preexec_fn=_limit_file_size(limit),
                         timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr == (
        f"ddpm: error: could not write the checkpoint of step 4 in {run / 'checkpoints'} (File too large); "
        f"earlier checkpoints are intact: free some space, then continue with ddpm train --resume {run}\n"
    )
    assert [p.name for p in (run / "checkpoints").iterdir()] == [first.name]  # no leftovers
    assert read_checkpoint(run).step == 2 and read_checkpoint(run).state()["step"] == 2
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--max-steps", "4"]) == 0
    assert read_checkpoint(run).step == 4
