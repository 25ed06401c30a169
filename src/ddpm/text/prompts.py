"""Prompts from files: one per line for ``ddpm sample --prompts-file``; with the class each one
asks for (``7: the number seven``) for ``ddpm eval --prompts-file``. Blank lines and lines
starting with ``#`` are skipped; files are read as UTF-8."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import clean_caption


def _lines(path: str | Path) -> list[tuple[int, str]]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise ConfigError(f"cannot read the prompts file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the prompts file {path} is not UTF-8 text") from None
    out = [(n, clean_caption(line)) for n, line in enumerate(text.splitlines(), 1)]
    out = [(n, line) for n, line in out if line and not line.startswith("#")]
    if not out:
        raise ConfigError(f"the prompts file {path} holds no prompt (one per line; '#' starts a comment)")
    return out


def read_prompts(path: str | Path) -> list[str]:
    """The prompts of a file, one per line."""
    return [line for _, line in _lines(path)]


def read_labelled_prompts(path: str | Path, class_names: list[str]) -> list[tuple[int, str]]:
    """(class index, prompt) per line ``CLASS: prompt``, CLASS being a class index or name."""
    by_name = {name.lower(): i for i, name in enumerate(class_names)}
    out = []
    for n, line in _lines(path):
        head, sep, prompt = line.partition(":")
        head, prompt = head.strip().lower(), prompt.strip()
        if not sep or not prompt:
            raise ConfigError(f"{path}:{n}: expected 'CLASS: prompt' (e.g. '7: the number seven'); got {line!r}")
        if head.isdigit() and int(head) < len(class_names):
            out.append((int(head), prompt))
        elif head in by_name:
            out.append((by_name[head], prompt))
        else:
            raise ConfigError(f"{path}:{n}: unknown class {head!r}; use an index 0 to {len(class_names) - 1} or a class name")
    return out


__all__ = ["read_labelled_prompts", "read_prompts"]
