"""Typed configuration: dataclasses loadable from TOML, with command-line overrides.

:mod:`~ddpm.config.schema` holds the sections and their fields (each with its help, and the names a
text field accepts, registered by the modules that own them); :mod:`~ddpm.config.codec` reads and
writes them: TOML and JSON, command-line text, help. Both are re-exported here.
"""

from .codec import apply_overrides, coerce, from_dict, load_toml, option_help, parse_text, to_dict, to_toml
from .schema import (AUTO, SECTIONS, DataConfig, DiffusionConfig, DistillConfig, ModelConfig, RunConfig, SampleConfig,
                     TrainConfig, field_choices, field_help, field_index, has_choices, is_auto_bool, is_auto_float, opt,
                     register_choices, resolved_guidance)

__all__ = [
    "AUTO",
    "SECTIONS",
    "DataConfig",
    "DiffusionConfig",
    "DistillConfig",
    "ModelConfig",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "apply_overrides",
    "coerce",
    "field_choices",
    "field_help",
    "field_index",
    "from_dict",
    "has_choices",
    "is_auto_bool",
    "is_auto_float",
    "load_toml",
    "opt",
    "option_help",
    "parse_text",
    "register_choices",
    "resolved_guidance",
    "to_dict",
    "to_toml",
]
