"""``Trainer``: lucidrains' training front end, with its argument names, on our one training loop.

A program written for ``denoising_diffusion_pytorch`` runs with its import changed::

    from ddpm import Unet, GaussianDiffusion, Trainer

    trainer = Trainer(diffusion, 'path/to/your/images', train_batch_size=32, train_lr=8e-5,
                      train_num_steps=700000, gradient_accumulate_every=2, ema_decay=0.995, amp=True,
                      calculate_fid=False)
    trainer.train()

The arguments become a :class:`~ddpm.config.RunConfig` (the network's and the diffusion's settings
are read from the objects given) and :func:`ddpm.training.loop.train` does the training, so a
Trainer run is an ordinary run directory (``results_folder``): ``ddpm sample --run``, ``ddpm eval``
and ``ddpm train --resume`` work on it, and it resumes exactly. Milestone ``k`` is the checkpoint
of step ``k * save_and_sample_every``. An argument whose meaning we do not implement raises a
ConfigError naming it rather than being ignored.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .config import RunConfig
from .errors import CheckpointError, ConfigError
from .facade import GaussianDiffusion
from .runs.checkpoint import list_checkpoints, load_model_weights, read_checkpoint

CONVERT = {"L": 1, "RGB": 3}
PRECISIONS = ("fp16", "bf16")


class EMAView:
    """``trainer.ema.ema_model``: the diffusion with the EMA weights, as in lucidrains' Trainer."""

    def __init__(self, ema_model: GaussianDiffusion):
        self.ema_model = ema_model


