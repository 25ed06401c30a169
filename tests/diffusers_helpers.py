"""Folders laid out as diffusers and the Hub lay them out, for the import tests.

The published google DDPMs' UNet configs, with the channel widths (and image sizes) shrunk so that
a test takes seconds, keeping each model's block types, attention layout, norm and embedding
settings as its config.json on the Hub has them. ddpm-celebahq-256 and ddpm-ema-church-256 (like
-bedroom-256 and -cat-256) share one architecture: six levels (128, 128, 256, 256, 512, 512 channels),
attention at the fifth, no attention head dim (one head), GroupNorm(32, eps 1e-6), sinusoidal time
embedding with flip_sin_to_cos false and freq_shift 1, downsample_padding 0. ddpm-cifar10-32 has four
levels (128, 256, 256, 256) with attention at the second (16x16), otherwise the same settings.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

HAVE_DIFFUSERS = importlib.util.find_spec("diffusers") is not None
NEEDS_DIFFUSERS = (not HAVE_DIFFUSERS, 'diffusers is not installed (pip install ".[diffusers]")')

_COMMON = dict(in_channels=3, out_channels=3, layers_per_block=2, act_fn="silu", attention_head_dim=None,
               norm_num_groups=32, norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0,
               center_input_sample=False, time_embedding_type="positional", mid_block_scale_factor=1)

PUBLISHED = {
    # google/ddpm-cifar10-32: widths 128, 256, 256, 256 -> 32, 64, 64, 64; 32 px -> 16 px
    "ddpm-cifar10-32": dict(_COMMON, sample_size=16, block_out_channels=[32, 64, 64, 64],
                            down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
                            up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]),
    # google/ddpm-celebahq-256: widths 128, 128, 256, 256, 512, 512 -> 32 each; 256 px -> 32 px
    "ddpm-celebahq-256": dict(_COMMON, sample_size=32, block_out_channels=[32] * 6,
                              down_block_types=["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
                              up_block_types=["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4),
}
PUBLISHED["ddpm-ema-church-256"] = dict(PUBLISHED["ddpm-celebahq-256"])

# the google DDPMs' scheduler: Ho et al.'s linear betas over T = 1000, clip_sample, fixed_large
GOOGLE_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                        clip_sample=True, variance_type="fixed_large", prediction_type="epsilon")

TINY = dict(_COMMON, sample_size=16, block_out_channels=[32, 32], layers_per_block=1,
            down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"])


def make_unet(config: dict, seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(**config)
    with torch.no_grad():  # a freshly built UNet2DModel zeroes its output conv: give it random weights there too
        unet.conv_out.weight.normal_(0, 0.05)
        unet.conv_out.bias.normal_(0, 0.05)
    return unet.eval()


def save_pipeline(folder: Path, unet_config: dict, scheduler: dict | None = None, *, kind: str = "DDPMScheduler",
                  seed: int = 0, safe: bool = True):
    """A pipeline folder as DDPMPipeline.save_pretrained writes it (model_index.json, unet/, scheduler/);
    returns the UNet and the scheduler."""
    import diffusers
    from diffusers import DDPMPipeline

    unet = make_unet(unet_config, seed)
    sched = getattr(diffusers, kind)(**(GOOGLE_SCHEDULER if scheduler is None else scheduler))
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(str(folder), safe_serialization=safe)
    return unet, sched
