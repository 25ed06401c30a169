"""``ddpm import diffusers:SOURCE``: a diffusers DDPM (a local folder or a Hub id) as an ordinary run.

The run directory is what training writes: ``config.toml`` and one checkpoint (step 0) whose
``model.safetensors`` and ``ema.safetensors`` both hold the imported weights and whose config names the
network as diffusers' UNet2DModel config (``[model] diffusers_unet``), so every reader of a run
(``ddpm.load_run``, sample, eval, inpaint, img2img, viz, serve, distill, a fine-tune) builds it with the
same :func:`ddpm.runs.build.build_unet` as any other run. ``import.json`` beside it records where
it came from (the Hub id, the revision asked for and the commit it resolved to, or the folder) and the
sha256 of the weights file read and of the weights written.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from .._version import __version__
from ..config import RunConfig, to_toml
from ..errors import ConfigError
from ..fileio import atomic_write_text, sha256_of
from ..models.foreign import DiffusersUnet, config_json, diffusers_version
from ..runs.checkpoint import check_fit, save_checkpoint
from ..runs.run_dir import StartingRun
from ..runs.validate import validate_config
from .hub import download, is_hub_id
from .scheduler import DEFAULTS, run_settings
from .source import load_weights, read_folder

PREFIX = "diffusers:"


def split_source(source: str) -> str:
    """SOURCE of ``diffusers:SOURCE`` (one sentence for another prefix)."""
    if not source.startswith(PREFIX) or not source[len(PREFIX):]:
        raise ConfigError(f"unknown import source {source!r}; give diffusers:FOLDER or diffusers:OWNER/NAME (a Hub id)")
    return source[len(PREFIX):]


def import_diffusers(
    source: str | Path,
    out: str | Path,
    *,
    revision: str | None = None,
    scheduler: dict[str, Any] | None = None,
    dataset: str = "",
    overwrite: bool = False,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Path:
    """Import the diffusers model at ``source`` (a folder, or a Hub id downloaded with huggingface_hub
    into its cache, or ``cache_dir``, from ``endpoint``) as the run directory ``out``; returns ``out``.

    ``scheduler``: diffusers scheduler settings laid over the folder's own scheduler config (a bare
    ``unet/`` folder has none: DDPMScheduler's defaults fill the rest). ``dataset``: the data set
    ``ddpm eval`` compares its samples with (e.g. ``cifar10``), recorded in the run. An existing
    ``out`` is replaced only with ``overwrite``, and only once the import has succeeded."""
    text = str(source)
    local = Path(text)
    record: dict[str, Any] = {"format": "torch-ddpm import", "from": "diffusers"}
    if local.exists():
        folder_path = local
        record["path"] = str(local.resolve())
    elif is_hub_id(text):
        log(f"downloading {text} from the Hub")
        folder_path, commit = download(text, revision, cache_dir=cache_dir, endpoint=endpoint)
        record.update(hub_id=text, revision=revision or "main", commit=commit)
    else:
        raise ConfigError(f"{text!r} is neither a folder nor a Hub id (OWNER/NAME, e.g. google/ddpm-cifar10-32)")
    if revision is not None and "hub_id" not in record:
        raise ConfigError("--revision applies to a Hub id, not to a local folder")
    folder = read_folder(folder_path)
    sched = dict(folder.scheduler_config or {})
    sched.update(scheduler or {})
    if folder.scheduler_config is None and not scheduler:
        raise ConfigError(f"{folder.unet_dir} has no scheduler config beside it; give its settings with --scheduler "
                          "(e.g. --scheduler variance_type=fixed_large), or import the pipeline folder")
    net = _build_on_meta(folder.unet_config)
    config = run_config(net, sched, out, dataset)
    validate_config(config)
    state = {"net." + k: v for k, v in load_weights(folder.weights_path).items()}
    check_fit(net, {k: tuple(v.shape) for k, v in state.items()}, folder.weights_path)
    record.update(weights_file=str(folder.weights_path.relative_to(folder.root)) if folder.weights_path.is_relative_to(folder.root)
                  else str(folder.weights_path), weights_sha256=sha256_of(folder.weights_path),
                  unet_config=folder.unet_config, scheduler_config={**DEFAULTS, **sched} if folder.scheduler_config is None else sched,
                  diffusers=diffusers_version(), torch_ddpm=__version__,
                  imported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    out = Path(out)
    start = StartingRun(out.parent, out.name, dataset or "imported", overwrite=overwrite)
    try:
        ckpt = save_checkpoint(start.path, 0, model_state=state, ema_state=state, train_state={"step": 0, "imported": True},
                               config=config, keep_last=1)
        record["stored_weights_sha256"] = sha256_of(ckpt / "ema.safetensors")
        atomic_write_text(start.path / "config.toml", to_toml(config))
        atomic_write_text(start.path / "import.json", json.dumps(record, indent=2) + "\n")
        start.keep()
    except BaseException:
        start.discard()
        raise
    finally:
        start.release()
    log(f"imported {text} ({sum(v.numel() for v in state.values()) / 1e6:.1f}M parameters) as {start.path}")
    return start.path


def _build_on_meta(unet_config: dict[str, Any]) -> DiffusersUnet:
    with torch.device("meta"):  # nothing allocated: the architecture and its tensor names only
        return DiffusersUnet(unet_config)


def run_config(net: DiffusersUnet, scheduler: dict[str, Any], out: str | Path, dataset: str) -> RunConfig:
    """The run configuration of an imported network ``net`` and its scheduler settings."""
    c = net.net.config
    size = c.sample_size
    if size is None:
        raise ConfigError("the UNet config has no sample_size, so the image size it was trained at is unknown")
    size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    stored = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(c).items() if not k.startswith("_")}
    settings = run_settings(scheduler, learned_variance=net.learned_variance)
    base = RunConfig()
    out = Path(out)
    conditional = net.num_classes is not None
    return replace(
        base, name=out.name, runs_dir=str(out.parent),
        model=replace(base.model, diffusers_unet=config_json(stored), learned_variance=net.learned_variance),
        diffusion=replace(base.diffusion, loss_type="l2", min_snr_gamma=0.0, p_uncond=0.0, **settings["diffusion"]),
        data=replace(base.data, dataset=dataset, image_size=size, channels=net.channels,
                     class_conditional=conditional, num_classes=net.num_classes or 0),
        sample=replace(base.sample, guidance_scale=1.0, **settings["sample"]),
    )
