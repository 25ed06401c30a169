"""The training loop: Ho et al. Algorithm 1, repeated, with the bookkeeping a real run needs.

``train(config)`` reads top to bottom: data, model, optimizer, (resume), then the loop:
draw a batch, take a gradient step on the diffusion loss, update the EMA, and now and then log,
draw a sample grid from the EMA weights and write a checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from ..config import RunConfig, to_toml
from ..errors import CheckpointError, ConfigError, DDPMError
from ..fileio import atomic_write_text
from ..losses import draw_noise
from .batches import BatchPlan, derived_seed
from ..runs.build import adamw_kernel, build_diffusion, build_unet, pick_device, use_bf16, use_compile
from ..runs.checkpoint import check_fit, list_checkpoints, load_model_weights, read_checkpoint, save_checkpoint, weight_shapes
from .distributed import Distributed, init_distributed
from .ema import EMA
from .reporting import Reporter
from ..runs.run_dir import MetricsLog, RunLock, StartingRun
from .setup import StopRequest, check_resume, resolve_data
from .step import Micro, Stepper
from .text_setup import CaptionBatches, caption_embeddings, grid_prompts, resolve_captions
from .source import open_source
from ..runs.validate import validate_config
from ..runs.init_from import adopt_source, check_data_fits, read_initial_weights, write_init_record
from ..runs.init_from import open_source as open_init_source

MAX_NONFINITE_IN_A_ROW = 5


class TrainingInterrupted(DDPMError):
    """Ctrl-C or SIGTERM during training: the run stopped (after a checkpoint unless forced).
    ``is_main``: false in the other processes of a torchrun job, which leave the telling to rank 0."""

    def __init__(self, message: str, is_main: bool = True):
        super().__init__(message)
        self.is_main = is_main


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    last_loss: float
    elapsed_s: float
    is_main: bool = True  # False on the other ranks of a torchrun job (they write nothing)


def train(
    config: RunConfig,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
    initial_weights: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train a model as ``config`` says; with ``resume``, continue that run exactly.

    ``initial_weights`` (a new run only) start the network from these weights instead of the
    seed's initialisation (``ddpm.Trainer`` passes the model a user built). A new run whose
    ``config.train.init_from`` names a run or checkpoint is a fine-tune: it starts from that run's
    (EMA or raw) weights, and its [model], [diffusion] and image fields must be that run's
    (:func:`ddpm.runs.init_from.finetune_config` completes a config from it)."""
    if initial_weights is not None and resume is not None:
        raise ConfigError("initial weights apply to a new run; a resumed run continues from its checkpoint")
    if initial_weights is not None and config.train.init_from:
        raise ConfigError("initial weights and init_from both name the weights to start from; give one")
    if resume is None and not config.train.init_from and config.train.init_weights != "ema":
        raise ConfigError("--init-weights applies only with --init-from (the run whose weights a fine-tune starts from)")
    device = pick_device(config.train.device)
    dist = init_distributed(device)
    device = dist.device(device)
    say = log if dist.is_main else (lambda msg: None)
    try:
        with StopRequest() as stop:
            return _train(config, dist, device, resume, overwrite, say, progress, stop, initial_weights)
    finally:
        dist.shutdown()


def _train(config, dist: Distributed, device, resume, overwrite, log, progress, stop, initial_weights=None) -> TrainResult:
    lock = starting = None
    try:
        checkpoint = None
        if resume is not None:
            checkpoint = read_checkpoint(resume)
            if dist.is_main:  # hold the run first: a live one refuses here, and none can add a checkpoint after
                lock = RunLock(checkpoint.path.parent.parent).acquire()
                checkpoint = read_checkpoint(resume)
            log(f"resuming {checkpoint.path.parent.parent} from step {checkpoint.step}")
        source = None
        if checkpoint is None and config.train.init_from:  # a fine-tune: the network is the source's
            source = open_init_source(config.train.init_from, config.train.init_weights)
            config = adopt_source(source, config)
        data, config = resolve_data(config, dist, log)
        if source is not None:
            check_data_fits(source.config, config)
        captions = None
        if config.data.text_conditional:  # images without a usable caption are left out here
            data, captions, config = resolve_captions(config, data, log)
        validate_config(config)  # everything is checked before a directory is made or replaced
        tc = config.train
        plan = BatchPlan(len(data), tc.batch_size, dist.world_size, dist.rank, tc.seed)  # at least one batch of images
        init_record = None
        if source is not None:  # read, hashed and checked against the network before a directory is made
            initial_weights, init_record = read_initial_weights(source, tc.init_weights, lambda: build_unet(config))
            log(f"starting from the {'EMA' if tc.init_weights == 'ema' else 'raw'} weights of step {source.step} of "
                f"{source.path} (sha256 {init_record['sha256'][:12]})")
        if checkpoint is not None:
            check_resume(checkpoint.config, config, checkpoint)
            run_dir = checkpoint.path.parent.parent
        else:  # rank 0 makes the directory; the others learn its name
            if dist.is_main:
                starting = StartingRun(config.runs_dir, config.name, config.data.dataset, overwrite=overwrite)
                lock = starting.lock
            run_dir = Path(dist.from_main(str(starting.path) if starting else None))
        config = replace(config, name=run_dir.name)
        # what can fail only once the directory exists (the text encoder, the network's memory, ...)
        # fails before the first step; then the directory goes, and a run --overwrite set aside comes back
        started = starting.keep if starting is not None else (lambda: None)
        return _loop(config, dist, device, data, checkpoint, run_dir, log, progress, stop, plan, started, captions,
                     initial_weights, init_record)
    except BaseException:
        if starting is not None:
            starting.discard()
        raise
    finally:
        if lock is not None:
            lock.release()


