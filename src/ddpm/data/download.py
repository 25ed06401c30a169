"""Checked downloads: every mirror in turn, a few tries each, MD5 verified, never a half file.

Only ``urllib.request`` is used. A file is streamed into a temporary file beside its final name,
its MD5 computed on the way, and renamed into place only when the digest matches, so an
interrupted or corrupted download can never be mistaken for a good file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ConfigError, DataError

DEFAULT_CACHE = Path("~/.cache/torch-ddpm")
_CHUNK = 1 << 16
_PROGRESS_FROM = 8 << 20  # log progress lines only for files larger than this


@dataclass(frozen=True)
class FileSpec:
    """One file to fetch: its name on every mirror and on disk, and the MD5 of its bytes."""

    name: str
    md5: str


class _WrongFile(Exception):
    """The mirror answered for good (e.g. 404): trying it again cannot help."""


class _Mismatch(Exception):
    """The bytes arrived whole but their MD5 is not the expected one."""


def cache_dir_for(dataset: str, cache_dir: str | Path | None = None) -> Path:
    """Where downloads of ``dataset`` go: ``<cache_dir>/<dataset>``, by default ``~/.cache/torch-ddpm/<dataset>``."""
    return Path(cache_dir if cache_dir is not None else DEFAULT_CACHE).expanduser() / dataset


def md5_of(path: str | Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    spec: FileSpec,
    mirrors: Sequence[str],
    target_dir: str | Path,
    *,
    tries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    log: Callable[[str], None] = print,
) -> Path:
    """Fetch ``spec.name`` into ``target_dir`` from the first mirror that serves the right bytes.

    Each mirror is a base URL (``spec.name`` is appended). Network errors and 5xx answers are
    retried up to ``tries`` times per mirror, sleeping ``backoff * 2**k`` seconds between tries;
    a 4xx answer or a checksum mismatch moves on to the next mirror at once. Returns the path.
    Raises :class:`DataError` when no mirror gives a file with the expected MD5.
    """
    mirrors = [mirrors] if isinstance(mirrors, str) else list(mirrors)
    if not mirrors:
        raise ConfigError(f"no mirror to download {spec.name} from; give at least one base URL.")
    if tries < 1:
        raise ConfigError(f"tries must be at least 1, got {tries}.")
    target_dir = Path(target_dir)
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the download folder {target_dir}: {err.strerror or err}.") from None
    failures: dict[str, str] = {}  # url -> why its last try failed
    mismatch = None
    for base in mirrors:
        url = base.rstrip("/") + "/" + spec.name
        for attempt in range(tries):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            log(f"downloading {url}" + (f" (try {attempt + 1} of {tries})" if attempt else ""))
            try:
                path = _fetch(url, spec, target_dir, timeout, log)
            except _WrongFile as err:
                failures[url] = str(err)
                break
            except _Mismatch as err:  # a stale or tampered copy: another mirror may be right
                mismatch = mismatch or f"checksum mismatch for {spec.name} from {url}: expected {spec.md5}, got {err}"
                log(f"checksum mismatch for {spec.name} from {url}; trying the next mirror")
                break
            except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets: transient
                failures[url] = _reason(err)
                log(f"download of {url} failed: {_reason(err)}")
                continue
            return path
    if mismatch:
        raise DataError(mismatch + ("" if len(mirrors) == 1 else ", and no other mirror had a good copy") + ".")
    raise DataError(
        f"could not download {spec.name} from any mirror ({'; '.join(f'{u}: {r}' for u, r in failures.items())}); "
        f"download it by hand from {' or '.join(b.rstrip('/') + '/' + spec.name for b in mirrors)} "
        f"and put it into {target_dir}."
    )


def _fetch(url: str, spec: FileSpec, target_dir: Path, timeout: float, log: Callable[[str], None]) -> Path:
    """One try: stream ``url`` to a temp file and rename it into place if its MD5 is right; else delete it."""
    request = urllib.request.Request(url, headers={"User-Agent": "torch-ddpm"})
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{spec.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as err:
                if 400 <= err.code < 500 and err.code not in (408, 429):
                    raise _WrongFile(f"HTTP {err.code} {err.reason}") from None
                raise
            with response:
                total = int(response.headers.get("Content-Length") or 0)
                digest, received, shown = hashlib.md5(usedforsecurity=False), 0, 0
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if total >= _PROGRESS_FROM and received * 10 // total > shown:
                        shown = received * 10 // total
                        log(f"  {spec.name}: {received / 2**20:.1f} of {total / 2**20:.1f} MiB")
            if total and received != total:
                raise http.client.IncompleteRead(b"", total - received)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != spec.md5.lower():
            raise _Mismatch(digest.hexdigest())
        final = target_dir / spec.name
        os.replace(tmp, final)
        tmp = None
        log(f"saved {final} ({received / 2**20:.1f} MiB, MD5 verified)")
        return final
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    if isinstance(err, http.client.IncompleteRead):
        return f"connection closed with {err.expected} bytes missing"
    return str(err) or type(err).__name__
