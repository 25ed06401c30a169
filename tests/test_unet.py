import pytest
import torch

from ddpm.errors import ConfigError
from ddpm.models import Unet


def test_seed_configuration_matches_the_familiar_network_size():
    model = Unet(dim=64, dim_mults=(1, 2, 4, 8))
    assert sum(p.numel() for p in model.parameters()) == 35_966_019
    assert model.channels == 3 and model.out_dim == 3 and model.downsample_factor == 8


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(8, 8), (16, 16), (8, 24), (32, 16)])
def test_output_shapes(channels, size):
    model = Unet(dim=8, dim_mults=(1, 2), channels=channels)
    x = torch.randn(2, channels, *size)
    assert model(x, torch.tensor([0, 999])).shape == x.shape


def test_learned_variance_doubles_the_output_and_classes_condition():
    model = Unet(dim=8, dim_mults=(1, 2), channels=3, learned_variance=True, num_classes=4)
    x = torch.randn(3, 3, 8, 8)
    t = torch.tensor([1, 2, 3])
    assert model(x, t).shape == (3, 6, 8, 8)
    for p in model.parameters():  # undo the zero init of residual branches
        torch.nn.init.normal_(p, std=0.2)
    a = model(x, t, torch.tensor([0, 1, 2]))
    b = model(x, t, torch.tensor([3, 1, 2]))
    null = model(x, t)  # no labels: the null label
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1:], b[1:])
    torch.testing.assert_close(null, model(x, t, torch.tensor([4, 4, 4])))


def test_bad_sizes_get_one_clear_sentence():
    model = Unet(dim=8, dim_mults=(1, 2, 4, 8), channels=1)
    with pytest.raises(ConfigError) as err:
        model(torch.randn(1, 1, 28, 30), torch.tensor([0]))
    assert str(err.value) == (
        "image size 28x30 cannot be halved 3 times by this Unet (4 levels in dim_mults); "
        "use a height and width divisible by 8, such as 32x32, or fewer dim_mults"
    )


def test_attention_levels_and_checkpointing_agree():
    torch.manual_seed(0)
    model = Unet(dim=8, dim_mults=(1, 2), channels=1, full_attn=(True, True))
    assert sum(1 for m in model.modules() if type(m).__name__ == "Attention") == 1 + 2 * 2 * 2
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 4])
    model(x, t).square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.grad_checkpoint = True
    model(x, t).square().sum().backward()
    for a, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, a)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="full_attn needs one entry per level"):
        Unet(dim=8, dim_mults=(1, 2), full_attn=(True,))
    with pytest.raises(ConfigError, match="class labels were given to a Unet built without num_classes"):
        Unet(dim=8, dim_mults=(1,), channels=1)(torch.zeros(1, 1, 4, 4), torch.tensor([0]), torch.tensor([1]))
