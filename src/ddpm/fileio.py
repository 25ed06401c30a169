"""Writing files so that a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex), read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temp_path)``, fsync the result, then rename it to ``path``.

    The temporary file sits in the same directory (so the rename is atomic) under a hidden name
    that no reader takes for the real file; it is removed if writing fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            # mode 0o666 less the umask, as for any new file (mkstemp would make it private)
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


STILL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def image_format(path: str | Path, formats: dict[str, str]) -> str:
    """Pillow's format name for ``path``'s suffix, from ``formats``; a ConfigError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise ConfigError(f"cannot tell the format of {str(path)!r}; use a name ending in {', '.join(formats)}")
    return formats[suffix]


def save_still(image: "Image.Image", path: str | Path, text: dict[str, str] | None = None) -> Path:
    """Write a Pillow image atomically, in the format its name says (WebP losslessly); ``text``
    goes into a PNG's text chunks (other formats have none and refuse it)."""
    fmt = image_format(path, STILL_FORMATS)
    if text:
        if fmt != "PNG":
            raise ConfigError(f"only PNG files carry text; {str(path)!r} is {fmt}")
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in text.items():
            info.add_itxt(key, value)  # iTXt: UTF-8, so any run name or path survives
        return atomic_write(path, lambda tmp: image.save(tmp, format=fmt, pnginfo=info))
    if fmt == "JPEG":
        return atomic_write(path, lambda tmp: image.save(tmp, format=fmt, quality=95))
    if fmt == "WEBP":  # lossless, so the saved pixels are the pixels we drew
        return atomic_write(path, lambda tmp: image.save(tmp, format=fmt, lossless=True))
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt))
