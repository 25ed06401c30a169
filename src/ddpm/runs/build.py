"""From a configuration to objects: the device, the network and the diffusion around it."""

from __future__ import annotations

import os
import shutil

import torch

from ..config import RunConfig
from ..errors import ConfigError
from ..facade import GaussianDiffusion
from ..models import Unet
from ..schedules import schedule_options


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA, then Apple MPS, then the CPU; any other name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r} was asked for but Apple MPS is not available; use --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up here: CUDA GPUs with bf16 support, and CPUs with
    AVX512-BF16 or AMX instructions (1.2-1.6x on such a CPU, benchmarks/README.md). Elsewhere
    (older CPUs, Apple MPS) it is emulated or unmeasured, and left off."""
    if device.type == "cuda":  # not where it is only emulated (before Ampere)
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        # the instructions, and PyTorch using them: ATEN_CPU_CAPABILITY=avx2 (with ONEDNN_MAX_CPU_ISA)
        # makes such a CPU compute as an AVX2 one, where bf16 is emulated (or refused by oneDNN)
        if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2"):
            return False
        cpu = torch.cpu
        return any(getattr(cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


def use_bf16(setting: bool | None, device: torch.device) -> bool:
    """The ``bf16`` setting on ``device``: true or false as given; None ("auto") where it is fast."""
    return bf16_is_fast(device) if setting is None else setting


COMPILE_AUTO_MIN_STEPS = 5000
COMPILE_AUTO_MIN_MINUTES = 30.0
"""``compile`` auto compiles fp32 CPU runs of at least this many steps (the run's max_steps, so that a
resumed run computes as it began and resume stays exact) and no time
limit under this many minutes. On a 2-core CPU computing as AVX2, fp32 (benchmarks/README.md): the
MNIST recipe's network compiled in 64-82 s and then ran 6-18% faster per step, paying off after
1,550 to 3,500 steps; the seed network (Unet dim 64) compiled in 109-122 s and ran no faster, a
loss of about 1% of a 5,000-step run. Under bf16 autocast compiling made both networks slower
(0.88x and 0.95x), so auto leaves bf16 runs eager."""


def use_compile(setting: bool | None, device: torch.device, steps: int, *, bf16: bool, processes: int = 1,
                minutes: float = 0.0) -> bool:
    """The ``compile`` setting: true or false as given; None ("auto"): on for a single-process fp32
    CPU run of at least ``COMPILE_AUTO_MIN_STEPS`` ``steps`` (the whole run's), a time limit (``minutes``, 0:
    none) of at least ``COMPILE_AUTO_MIN_MINUTES``, and a C++ compiler for inductor's code (not on
    Windows); off under bf16 (slower), on GPUs and under DDP (break-even not measured)."""
    if setting is not None:
        return setting
    if device.type != "cpu" or bf16 or steps < COMPILE_AUTO_MIN_STEPS or processes > 1 or os.name == "nt":
        return False
    if 0 < minutes < COMPILE_AUTO_MIN_MINUTES:
        return False
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def adamw_kernel(device: torch.device) -> dict[str, bool]:
    """AdamW's fastest implementation on ``device``: the fused kernel on CUDA and CPUs (3.3x the
    foreach one for the seed network on a CPU, benchmarks/README.md), foreach elsewhere."""
    return {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}


def image_size_of(config: RunConfig) -> tuple[int, int]:
    size = config.data.image_size
    if len(size) == 1:
        return (size[0], size[0])
    if len(size) == 2:
        return (size[0], size[1])
    raise ConfigError(f"image_size must be one value or a height and a width; got {list(size)}")


def build_unet(config: RunConfig) -> torch.nn.Module:
    """The network a configuration describes: this project's :class:`~ddpm.models.Unet`, or, for a
    run made by ``ddpm import``, diffusers' UNet2DModel built from its stored config (behind
    :class:`~ddpm.models.foreign.DiffusersUnet`, the same calling convention as ours)."""
    m, data = config.model, config.data
    if m.diffusers_unet:
        from ..models.foreign import DiffusersUnet

        return DiffusersUnet.from_json(m.diffusers_unet, image_size_of(config))
    if data.channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3; got {data.channels}")
    text_dim = text_encoder = None
    if data.text_conditional:
        from ..text import BuiltinTextEncoder, text_width

        text_dim = text_width(m.text_encoder, m.builtin_text_dim)
        if m.text_encoder == "builtin":  # trained with the Unet: part of its weights
            text_encoder = BuiltinTextEncoder(len(data.text_vocab), m.builtin_text_dim, m.builtin_text_layers,
                                              max_tokens=m.text_max_tokens)
    return Unet(
        dim=m.dim,
        dim_mults=m.dim_mults,
        channels=data.channels,
        num_res_blocks=m.num_res_blocks,
        full_attn=m.full_attn or None,
        attn_heads=m.attn_heads,
        attn_dim_head=m.attn_dim_head,
        dropout=m.dropout,
        num_classes=data.num_classes if data.class_conditional else None,
        learned_variance=m.learned_variance,
        resnet_block_groups=m.resnet_block_groups,
        grad_checkpoint=m.grad_checkpoint,
        attn_impl=m.attn_impl,
        text_dim=text_dim,
        text_encoder=text_encoder,
    )


def build_diffusion(config: RunConfig, model: torch.nn.Module | None = None, text_encoder=None) -> GaussianDiffusion:
    """The GaussianDiffusion a (resolved) configuration describes, around ``model`` if given;
    ``text_encoder`` encodes its prompts (a TextEncoder; default for the builtin encoder: its
    word tokenizer, for minilm: none until one is given)."""
    d = config.diffusion
    return GaussianDiffusion(
        model if model is not None else build_unet(config),
        image_size_of(config),
        timesteps=d.timesteps,
        loss_type=d.loss_type,
        objective=d.objective,
        beta_schedule=d.beta_schedule,
        variance_type=None if d.variance_type == "auto" else d.variance_type,
        **schedule_options(d),  # the end points, given betas and zero terminal SNR, as config_schedule reads them
        min_snr_loss_weight=d.min_snr_gamma > 0,
        min_snr_gamma=d.min_snr_gamma,
        offset_noise_strength=d.offset_noise_strength,
        vlb_weight=d.vlb_weight,
        p_uncond=d.p_uncond,
        text_encoder=text_encoder if text_encoder is not None else builtin_tokenizer(config),
    )


def builtin_tokenizer(config: RunConfig):
    """The word tokenizer of a builtin-encoder text run, or None (it needs no files to load)."""
    m = config.model
    if not (config.data.text_conditional and m.text_encoder == "builtin" and config.data.text_vocab):
        return None
    from ..text import WordTokenizer

    return WordTokenizer(config.data.text_vocab, m.text_max_tokens, m.builtin_text_dim)
