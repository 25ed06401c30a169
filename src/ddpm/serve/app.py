"""``ddpm serve``'s web application: routes only. Each checks its parameters (``params``) and calls
the library through ``catalog`` and ``work``; generation runs as a job (``jobs``) off the event loop.

API (JSON unless said otherwise; errors are ``{"error": "<one sentence>"}`` with status 400 for a
bad parameter, 403 for a foreign Host or a cross-site request (``guard``), 404 for an unknown
run, image or job, 409 for a run or data set that cannot be read, 413 for an upload over the
limit, 415 for a body of the wrong content type and 429 when a model's queue is full):

- ``GET /api/info``: version, samplers with their default steps and grids, the server's limits.
- ``GET /api/runs``: every run with its data set, size, step and conditioning.
- ``GET /api/runs/{name}/schedule``: alpha_bar and log-SNR at every t.
- ``GET /api/runs/{name}/train-images?start=0&count=24``: training images as PNG data URLs.
- ``POST /api/runs/{name}/images`` (the image file as the body): decode an upload; returns its id.
- ``GET /api/runs/{name}/forward?image=train:3&t=500&seed=0``: x_0, noise, x_t, alpha_bar, SNR.
- ``POST /api/runs/{name}/generate`` (JSON settings): a server-sent event stream ``queued``,
  ``start``, ``step``... then ``done`` (the images), ``cancelled`` or ``error``.
- ``POST /api/runs/{name}/inpaint`` (JSON: image, mask or box, RePaint's settings): the same
  kind of stream, ending with the completions (RePaint, as ``ddpm inpaint``).
- ``GET /api/jobs``, ``DELETE /api/jobs/{id}``: the queues; cancel a job.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._version import __version__
from ..errors import ConfigError, DDPMError
from ..sampling import DEFAULT_GRIDS, DEFAULT_STEPS, SAMPLERS
from .catalog import Catalog, NotFound, TooLarge
from .guard import IMAGE_TYPES, RequestGuard, UnsupportedType, require_type
from .jobs import TERMINAL, Job, JobManager, QueueFull
from .params import integer, parse_forward, parse_generate, parse_inpaint
from .work import forward_view, generation, inpainting, png_url, schedule_view, thumbnails

STATIC = Path(__file__).parent / "static"
JSON_LIMIT = 64 * 1024
NO_STORE = {"Cache-Control": "no-store"}


def status_of(err: DDPMError) -> int:
    for kind, status in ((ConfigError, 400), (NotFound, 404), (TooLarge, 413), (UnsupportedType, 415),
                         (QueueFull, 429)):
        if isinstance(err, kind):
            return status
    return 409  # a run, checkpoint or data set that cannot be read


class JobStream(StreamingResponse):
    """A job's events as server-sent events; the job is cancelled when the response ends in any
    way (finished, client gone, server stopping), which is a no-op for a finished job."""

    def __init__(self, job: Job, jobs: JobManager, heartbeat: float):
        self.job, self.jobs = job, jobs
        super().__init__(self.events(heartbeat), media_type="text/event-stream",
                         headers={**NO_STORE, "X-Accel-Buffering": "no"})

    async def events(self, heartbeat: float):
        yield sse("queued", {"job": self.job.id, "ahead": self.job.ahead})
        while True:
            event = await self.job.next_event(heartbeat)
            if event is None:  # a comment line keeps the connection alive and finds a departed client
                yield ": waiting\n\n"
                continue
            yield sse(*event)
            if event[0] in TERMINAL:
                return

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.jobs.cancel(self.job.id)


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def read_limited(request: Request, limit: int, what: str) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"{what} is {int(declared)} bytes, more than this server's limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"{what} is more than this server's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> Any:
    require_type(request, ("application/json",), "the request body")  # never a simple request's text/plain
    body = await read_limited(request, JSON_LIMIT, "the request body")
    try:
        return json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"the request body is not valid JSON ({err})") from None


def build_app(
    catalog: Catalog,
    *,
    max_images: int = 64,
    max_waiting: int = 4,
    max_upload_bytes: int = 8 * 1024 * 1024,
    frame_interval: float = 0.1,
    heartbeat: float = 1.0,
    allowed_hosts: set[str] | None = None,
) -> Starlette:
    """The application serving the page and the API for the runs of ``catalog``.

    ``max_images`` per request, ``max_waiting`` queued jobs per model beyond the running one,
    ``max_upload_bytes`` per upload, step frames at most every ``frame_interval`` seconds;
    ``allowed_hosts`` (None: any) are the host names a request may address."""
    jobs = JobManager(max_waiting=max_waiting)

    async def run_of(request: Request):
        return await asyncio.to_thread(catalog.get, request.path_params["name"])

    async def page(request: Request):
        return FileResponse(STATIC / "index.html", headers=NO_STORE)

    async def info(request: Request):
        samplers = [{"name": n, "default_steps": DEFAULT_STEPS[n], "default_grid": DEFAULT_GRIDS[n]} for n in SAMPLERS]
        return JSONResponse({"version": __version__, "samplers": samplers, "default_run": catalog.default_run,
                             "limits": {"max_images": max_images, "max_waiting": max_waiting,
                                        "max_upload_bytes": max_upload_bytes}})

    async def runs(request: Request):
        return JSONResponse({"runs": await asyncio.to_thread(catalog.runs)}, headers=NO_STORE)

    async def schedule(request: Request):
        return JSONResponse(schedule_view(await run_of(request)))

    async def train_images(request: Request):
        run = await run_of(request)
        start = integer("start", request.query_params.get("start", "0"), 0, 2**31)
        count = integer("count", request.query_params.get("count", "24"), 1, 64)
        return JSONResponse(await asyncio.to_thread(lambda: thumbnails(catalog.dataset(run), start, count)))

    async def upload(request: Request):
        run = await run_of(request)
        require_type(request, IMAGE_TYPES, "the upload")
        body = await read_limited(request, max_upload_bytes, "the upload")
        token, image = await asyncio.to_thread(catalog.add_upload, run, body)
        return JSONResponse({"image": f"upload:{token}", "png": png_url(image.images)})

    async def forward(request: Request):
        run = await run_of(request)
        req = parse_forward(request.query_params, run)

        def view():
            data, index = catalog.image(run, req.image)
            return forward_view(run, data, index, req)

        return JSONResponse(await asyncio.to_thread(view))

    async def generate(request: Request):
        run = await run_of(request)
        req = parse_generate(await read_json(request), run, max_images)
        if req.prompt is not None:  # a prompt over the token limit: 400 now, not an error event later
            await asyncio.to_thread(catalog.check_prompt, run, req.prompt)
        job = jobs.submit(run.name, generation(catalog, run, req, frame_interval))
        return JobStream(job, jobs, heartbeat)

    async def inpaint(request: Request):
        run = await run_of(request)
        req = parse_inpaint(await read_json(request), run, max_images)
        await asyncio.to_thread(catalog.image, run, req.image)  # an unknown image: its answer now, not in the stream
        if req.prompt is not None:
            await asyncio.to_thread(catalog.check_prompt, run, req.prompt)
        job = jobs.submit(run.name, inpainting(catalog, run, req, frame_interval))
        return JobStream(job, jobs, heartbeat)

    async def job_list(request: Request):
        return JSONResponse(jobs.status(), headers=NO_STORE)

    async def cancel(request: Request):
        job_id = request.path_params["job"]
        if not jobs.cancel(job_id):
            raise NotFound(f"there is no unfinished job {job_id!r}; GET /api/jobs lists them")
        return JSONResponse({"cancelled": job_id})

    async def ddpm_error(request: Request, err: DDPMError):
        return JSONResponse({"error": str(err)}, status_of(err))

    async def http_error(request: Request, err: HTTPException):
        return JSONResponse({"error": f"{request.method} {request.url.path}: {err.detail}"}, err.status_code)

    @asynccontextmanager
    async def lifespan(app):
        yield
        jobs.shutdown()

    routes = [
        Route("/", page),
        Route("/api/info", info),
        Route("/api/runs", runs),
        Route("/api/runs/{name}/schedule", schedule),
        Route("/api/runs/{name}/train-images", train_images),
        Route("/api/runs/{name}/images", upload, methods=["POST"]),
        Route("/api/runs/{name}/forward", forward),
        Route("/api/runs/{name}/generate", generate, methods=["POST"]),
        Route("/api/runs/{name}/inpaint", inpaint, methods=["POST"]),
        Route("/api/jobs", job_list),
        Route("/api/jobs/{job}", cancel, methods=["DELETE"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={DDPMError: ddpm_error, HTTPException: http_error})
    app.state.jobs, app.state.catalog = jobs, catalog
    app.add_middleware(RequestGuard, allowed=allowed_hosts)
    return app
