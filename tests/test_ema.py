import pytest
import torch

from ddpm.errors import ConfigError
from ddpm.training.ema import EMA


def test_ema_update_is_the_exponential_average():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9, warmup=False)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v, 0.9 * start[k] + 0.1 * (start[k] + 1.0))
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_warmup_raises_the_decay_gradually():
    ema = EMA(torch.nn.Linear(1, 1), decay=0.999, warmup=True)
    decays = []
    for _ in range(3):
        decays.append(ema.current_decay())
        ema.updates += 1
    assert decays == pytest.approx([0.1, 2 / 11, 3 / 12])
    ema.updates = 10**6
    assert ema.current_decay() == 0.999


def test_buffers_are_copied_and_state_round_trips():
    model = torch.nn.BatchNorm1d(2)
    ema = EMA(model, decay=0.5)
    model.running_mean.fill_(3.0)
    ema.update(model)
    assert torch.equal(ema.model.running_mean, model.running_mean)
    other = EMA(model, decay=0.5)
    other.load_state_dict(ema.state_dict(), updates=7)
    assert other.updates == 7 and torch.equal(other.model.running_mean, model.running_mean)


def test_bad_decay():
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        EMA(torch.nn.Linear(1, 1), decay=1.5)
