"""A run's sampling settings with the caller's overrides: what ``ddpm sample``, the editing
commands, the pictures and the web page draw with."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..config import SampleConfig


def sample_settings(saved: SampleConfig, **given: Any) -> SampleConfig:
    """``saved`` (a run's ``[sample]`` section) with every setting in ``given`` that is not None
    (a field name of :class:`~ddpm.config.SampleConfig` -> its value; an unknown name is a TypeError)."""
    return replace(saved, **{k: v for k, v in given.items() if v is not None})
