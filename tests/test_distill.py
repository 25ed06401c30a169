"""Progressive distillation's math (ddpm.distill.target, grids, trainer) against closed forms."""

import math

import pytest
import torch
from torch import nn

from ddpm.analytic import gaussian_model
from ddpm.config import RunConfig, apply_overrides
from ddpm.data.base import ImageDataset
from ddpm.distill import RoundTrainer, halve, loss_weight, round_grids, step_triples, student_loss, teacher_target
from ddpm.distill.grids import nests
from ddpm.errors import ConfigError
from ddpm.sampling import get_timesteps, sample_ddim
from ddpm.schedules import get_schedule

MEAN, STD = 0.3, 0.2


def _exact_ddim(s, z, t, to, mean=MEAN, std=STD):
    """One DDIM step of the exact denoiser of N(mean, std^2) data, written out per sample from
    the Gaussian posterior (independently of the library): z_to = a_to E[x|z] + s_to E[eps|z]."""
    out = torch.empty_like(z)
    ab = s.alphas_cumprod.tolist()
    for b in range(z.shape[0]):
        a, sig = math.sqrt(ab[t[b]]), math.sqrt(1 - ab[t[b]])
        x0 = mean + a * std**2 * (z[b] - a * mean) / (a**2 * std**2 + sig**2)
        eps = (z[b] - a * x0) / sig
        a2, s2 = (1.0, 0.0) if to[b] < 0 else (math.sqrt(ab[to[b]]), math.sqrt(1 - ab[to[b]]))
        out[b] = a2 * x0 + s2 * eps
    return out


@pytest.mark.parametrize("objective", ["pred_noise", "pred_v", "pred_x0"])
def test_target_makes_one_student_step_land_on_two_teacher_steps(objective):
    s = get_schedule("linear", 1000)
    teacher = gaussian_model(s, MEAN, STD, objective)
    z = torch.randn(6, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t, mid, end = torch.tensor([999, 999, 600, 300, 40, 10]), torch.tensor([900, 500, 500, 200, 20, 3]), \
        torch.tensor([800, -1, 400, -1, 5, -1])
    x_tilde = teacher_target(teacher, s, z, t, mid, end, objective=objective)
    want = _exact_ddim(s, _exact_ddim(s, z, t, mid), mid, end)  # the teacher's two steps
    # the student's one DDIM step with x_hat = x_tilde: alpha'' x + (sigma'' / sigma_t)(z - alpha_t x)
    ab = s.alphas_cumprod
    a_t, s_t = ab[t].sqrt().view(-1, 1, 1, 1), (1 - ab[t]).sqrt().view(-1, 1, 1, 1)
    ab_e = torch.where(end >= 0, ab[end.clamp(min=0)], torch.ones(6, dtype=torch.float64))
    a_e, s_e = ab_e.sqrt().view(-1, 1, 1, 1), (1 - ab_e).sqrt().view(-1, 1, 1, 1)
    one_step = a_e * x_tilde + s_e / s_t * (z - a_t * x_tilde)
    assert torch.allclose(one_step, want, rtol=0, atol=1e-9)
    # ending on the clean image, the target is the teacher's x_0 prediction at the middle step
    clean = end < 0
    assert torch.allclose(x_tilde[clean], want[clean], atol=1e-12)


def test_loss_weights_and_the_student_loss():
    s = get_schedule("cosine", 1000)
    t = torch.tensor([0, 300, 700, 999])
    snr = s.alphas_cumprod[t] / (1 - s.alphas_cumprod[t])
    assert torch.allclose(loss_weight(s, t, "truncated-snr").double(), snr.clamp(min=1), rtol=1e-6)
    assert torch.allclose(loss_weight(s, t, "snr+1").double(), snr + 1, rtol=1e-6)
    with pytest.raises(ConfigError, match="unknown distillation weighting 'snr'; choose one of truncated-snr, snr\\+1"):
        loss_weight(s, t, "snr")
    # truncated SNR = max(||x - x_hat||^2, ||eps - eps_hat||^2) (Salimans & Ho section 4); SNR + 1 = ||v - v_hat||^2
    g = torch.Generator().manual_seed(1)
    x, eps = torch.rand(4, 1, 3, 3, generator=g) * 2 - 1, torch.randn(4, 1, 3, 3, generator=g)
    a, sig = s.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1).float(), s.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1).float()
    z = a * x + sig * eps
    x_hat = x + 0.1 * torch.randn(x.shape, generator=g)
    v_hat = a * (z - a * x_hat) / sig - sig * x_hat  # v of (x_hat, its eps)
    eps_hat = (z - a * x_hat) / sig
    mse = lambda u: ((u) ** 2).flatten(1).mean(1)  # noqa: E731
    got = student_loss(v_hat, z, t, x, s, objective="pred_v", weighting="truncated-snr")
    assert torch.allclose(got, torch.maximum(mse(x_hat - x), mse(eps_hat - eps)), rtol=1e-3)
    got = student_loss(x_hat, z, t, x, s, objective="pred_x0", weighting="snr+1")
    assert torch.allclose(got, mse(v_hat - (a * eps - sig * x)), rtol=1e-3)


