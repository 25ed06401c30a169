import multiprocessing
import os

import pytest

from ddpm.errors import ConfigError
from ddpm.runs.run_dir import METRICS, MetricsLog, RunLock, new_run_dir


def test_new_run_dir_never_clobbers(tmp_path):
    first = new_run_dir(tmp_path, "exp", "digits")
    (first / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="already exists; choose another --name"):
        new_run_dir(tmp_path, "exp", "digits")
    assert (first / "precious.txt").read_text() == "keep me"
    again = new_run_dir(tmp_path, "exp", "digits", overwrite=True)
    assert again == first and not (first / "precious.txt").exists()


def test_generated_names_are_unique(tmp_path):
    a = new_run_dir(tmp_path, "", "folder:/some/where")
    b = new_run_dir(tmp_path, "", "folder:/some/where")
    assert a != b and a.name.startswith("folder-") and b.name.startswith(a.name)


def _try_lock(path, queue):
    try:
        RunLock(path).acquire()
        queue.put("acquired")
    except ConfigError as err:
        queue.put(str(err))


def test_lock_refuses_a_second_writer_and_dies_with_its_process(tmp_path):
    ctx = multiprocessing.get_context("fork")
    lock = RunLock(tmp_path).acquire()
    q = ctx.Queue()
    p = ctx.Process(target=_try_lock, args=(tmp_path, q))
    p.start()
    p.join()
    message = q.get()
    assert "is in use by process" in message and str(os.getpid()) in message
    lock.release()
    # a process that takes the lock and exits without releasing it leaves nothing stuck
    p = ctx.Process(target=_try_lock, args=(tmp_path, q))
    p.start()
    p.join()
    assert q.get() == "acquired"
    RunLock(tmp_path).acquire().release()


def test_metrics_log_truncates_rows_after_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path)
    for step in (10, 20, 30):
        log.append({k: float(step) for k in METRICS})
    log.close()
    with open(path, "a") as fh:
        fh.write("40,0.5,")  # a line cut short by a crash
    resumed = MetricsLog(path, resume_step=20)
    assert [r["step"] for r in resumed.rows] == [10, 20]
    resumed.append({k: 25.0 for k in METRICS})
    resumed.close()
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(METRICS)
    assert [line.split(",")[0] for line in lines[1:]] == ["10", "20", "25"]


def test_a_discarded_start_leaves_the_disk_as_it_was(tmp_path):
    from ddpm.runs.run_dir import StartingRun

    fresh = StartingRun(tmp_path / "new" / "runs", "exp", "digits")
    assert fresh.path.is_dir() and (fresh.path / ".lock").exists()
    (fresh.path / "config.toml").write_text("made by the failed start")
    fresh.discard()
    assert not (tmp_path / "new").exists()  # the run and the folders it made above it

    old = new_run_dir(tmp_path, "exp", "digits")
    (old / "precious.txt").write_text("keep me")
    (tmp_path / "other.txt").write_text("not a run")
    with pytest.raises(ConfigError, match="already exists"):
        StartingRun(tmp_path, "exp", "digits")
    replacing = StartingRun(tmp_path, "exp", "digits", overwrite=True)
    assert replacing.path == old and not (old / "precious.txt").exists()  # the old run is set aside, not gone
    with pytest.raises(ConfigError, match="in use"):  # and held: no other process may start in it
        StartingRun(tmp_path, "exp", "digits", overwrite=True)
    replacing.discard()
    assert (old / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "other.txt"]

    replacing = StartingRun(tmp_path, "exp", "digits", overwrite=True)
    replacing.keep()  # the start went through: now the old run goes
    replacing.discard()  # no effect once kept
    assert replacing.path.is_dir() and not (old / "precious.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "other.txt"]
    replacing.release()


def test_overwrite_never_sets_aside_a_run_in_use(tmp_path):
    from ddpm.runs.run_dir import StartingRun

    run = new_run_dir(tmp_path, "busy", "digits")
    with RunLock(run), pytest.raises(ConfigError, match="is in use by process"):
        StartingRun(tmp_path, "busy", "digits", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]
