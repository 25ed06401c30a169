"""A foreign network behind our calling convention: diffusers' ``UNet2DModel``.

``ddpm import`` stores the network's diffusers config (JSON) in the run's ``[model]`` section; every
reader of the run builds it here, from that config, with the library that defines the architecture
(never a re-written copy of it). The wrapper is called like :class:`~ddpm.models.Unet`,
``net(x_t [B, C, H, W], t [B], classes [B] or None) -> [B, C or 2C, H, W]``, and carries the same
attributes (``channels``, ``learned_variance``, ``num_classes``), so the samplers, editing, serve
and export never know which network they drive. diffusers is imported only when one is built:
it is the optional ``[diffusers]`` extra.
"""

from __future__ import annotations

import json
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError, first_line

INSTALL = 'pip install "torch-ddpm[diffusers]"'


def require_diffusers():
    """diffusers' UNet2DModel class, or one sentence naming the install command."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise ConfigError(f"this run's network is diffusers' UNet2DModel, and diffusers is not installed; "
                          f"install it with {INSTALL}") from None
    return UNet2DModel


def diffusers_version() -> str:
    require_diffusers()
    import diffusers

    return diffusers.__version__


class DiffusersUnet(nn.Module):
    """diffusers' ``UNet2DModel`` built from its config (a dict as in its ``config.json``).

    Class-conditional when the config has ``num_class_embeds`` (and no other ``class_embed_type``):
    its labels run from 0 to num_class_embeds - 1, and there is no null label, so classifier-free
    guidance (which calls it with label ``num_classes``) is refused in one sentence. A learned
    variance is an output of twice the input channels (diffusers' ``learned_range``)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        UNet2DModel = require_diffusers()
        if not isinstance(config, dict):
            raise ConfigError("an imported network's config must be a JSON object (diffusers' UNet2DModel config.json)")
        embed_type = config.get("class_embed_type")
        if embed_type is not None:
            raise ConfigError(f"the network uses class_embed_type {embed_type!r}, which torch-ddpm does not cover; "
                              "only plain class embeddings (num_class_embeds with class_embed_type null) can be imported")
        try:
            self.net = UNet2DModel.from_config(config)
        except Exception as err:  # diffusers raises ValueError, TypeError, KeyError... for what it cannot build
            raise ConfigError(f"diffusers {diffusers_version()} cannot build this UNet2DModel config ({first_line(err)}); "
                              "check its config.json or use the diffusers release that wrote it") from None
        c = self.net.config
        self.channels = int(c.in_channels)
        if c.out_channels not in (c.in_channels, 2 * c.in_channels):
            raise ConfigError(f"the network maps {c.in_channels} channels to {c.out_channels}; an image denoiser "
                              f"outputs {c.in_channels} (its prediction) or {2 * c.in_channels} (with a learned variance)")
        self.learned_variance = c.out_channels == 2 * c.in_channels
        self.num_classes = int(c.num_class_embeds) if c.num_class_embeds else None
        self.levels = len(c.down_block_types)

    @classmethod
    def from_json(cls, text: str, image_size: tuple[int, int] | None = None) -> "DiffusersUnet":
        """Built from the JSON text a run stores; ``image_size`` (H, W) is checked against its levels."""
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"the run's diffusers_unet setting is not valid JSON ({err})") from None
        net = cls(config)
        if image_size is not None:
            net.check_image_size(*image_size)
        return net

    def check_image_size(self, height: int, width: int) -> None:
        factor = 2 ** (self.levels - 1)
        if height % factor or width % factor:
            raise ConfigError(f"the imported network halves the image {self.levels - 1} times, so its size must be a "
                              f"multiple of {factor}; got {height}x{width}")

    def forward(self, x: Tensor, t: Tensor, classes: Tensor | None = None) -> Tensor:
        if self.num_classes is None:
            if classes is not None:
                raise ConfigError("class labels were given but the imported network is not class-conditional")
        elif classes is None:
            raise ConfigError(f"the imported network is class-conditional: give a class label from 0 to {self.num_classes - 1}")
        elif bool((classes >= self.num_classes).any()):  # our guidance's null label: diffusers' networks have none
            raise ConfigError("the imported network has no embedding for an unconditional (null) label, so it cannot use "
                              "classifier-free guidance; sample it with --guidance-scale 1")
        return self.net(x, t, class_labels=classes).sample


def config_json(config: dict[str, Any]) -> str:
    """A UNet2DModel config as the compact, key-sorted JSON text a run stores."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))