def test_halving_is_exact_on_trailing_grids():
    for T in (16, 20, 100, 1000, 1024, 4000):
        s = get_schedule("linear", T)
        for to_steps in (1, 2, 4, 8):
            for rounds in range(1, 12):
                if to_steps * 2**rounds > T:
                    break
                grids = round_grids(s, to_steps, rounds)
                assert [len(g) for g in grids] == [to_steps * 2 ** (rounds - k) for k in range(rounds + 1)]
                for k in range(rounds):  # the student's grid is every second point of its teacher's ...
                    assert grids[k + 1] == grids[k][1::2] == halve(grids[k])
                for g in grids:  # ... which is the trailing grid that ddpm sample draws on
                    assert g == get_timesteps("trailing", s, len(g)) and g[-1] == T - 1
    s = get_schedule("linear", 1000)
    assert round_grids(s, 4, 1) == [[124, 249, 374, 499, 624, 749, 874, 999], [249, 499, 749, 999]]


def test_halving_refuses_grids_that_would_not_nest():
    s = get_schedule("linear", 1000)
    assert not nests(s, 3, 5)  # T / 96 is not exact in binary, and rounding splits the two grids
    with pytest.raises(ConfigError, match=r"cannot halve exactly; --to-steps 1, 2, 4, 5, 8, 10 would"):
        round_grids(s, 3, 5)
    with pytest.raises(ConfigError, match="starts from a teacher of 2048 DDIM steps, more than its 1000 timesteps; "
                                          "use fewer --rounds \\(at most 6\\)"):
        round_grids(s, 8, 8)
    with pytest.raises(ConfigError, match="--rounds must be a positive integer; got 0"):
        round_grids(s, 4, 0)
    with pytest.raises(ConfigError, match="only a grid of an even number of timesteps can be halved; got 3"):
        halve([1, 2, 3])


def test_step_triples():
    t, mid, end = step_triples([124, 249, 374, 499])
    assert t.tolist() == [249, 499] and mid.tolist() == [124, 374] and end.tolist() == [-1, 249]


class AffinePerStep(nn.Module):
    """output = w[t] * z + b[t]: for Gaussian data every DDIM map is affine, so this small network
    can represent the two-step map exactly, and a round must find it."""

    def __init__(self, T: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(T))
        self.b = nn.Parameter(torch.zeros(T))

    def forward(self, z, t):
        return self.w[t].view(-1, 1, 1, 1) * z + self.b[t].view(-1, 1, 1, 1)


def _gaussian_images(n: int, seed: int = 0) -> ImageDataset:
    x = MEAN + STD * torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return ImageDataset(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8), None, None, "gaussian")


@pytest.mark.parametrize("student_objective, weighting", [("pred_v", "truncated-snr"), ("pred_x0", "snr+1")])
def test_one_round_learns_the_two_step_ddim_map_of_an_exact_teacher(student_objective, weighting):
    s = get_schedule("linear", 1000)
    teacher = gaussian_model(s, MEAN, STD, "pred_noise")
    grids = round_grids(s, 4, 1)  # the teacher's 8 trailing steps -> the student's 4
    config = apply_overrides(RunConfig(), {
        "batch_size": "64", "lr": "0.1", "warmup_steps": "0", "grad_clip": "0", "ema_decay": "0",
        "steps_per_round": "150", "objective": student_objective, "distill_weighting": weighting,
    })
    student = AffinePerStep(1000)
    trainer = RoundTrainer(config, student, lambda z, t, labels: teacher(z, t), "pred_noise", s, grids[0],
                           _gaussian_images(2048), 0, torch.device("cpu"))
    first = trainer.step(0).loss
    for m in range(1, 150):
        last = trainer.step(m).loss
    assert last < 1e-6 * first
    assert trainer.lr == 0.0  # the learning rate decays to zero at the round's end
    # the student's 4 DDIM steps against the teacher's 8, from the same noise (the library's sampler)
    x_T = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = sample_ddim(student, x_T, s, 4, grid="trailing", objective=student_objective, clip="none")
    theirs = sample_ddim(teacher, x_T, s, 8, grid="trailing", objective="pred_noise", clip="none")
    assert (ours - theirs).abs().max() < 2e-3  # measured 4e-4 and 8e-5: the rest is Adam's convergence
    # which is a map of its own: the teacher's 4 steps land elsewhere
    four = sample_ddim(teacher, x_T, s, 4, grid="trailing", objective="pred_noise", clip="none")
    assert (four - theirs).abs().max() > 0.05


def test_rounds_switch_to_the_student_objective_at_the_stated_steps():
    from ddpm.distill.settings import round_config

    s = get_schedule("linear", 1000)
    grids = round_grids(s, 1, 3)  # 8 -> 4 -> 2 -> 1
    config = apply_overrides(RunConfig(), {"to_steps": "1", "rounds": "3", "objective_from_steps": "2"})
    got = [(round_config(config, grids, r, "pred_noise").sample.steps,
            round_config(config, grids, r, "pred_noise").diffusion.objective) for r in (1, 2, 3)]
    assert got == [(4, "pred_noise"), (2, "pred_v"), (1, "pred_v")]
    every = apply_overrides(config, {"objective_from_steps": "0"})
    assert {round_config(every, grids, r, "pred_noise").diffusion.objective for r in (1, 2, 3)} == {"pred_v"}
