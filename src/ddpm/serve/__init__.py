"""``ddpm serve``: a local web page to pick a run, generate and watch the denoising, and explore
the forward process. Needs the ``serve`` extra (Starlette and uvicorn): ``pip install ".[serve]"``.

The page is a client of the library like the command line: the server (``app.py``) only checks
parameters and calls :mod:`ddpm.generate`, the facade's sampler callback and
:mod:`ddpm.diffusion`'s forward process.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Callable

from ..errors import ConfigError

LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}


def require_server_packages() -> None:
    """A one-sentence ConfigError naming what is missing when Starlette or uvicorn is not installed."""
    missing = []
    for name in ("starlette", "uvicorn"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"ddpm serve needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed; "
            'install the serve extra: pip install "torch-ddpm[serve]" (or pip install ".[serve]" in a clone)'
        )


def is_local(host: str) -> bool:
    """Whether ``host`` is this machine's loopback address (only local programs can reach it)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def prepare(
    runs_dir: str | Path = "runs",
    *,
    run: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    max_images: int = 64,
    max_waiting: int = 4,
    max_upload_mb: float = 8.0,
    log: Callable[[str], None] = print,
):
    """Check the settings, build the application and bind its socket (``port=0``: a free port);
    returns (app, socket, address). A non-local ``host`` is served with a warning."""
    require_server_packages()
    from .app import build_app
    from .catalog import Catalog

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be from 0 to 65535; got {port}")
    for name, value in (("--max-images", max_images), ("--max-upload-mb", max_upload_mb)):
        if value <= 0:
            raise ConfigError(f"{name} must be positive; got {value:g}")
    if max_waiting < 0:
        raise ConfigError(f"--queue-size must be at least 0; got {max_waiting}")
    runs_path = Path(runs_dir)
    if run is None and not runs_path.is_dir():
        raise ConfigError(f"runs directory {runs_path} does not exist; train a model first (ddpm train) or give --runs-dir DIR")
    catalog = Catalog(runs_path, run, device=device, log=log)
    local = is_local(host)
    app = build_app(catalog, max_images=max_images, max_waiting=max_waiting,
                    max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                    allowed_hosts=LOCAL_NAMES if local else None)
    if not local:
        log(f"warning: --host {host} lets other machines reach this page and its API, without a password; "
            "anyone who can connect can use this computer to generate images and see the runs' settings")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    shown = f"[{host}]" if ":" in host else host
    return app, sock, f"http://{shown}:{sock.getsockname()[1]}/"


def serve(app, sock: socket.socket, address: str, *, log: Callable[[str], None] = print) -> None:
    """Serve what :func:`prepare` returned, ``serve(*prepare(...))``, until Ctrl-C, after printing the address."""
    import uvicorn

    runs = app.state.catalog.runs()
    log(f"ddpm serve: {len(runs)} run{'' if len(runs) == 1 else 's'} at {address} (Ctrl-C stops)")
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3, lifespan="on")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: here it is the normal way to stop
        pass
    log("ddpm serve: stopped")


__all__ = ["is_local", "prepare", "require_server_packages", "serve"]