def _model_config(unet) -> dict[str, str | int | float | bool | tuple]:
    args = getattr(unet, "init_args", None)
    if args is None:
        raise ConfigError(f"Trainer needs a ddpm.Unet inside the GaussianDiffusion; got {type(unet).__name__}")
    unsupported = {
        "init_dim": args["init_dim"] not in (None, args["dim"]),
        "out_dim": args["out_dim"] is not None,
        "sinusoidal_pos_emb_theta": args["sinusoidal_pos_emb_theta"] != 10000.0,
        "num_classes": args["num_classes"] is not None,
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ConfigError(f"Trainer cannot train a Unet built with {', '.join(f'{k}={args[k]!r}' for k in bad)}: "
                          "a run's config has no such setting (class-conditional runs: ddpm train --class-conditional)")
    keys = ("dim", "dim_mults", "num_res_blocks", "attn_heads", "attn_dim_head", "dropout", "learned_variance",
            "resnet_block_groups", "grad_checkpoint", "attn_impl")
    out = {k: args[k] for k in keys}
    out["full_attn"] = args["full_attn"] or ()
    return out


def _diffusion_config(diffusion: GaussianDiffusion) -> dict:
    if not isinstance(diffusion, GaussianDiffusion):
        raise ConfigError(f"Trainer's first argument must be a ddpm.GaussianDiffusion; got {type(diffusion).__name__}")
    if diffusion.variance_type == "fixed_large":
        raise ConfigError("Trainer cannot train variance_type='fixed_large': a run's config samples with the "
                          "posterior variance (fixed_small) or a learned one")
    return dict(timesteps=diffusion.num_timesteps, beta_schedule=diffusion.beta_schedule,
                zero_terminal_snr=diffusion.schedule.zero_terminal_snr, objective=diffusion.objective,
                loss_type=diffusion.loss_type, min_snr_gamma=float(diffusion.min_snr_gamma or 0.0),
                offset_noise_strength=float(diffusion.offset_noise_strength), vlb_weight=float(diffusion.vlb_weight),
                p_uncond=float(diffusion.p_uncond))


class Trainer:
    """Train ``diffusion_model`` on the images below ``folder`` (lucidrains' arguments).

    Mapping onto our settings: ``train_batch_size`` is the global batch (split over torchrun's
    processes when ``split_batches``), ``gradient_accumulate_every`` -> grad_accum, ``train_lr`` ->
    lr, ``train_num_steps`` -> max_steps, ``adam_betas`` -> AdamW's betas, ``max_grad_norm`` ->
    grad_clip, ``augment_horizontal_flip`` -> hflip, ``save_and_sample_every`` -> a checkpoint and a
    grid of ``num_samples`` images every so many steps (all kept, as lucidrains keeps every
    milestone), ``amp`` -> bf16 autocast (``mixed_precision_type`` 'fp16' or 'bf16' alike: bf16
    needs no loss scaling), ``convert_image_to`` 'L' or 'RGB' -> channels, ``num_workers`` -> the
    streaming loader's decoding processes (None: chosen by the machine). ``ema_decay`` applied
    every ``ema_update_every`` steps is the per-step decay ``ema_decay ** (1 / ema_update_every)``
    (the same averaging horizon; our EMA updates every step). Samples come from the sampler the
    diffusion names (DDIM when ``sampling_timesteps`` < T, else ancestral).

    Not implemented, and refused by name: ``calculate_fid=True`` (evaluate afterwards with
    ``ddpm eval --run RESULTS_FOLDER --features inception``), ``save_best_and_latest_only=True``
    (it ranks milestones by that FID) and ``convert_image_to='RGBA'``. ``inception_block_idx`` and
    ``num_fid_samples`` are accepted and, as in lucidrains' Trainer without FID, unused. Our own
    additions: ``device``, ``seed``, ``log``, and fine-tuning: ``Trainer(folder=..., init_from="runs/NAME")``
    (no ``diffusion_model``) trains a new run on ``folder`` that starts from that run's EMA weights
    (``init_weights='raw'``: its training weights) with its network, schedule, objective and sampling
    settings; ``trainer.model`` is that run's GaussianDiffusion, trained in place.
    """

    def __init__(
        self,
        diffusion_model: GaussianDiffusion | None = None,
        folder: str | os.PathLike | None = None,
        *,
        train_batch_size: int = 16,
        gradient_accumulate_every: int = 1,
        augment_horizontal_flip: bool = True,
        train_lr: float = 1e-4,
        train_num_steps: int = 100000,
        ema_update_every: int = 10,
        ema_decay: float = 0.995,
        adam_betas: tuple[float, float] = (0.9, 0.99),
        save_and_sample_every: int = 1000,
        num_samples: int = 25,
        results_folder: str | os.PathLike = "./results",
        amp: bool = False,
        mixed_precision_type: str = "fp16",
        split_batches: bool = True,
        convert_image_to: str | None = None,
        calculate_fid: bool = False,
        inception_block_idx: int = 2048,
        max_grad_norm: float = 1.0,
        num_fid_samples: int | None = None,
        save_best_and_latest_only: bool = False,
        num_workers: int | None = None,
        device: str = "auto",
        seed: int = 0,
        log: Callable[[str], None] = print,
        init_from: str | os.PathLike | None = None,
        init_weights: str = "ema",
    ):
        refused = []
        if calculate_fid:
            refused.append("calculate_fid=True (FID during training; afterwards: ddpm eval --run RESULTS_FOLDER "
                           "--features inception)")
        if save_best_and_latest_only:
            refused.append("save_best_and_latest_only=True (it needs FID during training)")
        if mixed_precision_type not in PRECISIONS:
            refused.append(f"mixed_precision_type={mixed_precision_type!r} (accepted: 'fp16' or 'bf16', both mean bf16 autocast)")
        if convert_image_to is not None and convert_image_to not in CONVERT:
            refused.append(f"convert_image_to={convert_image_to!r} (accepted: None, 'L' or 'RGB')")
        if refused:
            raise ConfigError("Trainer does not support " + "; ".join(refused))
        if folder is None:
            raise ConfigError("Trainer needs the folder of images to train on (its second argument, or folder=...)")
        if init_from is None and init_weights != "ema":
            raise ConfigError(f"init_weights={init_weights!r} applies only with init_from= (the run a fine-tune starts from)")
        if (diffusion_model is None) == (init_from is None):
            raise ConfigError("Trainer needs either a GaussianDiffusion to train or init_from=, a run whose network and "
                              "weights a fine-tune starts from; give one" + (", not both" if init_from is not None else ""))
        self.results_folder = Path(results_folder).expanduser().resolve()
        config = RunConfig(name=self.results_folder.name, runs_dir=str(self.results_folder.parent))
        if init_from is None:
            model_settings = _model_config(diffusion_model.model)
            diffusion_settings = _diffusion_config(diffusion_model)
            channels, image_size = diffusion_model.channels, tuple(diffusion_model.image_size)
            T, S = diffusion_model.num_timesteps, diffusion_model.sampling_timesteps
            config = replace(config, model=replace(config.model, **model_settings),
                             diffusion=replace(config.diffusion, **diffusion_settings),
                             sample=replace(config.sample, sampler="ddim" if S < T else "ancestral", steps=S))
        else:  # a fine-tune: the network, schedule, objective and sampling settings are the run's
            from .runs.init_from import finetune_config
            from .runs.load import load_for_sampling

            start = replace(config.train, init_from=str(Path(init_from).expanduser().resolve()), init_weights=init_weights)
            config = finetune_config(replace(config, train=start))
            diffusion_model, _ = load_for_sampling(config.train.init_from, use_ema=init_weights == "ema", device="cpu")
            diffusion_model.train()
            channels, image_size = config.data.channels, tuple(config.data.image_size)
        self.model = diffusion_model
        if convert_image_to is not None and CONVERT[convert_image_to] != channels:
            raise ConfigError(f"convert_image_to={convert_image_to!r} gives {CONVERT[convert_image_to]} channels but the "
                              f"model has {channels}; leave it out or match the model")
        world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's process count, as torch.distributed reads it
        if split_batches and train_batch_size % world:
            raise ConfigError(f"train_batch_size={train_batch_size} cannot be split over {world} processes; "
                              f"use a multiple of {world} or split_batches=False")
        if ema_update_every < 1:
            raise ConfigError(f"ema_update_every must be a positive number of steps; got {ema_update_every!r}")
        self.save_and_sample_every = save_and_sample_every
        self.train_num_steps = train_num_steps
        self.step = 0
        self.log = log
        self._base = replace(
            config,
            data=replace(config.data, dataset=f"folder:{Path(folder).expanduser().resolve()}",
                         image_size=image_size, channels=channels,
                         hflip=bool(augment_horizontal_flip), num_workers=-1 if num_workers is None else num_workers),
            train=replace(config.train, batch_size=train_batch_size // world if split_batches else train_batch_size,
                          grad_accum=gradient_accumulate_every, lr=float(train_lr), adam_betas=tuple(adam_betas),
                          ema_decay=float(ema_decay) ** (1.0 / ema_update_every), grad_clip=float(max_grad_norm),
                          sample_every=save_and_sample_every, save_every=save_and_sample_every,
                          keep_last=max(1, train_num_steps // max(save_and_sample_every, 1) + 1),
                          num_samples=num_samples, bf16=bool(amp), device=device, seed=seed),
        )
        self._resume_ok = False  # set by train() and load(): the run in results_folder is ours to continue
        self.ema = EMAView(copy.deepcopy(diffusion_model).eval().requires_grad_(False))

    @property
    def config(self) -> RunConfig:
        """The run's configuration, with the current ``train_num_steps``."""
        return replace(self._base, train=replace(self._base.train, max_steps=self.train_num_steps))

    def _milestone_path(self, milestone: int) -> Path:
        saved = self.results_folder / f"model-{milestone}"
        if saved.is_dir():
            return saved
        return self.results_folder / "checkpoints" / f"step_{milestone * self.save_and_sample_every:08d}"

    def _sync(self, checkpoint: Path) -> None:
        """The weights of ``checkpoint`` into the user's model and into ``self.ema.ema_model``."""
        ckpt = read_checkpoint(checkpoint)
        load_model_weights(self.model.model, ckpt.weights(ema=False), ckpt.path / "model.safetensors")
        load_model_weights(self.ema.ema_model.model, ckpt.weights(ema=True), ckpt.path / "ema.safetensors")
        self.ema.ema_model.to(self.model.device)
        self.step = ckpt.step

    def train(self) -> None:
        """Train up to ``train_num_steps``: a new run, or the continuation of the one this trainer
        trained or loaded (exactly as if it had not stopped)."""
        from .training.loop import train

        latest = list_checkpoints(self.results_folder)
        resume = None
        if latest and self._resume_ok:
            if read_checkpoint(latest[-1]).step != self.step:
                raise CheckpointError(
                    f"the loaded milestone is step {self.step} but the run in {self.results_folder} has reached step "
                    f"{read_checkpoint(latest[-1]).step}; continuing from an earlier milestone would mix two histories: "
                    "load the latest milestone, or copy that one into a new results_folder"
                )
            resume = self.results_folder
        elif self.results_folder.exists():
            if latest or any(self.results_folder.iterdir()):
                found = f"a run at step {read_checkpoint(latest[-1]).step}" if latest else "files"
                raise ConfigError(
                    f"results_folder {self.results_folder} already holds {found}; continue it with "
                    "trainer.load(milestone) then trainer.train(), or choose another results_folder"
                )
            self.results_folder.rmdir()  # empty: the run directory is made in its place
        # a fine-tune's loop reads (and records) the run it starts from itself
        weights = None if resume or self._base.train.init_from else {
            k: v.detach().cpu() for k, v in self.model.model.state_dict().items()}
        result = train(self.config, resume=resume, log=self.log, initial_weights=weights)
        self._resume_ok = True
        if result.is_main and result.checkpoint is not None:
            self._sync(result.checkpoint)
        self.log("training complete")

    def save(self, milestone: int) -> Path:
        """Copy the current state (the run's latest checkpoint) to ``results_folder/model-<milestone>``."""
        latest = list_checkpoints(self.results_folder)
        if not latest or not self._resume_ok:
            raise CheckpointError("there is nothing to save before trainer.train() or trainer.load()")
        target = self.results_folder / f"model-{milestone}"
        tmp = self.results_folder / f".model-{milestone}-{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(latest[-1], tmp)
        old = self.results_folder / f".model-{milestone}-{os.getpid()}.old"
        if target.exists():
            os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
        return target

    def load(self, milestone: int) -> None:
        """Load milestone ``milestone`` (``model-<milestone>`` if saved by hand, else the
        checkpoint of step ``milestone * save_and_sample_every``) into the model and the EMA;
        a following ``train()`` continues from it."""
        path = self._milestone_path(milestone)
        if not path.is_dir():
            raise CheckpointError(f"no milestone {milestone} in {self.results_folder}: neither model-{milestone} nor "
                                  f"checkpoints/{path.name} exists")
        saved = read_checkpoint(path).config
        for section in ("model", "diffusion"):
            if getattr(saved, section) != getattr(self._base, section):
                raise CheckpointError(f"milestone {milestone} in {self.results_folder} was trained with other "
                                      f"[{section}] settings than this trainer's model")
        self._sync(path)
        self._resume_ok = True


__all__ = ["EMAView", "Trainer"]
