"""ddpm serve's job queue: one job at a time per model, a bounded wait list, cancelling, errors."""

import asyncio
import threading
import time

import pytest

from ddpm.errors import ConfigError
from ddpm.serve.jobs import JobManager, QueueFull


async def drain(job, timeout=10.0):
    """Every event of a job until its terminal one."""
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = await job.next_event(0.05)
        if event is not None:
            events.append(event)
            if event[0] in ("done", "cancelled", "error"):
                return events
    raise AssertionError(f"no terminal event; got {events}")


def test_one_job_at_a_time_per_model_in_order():
    running, peak, order = [0], [0], []
    lock = threading.Lock()

    def work_for(name):
        def work(job):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            job.emit("step", {"name": name})
            with lock:
                running[0] -= 1
                order.append(name)
            return {"name": name}
        return work

    async def main():
        manager = JobManager(max_waiting=3)
        jobs = [manager.submit("a", work_for(i)) for i in range(3)]
        assert [j.ahead for j in jobs] == [0, 1, 2]
        results = [await drain(j) for j in jobs]
        manager.shutdown()
        return jobs, results, manager

    jobs, results, manager = asyncio.run(main())
    assert peak[0] == 1 and order == [0, 1, 2]
    for i, events in enumerate(results):
        assert events == [("step", {"name": i}), ("done", {"job": jobs[i].id, "name": i})]
    assert [f["state"] for f in manager.finished] == ["done"] * 3
    assert manager.status()["runs"] == {}


def test_full_queue_is_refused_and_models_are_separate():
    gate = threading.Event()

    def blocked(job):
        gate.wait(5)
        return {}

    async def main():
        manager = JobManager(max_waiting=1)
        first = manager.submit("a", blocked)
        second = manager.submit("a", blocked)
        with pytest.raises(QueueFull, match=r"run 'a' is busy: one generation is running and 1 waiting"):
            manager.submit("a", blocked)
        other = manager.submit("b", lambda job: {"ok": True})  # another model has its own worker
        assert (await drain(other))[-1] == ("done", {"job": other.id, "ok": True})
        await asyncio.sleep(0.05)
        status = manager.status()["runs"]
        assert status["a"] == {"running": first.id, "waiting": [second.id]}
        gate.set()
        assert (await drain(first))[-1][0] == "done" and (await drain(second))[-1][0] == "done"
        manager.submit("a", blocked)  # room again
        manager.shutdown()

    asyncio.run(main())


def test_cancel_running_and_waiting_jobs():
    started = threading.Event()
    steps = []

    def stepping(job):
        started.set()
        for i in range(500):
            job.check()  # where a sampler's callback checks
            steps.append(i)
            time.sleep(0.01)
        return {}

    def never(job):
        raise AssertionError("a cancelled waiting job must not run")

    async def main():
        manager = JobManager(max_waiting=2)
        running = manager.submit("a", stepping)
        waiting = manager.submit("a", never)
        await asyncio.to_thread(started.wait, 5)
        assert manager.cancel(waiting.id) and manager.cancel(running.id)
        assert (await drain(waiting))[-1] == ("cancelled", {"job": waiting.id})
        assert (await drain(running))[-1] == ("cancelled", {"job": running.id})
        assert not manager.cancel(running.id)  # finished: nothing to cancel
        assert not manager.cancel("no-such-job")
        manager.shutdown()
        return manager, [running.id, waiting.id]

    manager, ids = asyncio.run(main())
    assert len(steps) < 500
    assert sorted(f["job"] for f in manager.finished) == sorted(ids)
    assert [f["state"] for f in manager.finished] == ["cancelled", "cancelled"]


def test_errors_end_the_stream_with_one_sentence(capsys):
    def bad_setting(job):
        raise ConfigError("steps must be an integer from 1 to 20; got 0")

    def bug(job):
        raise KeyError("boom")

    def oom(job):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    async def main():
        manager = JobManager()
        out = [(await drain(manager.submit("a", fn)))[-1] for fn in (bad_setting, bug, oom)]
        manager.shutdown()
        return out

    (e1, d1), (e2, d2), (e3, d3) = asyncio.run(main())
    assert e1 == e2 == e3 == "error"
    assert d1["message"] == "steps must be an integer from 1 to 20; got 0"
    assert d2["message"] == "generation failed (KeyError: 'boom')"
    assert d3["message"] == "out of memory; ask for fewer images, or use a smaller model"
    assert "KeyError" in capsys.readouterr().err  # a bug's traceback goes to the server's log


def test_shutdown_cancels_everything():
    started = threading.Event()

    def long(job):
        started.set()
        while True:
            job.check()
            time.sleep(0.01)

    async def main():
        manager = JobManager(max_waiting=1)
        a, b = manager.submit("a", long), manager.submit("a", long)
        await asyncio.to_thread(started.wait, 5)
        manager.shutdown()
        return [(await drain(j))[-1][0] for j in (a, b)]

    assert asyncio.run(main()) == ["cancelled", "cancelled"]
