"""Reading a run back: the one way the command line, the web page, scripts and notebooks load one.

``load_run("runs/mnist")`` is the run's :class:`~ddpm.GaussianDiffusion` with its EMA weights, in
eval mode, ready for ``sample``, ``inpaint``, ``img2img`` or ``bits_per_dim``; ``load_for_sampling``
also returns the :class:`~ddpm.runs.checkpoint.Checkpoint` it came from (its config, step and path).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..facade import GaussianDiffusion
from ..text import make_text_encoder, text_width
from .build import build_diffusion, build_unet, pick_device
from .checkpoint import Checkpoint, check_fit, load_model_weights, read_checkpoint, weight_shapes


def load_run(path: str | Path, ema: bool = True, device: str = "cpu") -> GaussianDiffusion:
    """The trained model of a run directory (its newest checkpoint) or of one checkpoint directory,
    as a :class:`~ddpm.GaussianDiffusion` in eval mode on ``device`` ("cpu", "cuda", "cuda:1", "mps"
    or "auto"), with the EMA weights (``ema=False``: the raw training weights).

    Everything the run was trained with comes from its saved config: the network, the schedule, the
    objective, the classes or the text encoder (a MiniLM encoder is loaded at the first prompt), so
    ``load_run(path).sample(16)`` draws from it. A path that is not a run gives one
    :class:`~ddpm.CheckpointError` sentence."""
    diffusion, _ = load_for_sampling(path, use_ema=ema, device=device)
    return diffusion


def load_for_sampling(source: str | Path, *, use_ema: bool = True, device: str = "auto",
                      text_encoder=None) -> tuple[GaussianDiffusion, Checkpoint]:
    """The GaussianDiffusion of a run or checkpoint, with its (EMA) weights, on ``device``,
    in eval mode; returns it with the checkpoint it came from. A text-conditional run gets its
    text encoder (MiniLM is loaded on first use of a prompt), or ``text_encoder`` if given."""
    ckpt = read_checkpoint(source)
    name = "ema.safetensors" if use_ema else "model.safetensors"
    with torch.device("meta"):  # check the weights against the config before allocating anything
        check_fit(build_unet(ckpt.config), weight_shapes(ckpt.path / name), ckpt.path / name)
    if text_encoder is None and ckpt.config.data.text_conditional and ckpt.config.model.text_encoder == "minilm":
        text_encoder = LazyTextEncoder(ckpt.config)
    diffusion = build_diffusion(ckpt.config, text_encoder=text_encoder)
    load_model_weights(diffusion.model, ckpt.weights(ema=use_ema), ckpt.path / name)
    return diffusion.to(pick_device(device)).eval(), ckpt


class LazyTextEncoder:
    """A run's frozen text encoder, loaded when the first prompt comes: sampling or evaluating a
    text-conditional run without prompts never needs it (nor its package)."""

    def __init__(self, config):
        m = config.model
        self.name, self.max_tokens = m.text_encoder, m.text_max_tokens
        self.dim = text_width(m.text_encoder, m.builtin_text_dim)
        self._config, self._encoder = config, None

    def _get(self):
        if self._encoder is None:
            m = self._config.model
            self._encoder = make_text_encoder(m.text_encoder, max_tokens=m.text_max_tokens, vocab=self._config.data.text_vocab,
                                              builtin_dim=m.builtin_text_dim)
        return self._encoder

    def count_tokens(self, prompts):
        return self._get().count_tokens(prompts)

    def encode(self, prompts):
        return self._get().encode(prompts)
