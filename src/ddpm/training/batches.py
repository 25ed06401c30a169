"""Which images and which random numbers each training step uses, derived from the seed alone.

Micro-batch ``m`` of a run is fully determined by (seed, m): the epoch's permutation of the data
set, and a generator for the diffusion time, the noise, flips and label dropout. Nothing depends
on what ran before, so a resumed run continues exactly, and with several processes each rank
takes its slice of the same global batch and of the same random draws: two ranks with batch B
compute what one process computes with batch 2B.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence: well spread, stable across runs)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass
class BatchPlan:
    num_images: int
    batch_size: int  # per process
    world_size: int = 1
    rank: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1; got {self.batch_size}")
        if self.num_images < self.global_batch:
            raise ConfigError(
                f"the data set has {self.num_images} images, fewer than one batch of {self.global_batch}; "
                "lower --batch-size"
            )
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return self.num_images // self.global_batch  # the incomplete last batch is dropped

    @property
    def rank_slice(self) -> slice:
        return slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)

    def indices(self, micro_batch: int) -> torch.Tensor:
        """Data-set indices of this process's part of micro-batch ``m`` [batch_size]."""
        epoch, pos = divmod(micro_batch, self.batches_per_epoch)
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, 0, epoch])
            self._perm = torch.from_numpy(rng.permutation(self.num_images))
            self._epoch = epoch
        start = pos * self.global_batch
        return self._perm[start : start + self.global_batch][self.rank_slice]

    def generator(self, micro_batch: int, device: torch.device) -> torch.Generator:
        """The generator of micro-batch ``m``'s random draws (the same on every rank)."""
        return torch.Generator(device=device).manual_seed(derived_seed(self.seed, 1, micro_batch))
