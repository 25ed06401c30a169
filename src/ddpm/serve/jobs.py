"""Generation jobs for ``ddpm serve``: one at a time per model, a bounded wait list, cancelling.

Each model (a run, by name) has one worker thread, so its jobs run one after another in the order
they came and never on the event loop. A job reports to the HTTP response that streams it through
an asyncio queue; cancelling it (the client went away, the Cancel button, ``DELETE /api/jobs/ID``)
sets a flag that the work checks at every sampler step (:meth:`Job.check`), so a running sampler
stops at the next step and the model is free for the next job; a job still waiting never starts.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import traceback
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from ..errors import DDPMError

TERMINAL = ("done", "cancelled", "error")
"""The events that end a job's stream."""

Work = Callable[["Job"], dict]
"""What a job does: called in the model's worker thread with the job (to emit progress and to
check for cancelling); returns the data of the final ``done`` event."""


class QueueFull(DDPMError):
    """A model already has a running job and as many waiting as allowed (HTTP 429)."""


class JobCancelled(Exception):
    """Raised inside a job's work at a step boundary once the job has been cancelled."""


class Job:
    """One unit of work on one model, and the events it has produced for its stream."""

    def __init__(self, model: str, loop: asyncio.AbstractEventLoop, ahead: int):
        self.id = secrets.token_hex(8)
        self.model = model
        self.ahead = ahead  # jobs before this one on its model when it was queued
        self.state = "queued"  # queued, running, done, cancelled, error
        self._loop = loop
        self._events: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
        self._cancel = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` if the job has been cancelled (call it between steps)."""
        if self._cancel.is_set():
            raise JobCancelled

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Queue an event for the job's stream; safe from any thread."""
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (event, data))
        except RuntimeError:  # the event loop has closed: the server is stopping, nobody listens
            pass

    async def next_event(self, timeout: float) -> tuple[str, dict] | None:
        """The next event, or None when none came within ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except asyncio.TimeoutError:
            return None


class JobManager:
    """Per model: one worker thread running one job at a time, and at most ``max_waiting`` more
    jobs waiting; :meth:`submit` refuses beyond that with :class:`QueueFull`."""

    def __init__(self, max_waiting: int = 4, keep_finished: int = 20):
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be at least 0; got {max_waiting}")
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._workers: dict[str, ThreadPoolExecutor] = {}
        self._pending: dict[str, list[Job]] = {}  # running first, then waiting, per model
        self._futures: dict[str, Future] = {}
        self._jobs: dict[str, Job] = {}
        self.finished: deque[dict] = deque(maxlen=keep_finished)

    def submit(self, model: str, work: Work, loop: asyncio.AbstractEventLoop | None = None) -> Job:
        """Queue ``work`` on ``model``'s worker; call from the event loop (or pass ``loop``)."""
        loop = loop or asyncio.get_running_loop()
        with self._lock:
            pending = self._pending.setdefault(model, [])
            if len(pending) > self.max_waiting:
                raise QueueFull(
                    f"run {model!r} is busy: one generation is running and {len(pending) - 1} waiting, the most this "
                    "server allows; try again when one has finished"
                )
            job = Job(model, loop, ahead=len(pending))
            worker = self._workers.get(model)
            if worker is None:
                worker = self._workers[model] = ThreadPoolExecutor(1, thread_name_prefix=f"ddpm-serve-{model}")
            pending.append(job)
            self._jobs[job.id] = job
            future = worker.submit(self._run, job, work)
            self._futures[job.id] = future
        future.add_done_callback(lambda f, job=job: self._finish(job, f))
        return job

    def _run(self, job: Job, work: Work) -> None:
        if job.cancelled:
            job.state = "cancelled"
            job.emit("cancelled", {"job": job.id})
            return
        job.state = "running"
        try:
            result = work(job)
        except JobCancelled:
            job.state = "cancelled"
            job.emit("cancelled", {"job": job.id})
        except DDPMError as err:
            job.state = "error"
            job.emit("error", {"job": job.id, "message": str(err)})
        except Exception as err:  # noqa: BLE001 - the stream must end with a sentence, whatever failed
            job.state = "error"
            text = str(err)
            if isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text):
                message = "out of memory; ask for fewer images, or use a smaller model"
            else:
                traceback.print_exc()
                message = f"generation failed ({type(err).__name__}: {text})"
            job.emit("error", {"job": job.id, "message": message})
        else:
            job.state = "done"
            job.emit("done", {"job": job.id, **result})

    def _finish(self, job: Job, future: Future) -> None:
        if future.cancelled():  # cancelled while waiting: the worker never saw it
            job.state = "cancelled"
            job.emit("cancelled", {"job": job.id})
        with self._lock:
            pending = self._pending.get(job.model, [])
            if job in pending:
                pending.remove(job)
            self._jobs.pop(job.id, None)
            self._futures.pop(job.id, None)
            self.finished.append({"job": job.id, "run": job.model, "state": job.state})

    def cancel(self, job_id: str) -> bool:
        """Cancel a waiting or running job; False if there is no such unfinished job."""
        with self._lock:
            job = self._jobs.get(job_id)
            future = self._futures.get(job_id)
        if job is None:
            return False
        job.cancel()
        if future is not None:
            future.cancel()  # succeeds only while it waits; a running job stops at its next step
        return True

    def status(self) -> dict[str, Any]:
        """Running and waiting job ids per model, and the outcome of the latest finished jobs."""
        with self._lock:
            models = {
                m: {"running": next((j.id for j in jobs if j.state == "running"), None),
                    "waiting": [j.id for j in jobs if j.state == "queued"]}
                for m, jobs in self._pending.items() if jobs
            }
            return {"runs": models, "finished": list(self.finished)}

    def shutdown(self) -> None:
        """Cancel every job and stop the workers (running samplers stop at their next step)."""
        with self._lock:
            jobs = list(self._jobs)
            workers = list(self._workers.values())
        for job_id in jobs:
            self.cancel(job_id)
        for worker in workers:
            worker.shutdown(wait=False, cancel_futures=True)
