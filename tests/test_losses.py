import pytest
import torch

from ddpm.errors import ConfigError
from ddpm.losses import min_snr_weight, training_losses
from ddpm.models import Unet
from ddpm.schedules import get_schedule

S = get_schedule("linear", 100)


def _batch():
    g = torch.Generator().manual_seed(0)
    # two blobs, so there is something to learn
    x = torch.zeros(8, 1, 8, 8)
    x[:4, :, 2:6, 2:6] = 1.0
    x[4:, :, :, :3] = 1.0
    return x * 2 - 1 + 0.05 * torch.randn(x.shape, generator=g)


def _fixed_loss(model, **kw):
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return training_losses(lambda x, t: model(x, t), S, _batch(), generator=g, **kw).loss.mean().item()


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
@pytest.mark.parametrize("loss_type", ["l2", "l1"])
def test_every_objective_and_loss_type_trains(objective, loss_type):
    torch.manual_seed(0)
    model = Unet(dim=16, dim_mults=(1, 2), channels=1)
    kw = dict(objective=objective, loss_type=loss_type)
    before = _fixed_loss(model, **kw)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x0, g = _batch(), torch.Generator().manual_seed(1)
    for _ in range(40):
        loss = training_losses(lambda x, t: model(x, t), S, x0, generator=g, **kw).loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _fixed_loss(model, **kw)
    assert after < 0.8 * before, (before, after)


def test_hybrid_loss_trains_and_stops_the_vlb_gradient_at_the_mean():
    torch.manual_seed(0)
    model = Unet(dim=16, dim_mults=(1, 2), channels=1, learned_variance=True)
    kw = dict(variance_type="learned_range")
    before = _fixed_loss(model, **kw)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        loss = training_losses(lambda x, t: model(x, t), S, _batch(), generator=g, **kw).loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert _fixed_loss(model, **kw) < 0.8 * before

    # A "network" whose output is a leaf: the VLB term must send gradient only to the variance half.
    out = torch.zeros(2, 2, 4, 4, requires_grad=True)
    x0 = torch.zeros(2, 1, 4, 4)
    terms = training_losses(lambda x, t: out, S, x0, variance_type="learned_range", t=torch.tensor([5, 50]),
                            noise=torch.ones_like(x0))
    (grad,) = torch.autograd.grad(terms.vlb.sum(), out)
    assert grad[:, :1].abs().max().item() == 0.0
    assert grad[:, 1:].abs().max().item() > 0.0
    # lambda * T scaling: the VLB part equals 0.001 * 100 * the bound's term
    from ddpm.likelihood import vb_terms_bpd
    from ddpm.diffusion import q_sample

    t = torch.tensor([5, 50])
    xt = q_sample(S, x0, t, torch.ones_like(x0))
    raw = vb_terms_bpd(S, out.detach(), x0, xt, t, variance_type="learned_range", clip=False)
    torch.testing.assert_close(terms.vlb.detach(), raw * 0.1)


def test_perfect_prediction_has_zero_loss():
    x0 = torch.rand(3, 1, 4, 4) * 2 - 1
    noise = torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 10, 99])
    for objective, truth in (("pred_noise", noise), ("pred_x0", x0)):
        terms = training_losses(lambda x, tt: truth, S, x0, objective=objective, t=t, noise=noise)
        assert terms.loss.abs().max().item() < 1e-10


def test_min_snr_weights():
    t = torch.tensor([0, 50, 99])
    snr = S.alphas_cumprod[t] / (1 - S.alphas_cumprod[t])
    assert snr[0] > 5 > snr[2]
    expected_x0 = snr.clamp(max=5)
    torch.testing.assert_close(min_snr_weight(S, t, "pred_x0", 5.0), expected_x0.float())
    torch.testing.assert_close(min_snr_weight(S, t, "pred_noise", 5.0), (expected_x0 / snr).float())
    torch.testing.assert_close(min_snr_weight(S, t, "pred_v", 5.0), (expected_x0 / (snr + 1)).float())
    zero = get_schedule("linear", 100, zero_terminal_snr=True)
    assert min_snr_weight(zero, torch.tensor([99]), "pred_noise", 5.0).item() == 1.0


def test_min_snr_weighting_scales_the_loss():
    x0 = torch.zeros(3, 1, 4, 4)
    t = torch.tensor([0, 50, 99])
    plain = training_losses(lambda x, tt: torch.zeros_like(x), S, x0, t=t, noise=torch.ones_like(x0))
    weighted = training_losses(lambda x, tt: torch.zeros_like(x), S, x0, t=t, noise=torch.ones_like(x0), min_snr_gamma=5.0)
    torch.testing.assert_close(weighted.loss, plain.loss * min_snr_weight(S, t, "pred_noise", 5.0))


def test_offset_noise_adds_a_per_channel_constant():
    x0 = torch.zeros(64, 2, 8, 8)
    seen = {}

    def model(x, t):
        seen["x"] = x
        return torch.zeros_like(x)

    t = torch.full((64,), 99)
    training_losses(model, S, x0, t=t, offset_noise_strength=1.0, generator=torch.Generator().manual_seed(0))
    xt = seen["x"] / S.sqrt_one_minus_alphas_cumprod[99].item()  # x0 = 0, so this is the noise
    # the per-image channel means now vary with variance about 1 + 1/64 instead of 1/64
    assert xt.mean(dim=(2, 3)).var().item() > 0.5


def test_bad_loss_type():
    with pytest.raises(ConfigError, match="unknown loss type 'huber'; choose one of l2, l1"):
        training_losses(lambda x, t: x, S, torch.zeros(1, 1, 2, 2), loss_type="huber")
