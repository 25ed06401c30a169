"""One round of progressive distillation (Salimans & Ho 2022, Algorithm 2), one step at a time.

A :class:`RoundTrainer` holds what a round changes: the student, its AdamW and learning-rate
schedule (warm-up, then linear decay to zero at the round's end, as the paper's code anneals),
and an EMA of its weights. ``step(m)`` takes optimizer step ``m`` of the whole distillation:

    x ~ data, i ~ Uniform{0..N-1}, eps ~ N(0, I)            (batch and draws fixed by seed and m)
    z_t = alpha_t x + sigma_t eps at the student's timestep t = t_{2i+1}
    x_tilde = two deterministic DDIM steps of the teacher, as an x_0 target (target.py)
    loss = w(t) ||x_tilde - x_hat_student(z_t)||^2

At the noisiest step t = T-1 the student sees the pure noise eps itself, which is what sampling
starts from. The paper trains that step at SNR 0, where z_1 = eps exactly; for a schedule whose
alpha_bar_{T-1} is not 0 (the linear one ends at 4e-5) this keeps the paper's property that the
first student step is trained on exactly the input it gets when sampling, without changing the
teacher's schedule. Nothing else depends on the previous steps, so a resumed round continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..data import ImageDataset
from ..diffusion import q_sample
from ..schedules import Schedule
from ..training.batches import BatchPlan, derived_seed
from ..runs.build import adamw_kernel
from ..training.ema import EMA
from .target import step_triples, student_loss, teacher_target

Teacher = Callable[[Tensor, Tensor, Tensor | None], Tensor]
"""``teacher(z_t, t, labels or None) -> output`` in the teacher's objective (guidance inside)."""


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    finite: bool


class RoundTrainer:
    """The student's optimisation in one round; the settings come from ``config``'s [train]
    (batch_size, lr, weight_decay, warmup_steps, grad_clip, ema_decay, ema_warmup, seed),
    [distill] (steps_per_round, distill_weighting), [diffusion] (objective: the student's) and
    [data] (hflip, class_conditional) sections. ``first_step`` is the round's first global step."""

    def __init__(
        self,
        config: RunConfig,
        student: nn.Module,
        teacher: Teacher,
        teacher_objective: str,
        schedule: Schedule,
        teacher_grid: Sequence[int],
        data: ImageDataset,
        first_step: int,
        device: torch.device,
        *,
        autocast: bool = False,
    ):
        tc, dc = config.train, config.distill
        self.config, self.student, self.teacher, self.data = config, student, teacher, data
        self.teacher_objective, self.schedule, self.device = teacher_objective, schedule, device
        self.first_step = first_step
        self.ema = EMA(student, tc.ema_decay, tc.ema_warmup)
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                                           **adamw_kernel(device))
        length, warmup = dc.steps_per_round, max(tc.warmup_steps, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: min(1.0, (k + 1) / warmup) * max(0.0, 1.0 - k / length))
        self.plan = BatchPlan(len(data), tc.batch_size, 1, 0, tc.seed)
        t, t_mid, t_end = step_triples(list(teacher_grid))
        self.t, self.t_mid, self.t_end = t.to(device), t_mid.to(device), t_end.to(device)
        self.learned_variance = bool(getattr(student, "learned_variance", False))
        self.teacher_learned_variance = self.learned_variance  # the same architecture
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast)

    def batch(self, m: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Step ``m``'s noisy input z_t [B, C, H, W], the student's timesteps t [B] and the labels."""
        g = self.plan.generator(m, self.device)
        B = self.plan.batch_size
        C, H, W = self.data.images.shape[1:]
        i = torch.randint(0, len(self.t), (B,), device=self.device, generator=g)
        noise = torch.randn((B, C, H, W), device=self.device, generator=g)
        flip = torch.rand(B, device=self.device, generator=g) < 0.5
        idx = self.plan.indices(m)
        x = self.data.to_float(idx).to(self.device)
        if self.config.data.hflip:
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        labels = self.data.labels[idx].to(self.device) if self.config.data.class_conditional else None
        t = self.t[i]
        top = (t == self.schedule.num_timesteps - 1)[:, None, None, None]
        z = torch.where(top, noise, q_sample(self.schedule, x, t, noise))  # pure noise at T-1 (docstring)
        return z, i, labels

    def step(self, m: int) -> StepResult:
        """Optimizer step ``m`` (0-based, counted over the whole distillation)."""
        tc, dc = self.config.train, self.config.distill
        torch.manual_seed(derived_seed(tc.seed, 3, 0, m))  # a student with dropout: seeded per step
        z, i, labels = self.batch(m)
        t = self.t[i]
        with self.autocast:
            target = teacher_target(lambda x, tt: self.teacher(x, tt, labels), self.schedule, z, t, self.t_mid[i],
                                    self.t_end[i], objective=self.teacher_objective,
                                    learned_variance=self.teacher_learned_variance)
            out = self.student(z, t) if labels is None else self.student(z, t, labels)
            loss = student_loss(out, z, t, target, self.schedule, objective=self.config.diffusion.objective,
                                weighting=dc.distill_weighting, learned_variance=self.learned_variance).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = tc.grad_clip if tc.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), clip)
        value = float(loss.detach())
        finite = bool(torch.isfinite(loss.detach())) and bool(torch.isfinite(grad_norm))
        if finite:
            self.optimizer.step()
            self.ema.update(self.student)
        else:
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()  # the schedule follows the step count, taken or skipped
        return StepResult(loss=value, grad_norm=float(grad_norm), finite=finite)

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "ema_updates": self.ema.updates}

    def load_state(self, state: dict, ema_weights: dict[str, Tensor]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.ema.load_state_dict(ema_weights, int(state["ema_updates"]))


__all__ = ["RoundTrainer", "StepResult", "Teacher"]
