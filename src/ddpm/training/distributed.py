"""Several processes, one model: PyTorch's DistributedDataParallel as launched by torchrun.

``torchrun --nproc_per_node=N -m ddpm train ...`` starts N copies of the trainer and tells each
its rank through the launcher's standard variables; ``torch.distributed`` reads them. GPUs talk
over NCCL, CPUs over gloo. Rank 0 alone writes files and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we joined the process group, so we leave it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process on a multi-GPU machine: cuda:<local rank> (under torchrun a GPU index
        given with --device would put every rank on the same GPU)."""
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_true(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` holds on every rank (so all ranks take the same branch)."""
        return self._reduce_flag(flag, device, dist.ReduceOp.MIN)

    def any_true(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` holds on some rank (so all ranks stop together)."""
        return self._reduce_flag(flag, device, dist.ReduceOp.MAX)

    def _reduce_flag(self, flag: bool, device: torch.device, op) -> bool:
        """``flag`` reduced over the ranks by ``op`` (MIN: and, MAX: or), as a 0/1 tensor."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=op)
        return bool(t.item() > 0.5)

    def from_main(self, value):
        """Rank 0's ``value`` on every rank (a small picklable object, such as a path)."""
        if not self.enabled:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def shutdown(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group when started by torchrun; a single process otherwise."""
    if not dist.is_torchelastic_launched():
        return Distributed()
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run without torchrun")
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    # torchrun's protocol names each process's GPU on its node in LOCAL_RANK
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    state = Distributed(rank=rank, world_size=world, local_rank=local_rank, owns_group=owns)
    if device.type == "cuda":
        torch.cuda.set_device(state.device(device))
    return state
