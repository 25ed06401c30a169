"""Moved to :mod:`ddpm.runs.records` with the rest of a run on disk; this name stays so that scripts
written for earlier releases (``ddpm.records.read_record(path)``, as the README said) keep working."""

from .runs.records import FORMAT, PNG_KEY, describe, edit_record, png_text, read_record, sample_record

__all__ = ["FORMAT", "PNG_KEY", "describe", "edit_record", "png_text", "read_record", "sample_record"]
