"""A run on disk: its checkpoints, building its model from its config, its directory and lock,
the records written beside what it made, its settings checked, and :func:`load_run`.

``ddpm.training`` trains; everything that reads or writes a run without training it lives here:

- ``checkpoint``: one directory per saved step, written whole or not at all; reading it back safely.
- ``build``: the Unet and the GaussianDiffusion a config describes; the device and bf16 choice.
- ``run_dir``: the run directory, its one-writer lock and metrics.csv.
- ``validate``: every setting of a run (and of sampling from it) checked before anything is made.
- ``records``: what made an output, written beside it and into each PNG.
- ``load``: :func:`load_run`, the one way to load a run's model.
- ``init_from``: fine-tuning, a new run's config completed from the run whose weights it starts from.
"""

from .checkpoint import Checkpoint, list_checkpoints, read_checkpoint
from .init_from import finetune_config, read_init_record
from .load import load_for_sampling, load_run

__all__ = ["Checkpoint", "finetune_config", "list_checkpoints", "load_for_sampling", "load_run", "read_checkpoint",
           "read_init_record"]
