"""Interoperation with other libraries' models: ``ddpm import diffusers:SOURCE``.

- ``source``: a diffusers folder (a pipeline with ``model_index.json``, ``unet/`` and ``scheduler/``,
  a flat one, or a bare ``unet/`` folder) read into its UNet config, scheduler config and weights.
- ``hub``: a Hub id downloaded into huggingface_hub's own cache with its own functions.
- ``scheduler``: a diffusers scheduler config as this project's schedule and sampling settings.
- ``diffusers_import``: :func:`import_diffusers`, which writes it all as an ordinary run directory.
"""

from .diffusers_import import import_diffusers

__all__ = ["import_diffusers"]