def _is_out_of_memory(err: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; the CPU and MPS allocators raise a RuntimeError saying so."""
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def _loop(config, dist, device, data, checkpoint, run_dir, log, progress, stop, plan: BatchPlan, started: Callable[[], None],
          captions=None, initial_weights=None, init_record=None) -> TrainResult:
    tc = config.train
    if checkpoint is not None:
        with torch.device("meta"):  # check the weights against the config before allocating anything
            skeleton = build_unet(config)
        for name in ("model.safetensors", "ema.safetensors"):
            check_fit(skeleton, weight_shapes(checkpoint.path / name), checkpoint.path / name)
    torch.manual_seed(tc.seed)  # the same initial weights on every rank
    diffusion = build_diffusion(config).to(device)
    model = diffusion.model
    if initial_weights is not None:
        load_model_weights(model, initial_weights, "the initial weights")
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = EMA(model, tc.ema_decay, tc.ema_warmup)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=tuple(tc.adam_betas),
                                  **adamw_kernel(device))
    warmup = max(tc.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    step = nonfinite_total = 0
    if checkpoint is not None:
        load_model_weights(model, checkpoint.weights(ema=False), checkpoint.path / "model.safetensors")
        state = checkpoint.state()
        ema.load_state_dict(checkpoint.weights(ema=True), int(state["ema_updates"]))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        nonfinite_total = int(state.get("nonfinite_skipped", 0))
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if dist.enabled else None
    net = ddp if ddp is not None else model
    bf16 = use_bf16(tc.bf16, device)
    # decided by the whole run's length, not the steps left: a resumed run must compute as it began
    # (inductor's fused kernels round differently from eager ones), so that resume stays exact
    compiled = use_compile(tc.compile, device, tc.max_steps, bf16=bf16, processes=dist.world_size,
                           minutes=tc.max_minutes)
    if compiled:  # static shapes: inductor failed on a dynamic-shape recompile of the Unet (torch 2.14)
        net = torch.compile(net, dynamic=False)

    if dist.is_main:
        atomic_write_text(run_dir / "config.toml", to_toml(config))
        if init_record is not None:  # a fine-tune: where it started, written once
            write_init_record(run_dir, init_record)
        log(f"training on {len(data)} images of {data.name} ({device}{', bf16 autocast' if bf16 else ''}"
            f"{', torch.compile (the first steps compile it: minutes on a CPU)' if compiled else ''}, "
            f"{sum(p.numel() for p in model.parameters()):,} parameters); run directory: {run_dir}")
        if dist.enabled:
            log(f"{dist.world_size} processes, global batch {plan.global_batch}")
    metrics = MetricsLog(run_dir / "metrics.csv", resume_step=step) if dist.is_main else None
    text_batches = embeddings = prompts = None
    if captions is not None:  # the frozen encoder's embeddings of every caption, computed once
        embeddings = caption_embeddings(config, captions, run_dir, dist, device, log)
        text_batches, prompts = CaptionBatches(captions, embeddings), grid_prompts(config, data, captions)
    reporter = Reporter(config, run_dir, diffusion, ema, data, metrics, log, progress, step, enabled=dist.is_main,
                        prompts=prompts, text_encoder=embeddings)
    C, H, W = data.image_shape
    source = open_source(data, plan, device, num_workers=config.data.num_workers, log=log)
    stepper = Stepper(diffusion, net, optimizer, scheduler, ema, grad_accum=tc.grad_accum, grad_clip=tc.grad_clip,
                      bf16=bf16, ddp=ddp, dist=dist)

    def micro_batch(step: int, micro: int) -> Micro:
        m = step * tc.grad_accum + micro
        g = plan.generator(m, device)
        # random draws for the whole global batch, then this rank's slice (see batches.py)
        Bg, mine = plan.global_batch, plan.rank_slice
        t = torch.randint(0, config.diffusion.timesteps, (Bg,), device=device, generator=g)[mine]
        noise = draw_noise((Bg, C, H, W), config.diffusion.offset_noise_strength, generator=g, device=device)[mine]
        flip = (torch.rand(Bg, device=device, generator=g) < 0.5)[mine]
        keep = (torch.rand(Bg, device=device, generator=g) >= config.diffusion.p_uncond)[mine]
        # which of an image's captions it takes (label-derived captions have several)
        pick = torch.rand(Bg, device=device, generator=g)[mine] if text_batches is not None else None
        batch = source.get(m)  # the images of plan.indices(m), from memory or from workers
        x = batch.images
        if config.data.hflip:
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        labels = batch.labels if config.data.class_conditional else None
        # the captions of the images the batch holds (a streamed unreadable file's replacement brings its own)
        text = text_batches(batch.indices, pick).to(device) if text_batches is not None else None
        if tc.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return Micro(x, labels, t=t, noise=noise, keep=keep, text=text)

    start_time, stop_reason = time.monotonic(), "max_steps"
    last_ckpt = checkpoint.path if checkpoint is not None and dist.is_main else None
    saved_step = step if checkpoint is not None else -1
    nonfinite_in_a_row = 0

    def checkpoint_now() -> Path | None:
        nonlocal saved_step
        if not dist.is_main or saved_step == step:
            return last_ckpt
        train_state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema_updates": ema.updates,
            "nonfinite_skipped": nonfinite_total,
        }
        try:
            path = save_checkpoint(run_dir, step, model_state=model.state_dict(), ema_state=ema.state_dict(),
                                   train_state=train_state, config=config, keep_last=tc.keep_last)
        except OSError as err:
            raise CheckpointError(
                f"could not write the checkpoint of step {step} in {run_dir / 'checkpoints'} "
                f"({err.strerror or err}); earlier checkpoints are intact: free some space, then continue "
                f"with ddpm train --resume {run_dir}"
            ) from None
        saved_step = step
        return path

    started()  # from here on the run exists: a failure leaves its directory for --resume
    try:
        while step < tc.max_steps:
            # dropout draws from the global generator: seeded per step and rank, so a resumed run
            # draws what an uninterrupted one would (and the checkpoint needs no RNG state)
            torch.manual_seed(derived_seed(tc.seed, 3, dist.rank, step))
            result = stepper.step(lambda micro: micro_batch(step, micro))
            if result.finite:
                nonfinite_in_a_row = 0
            else:
                # skip the update and go on with the next batch: a step's batch and noise are fixed
                # by the seed, so trying it again would fail the same way; several in a row mean
                # that training has diverged
                nonfinite_in_a_row += 1
                nonfinite_total += 1
                log(f"warning: non-finite loss or gradient at step {step + 1}; the step was skipped")
                if nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
                    stop_reason = "nonfinite"
                    break
            step += 1
            if result.finite:
                reporter.step(step, result.loss, scheduler.get_last_lr()[0], float(result.grad_norm), plan.batch_size * tc.grad_accum * dist.world_size, nonfinite_total)
            else:
                reporter.skipped(nonfinite_total)
            if tc.sample_every and step % tc.sample_every == 0 and step < tc.max_steps:
                reporter.samples(step, device)
            if tc.save_every and step % tc.save_every == 0 and step < tc.max_steps:
                last_ckpt = checkpoint_now()
            if dist.any_true(stop.requested, device):
                stop_reason = "interrupted"
                break
            if tc.max_minutes and dist.any_true(time.monotonic() - start_time > tc.max_minutes * 60, device):
                stop_reason = "max_minutes"
                break
        if stop_reason == "nonfinite":
            good = list_checkpoints(run_dir)
            where_good = f"the last good checkpoint is {good[-1]}" if good else "no checkpoint had been written yet"
            raise ConfigError(
                f"training stopped at step {step}: {MAX_NONFINITE_IN_A_ROW} steps in a row had a non-finite loss or "
                "gradient; likely causes: a learning rate too high (--lr), bf16 overflow (--no-bf16), or bad data "
                f"(NaN or constant images); {where_good}"
            )
        last_ckpt = checkpoint_now()
        if stop_reason == "interrupted":
            where = f"; checkpoint saved to {last_ckpt}" if last_ckpt else ""
            raise TrainingInterrupted(f"interrupted at step {step}{where}; continue with: ddpm train --resume {run_dir}",
                                      dist.is_main)
        reporter.samples(step, device)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, possibly mid-update, so write nothing
        where = f"the last checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written"
        raise TrainingInterrupted(f"stopped at once during step {step + 1}; {where}; continue with: "
                                  f"ddpm train --resume {run_dir}", dist.is_main) from None
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not _is_out_of_memory(err):
            raise
        raise ConfigError(
            f"out of memory at step {step + 1} on {device} with batch size {tc.batch_size} and images of "
            f"{H}x{W}; lower --batch-size (keeping the effective batch with --grad-accum) or use --grad-checkpoint"
        ) from None
    finally:
        source.close()
        reporter.close()
    elapsed = time.monotonic() - start_time
    if dist.is_main:
        why = {"max_steps": "reached max_steps", "max_minutes": "reached max_minutes"}[stop_reason]
        log(f"done: {why} at step {step} in {elapsed:.0f} s; run directory: {run_dir}")
    return TrainResult(run_dir=run_dir, step=step, checkpoint=last_ckpt, last_loss=reporter.last_loss, elapsed_s=elapsed,
                       is_main=dist.is_main)
