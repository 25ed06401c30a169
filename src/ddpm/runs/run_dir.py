"""A run's directory: creating it without clobbering, one writer at a time, and metrics.csv."""

from __future__ import annotations

import csv
import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import IO

from ..errors import ConfigError
from ..fileio import atomic_write

METRICS = ("step", "loss", "lr", "grad_norm", "images_per_s", "elapsed_s", "nonfinite_skipped")


def _run_path(runs_dir: str | Path, name: str, dataset: str) -> Path:
    """``runs_dir/name``, or a free name made from the data set and the time if ``name`` is empty."""
    if not name:
        base = dataset.split(":")[0].replace("/", "-")
        name = f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"
        candidate, n = name, 1
        while (Path(runs_dir) / candidate).exists():
            n += 1
            candidate = f"{name}-{n}"
        name = candidate
    if "/" in name or name in (".", ".."):
        raise ConfigError(f"run name {name!r} must be a plain directory name")
    return Path(runs_dir) / name


def _refuse_existing(path: Path) -> None:
    raise ConfigError(
        f"run directory {path} already exists; choose another --name, continue it with "
        f"--resume {path}, or replace it with --overwrite"
    )


def new_run_dir(runs_dir: str | Path, name: str, dataset: str, *, overwrite: bool = False) -> Path:
    """``runs_dir/name`` (a name made from the data set and the time if empty), created empty.

    An existing run is never replaced unless ``overwrite`` is set.
    """
    path = _run_path(runs_dir, name, dataset)
    if path.exists():
        if not overwrite:
            _refuse_existing(path)
        if path.is_dir():
            # never delete a run that a live process is training in (ConfigError if it is)
            RunLock(path).acquire().release()
            shutil.rmtree(path)
        else:
            path.unlink()
    path.mkdir(parents=True)
    return path


class StartingRun:
    """The directory of a run being started, made empty and locked, that goes away again if the
    start fails: until :meth:`keep`, :meth:`discard` removes it (and the folders above it that
    it created, when empty) and puts back the run that ``overwrite`` set aside, so a start refused
    after its directory was made leaves the disk as it found it.

    The run that ``overwrite`` replaces is renamed to a hidden sibling (``.NAME.replaced-PID``),
    under its own lock, rather than deleted: it is deleted only by :meth:`keep`, once every check
    has passed, so a refused start never costs the old run.
    """

    def __init__(self, runs_dir: str | Path, name: str, dataset: str, *, overwrite: bool = False):
        path = _run_path(runs_dir, name, dataset)
        self.path = path
        self._aside: Path | None = None
        self._aside_lock: RunLock | None = None
        if os.path.lexists(path):
            if not overwrite:
                _refuse_existing(path)
            aside = path.with_name(f".{path.name}.replaced-{os.getpid()}")
            if path.is_dir() and not path.is_symlink():
                # never set aside a run that a live process is training in (ConfigError if it is);
                # the lock stays held, so none can start in it until it is deleted or put back
                self._aside_lock = RunLock(path).acquire()
            os.rename(path, aside)
            self._aside = aside
        self._made = [p for p in reversed(path.parents) if not p.exists()] + [path]
        try:
            path.mkdir(parents=True)
        except BaseException:
            self._put_back()
            raise
        try:
            self.lock = RunLock(path).acquire()
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            self._put_back()
            raise
        self._kept = False

    def keep(self) -> None:
        """The run has started: the directory stays, and a run it replaces is deleted now."""
        if self._kept:
            return
        self._kept = True
        aside, self._aside = self._aside, None
        if aside is not None:
            if aside.is_dir() and not aside.is_symlink():
                shutil.rmtree(aside)
            else:
                aside.unlink()
        self._release_aside()

    def discard(self) -> None:
        """The start failed: remove what it made and put back what it set aside."""
        if self._kept:
            return
        self._kept = True  # once only
        shutil.rmtree(self.path, ignore_errors=True)  # made empty by this start and locked since
        self.lock.release()
        self._put_back()

    def release(self) -> None:
        """The run ends (its directory stays): let another process take it."""
        self.lock.release()

    def _put_back(self) -> None:
        for p in reversed(self._made[:-1]):  # the folders above the run that this start created
            try:
                p.rmdir()  # only if empty: never anything another process put there
            except OSError:
                break
        aside, self._aside = self._aside, None
        try:
            if aside is not None:
                os.rename(aside, self.path)
        except OSError as err:
            raise ConfigError(f"the run that --overwrite would have replaced is kept as {aside} "
                              f"(putting it back failed: {err.strerror or err}); rename it to {self.path}") from None
        finally:
            self._release_aside()

    def _release_aside(self) -> None:
        if self._aside_lock is not None:
            self._aside_lock.release()
            self._aside_lock = None


class RunLock:
    """An exclusive lock on a run directory, held while a process trains in it.

    It is an OS file lock (flock) on ``.lock``: the kernel releases it when the process ends,
    however it ends, so a crash never leaves the run locked.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> "RunLock":
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise ConfigError(
                f"run directory {self.path.parent} is in use by {holder}; wait for it to finish or stop it first"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()}")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class MetricsLog:
    """Rows of metrics.csv, appended and flushed one at a time (also kept in memory for plots)."""

    def __init__(self, path: str | Path, *, resume_step: int | None = None):
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    try:
                        parsed = {k: float(row[k]) for k in METRICS if row.get(k) not in (None, "")}
                    except ValueError:
                        continue  # a line cut short by a crash
                    if len(parsed) == len(METRICS) and parsed["step"] <= resume_step:
                        self.rows.append(parsed)
        # rewrite: rows after the checkpoint we resume from are dropped, they will be redone;
        # atomically, so that a crash right now cannot lose the rows before it
        atomic_write(self.path, self._write_rows)
        self._fh = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, fieldnames=METRICS)

    def _write_rows(self, path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRICS)
            writer.writeheader()
            for row in self.rows:
                writer.writerow(_formatted(row))

    def append(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        self._writer.writerow(_formatted(row))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _formatted(row: dict[str, float]) -> dict[str, str]:
    out = {}
    for k in METRICS:
        v = row[k]
        out[k] = str(int(v)) if k in ("step", "nonfinite_skipped") else f"{v:.6g}"
    return out
