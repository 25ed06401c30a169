import pytest
import torch

from ddpm import ConfigError, GaussianDiffusion, Unet


def test_seed_program_runs_as_written():
    """The blog-post program, with a small image size and few timesteps for speed."""
    model = Unet(dim=64, dim_mults=(1, 2, 4, 8))
    diffusion = GaussianDiffusion(model, image_size=16, timesteps=10, loss_type="l1")
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=1e-4)
    images = torch.rand(2, 3, 16, 16)

    loss = diffusion(images)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    sampled_images = diffusion.sample(batch_size=4)

    assert loss.ndim == 0 and torch.isfinite(loss)
    assert sampled_images.shape == (4, 3, 16, 16)
    assert sampled_images.min() >= 0 and sampled_images.max() <= 1


def test_seed_construction_at_full_size():
    model = Unet(dim=64, dim_mults=(1, 2, 4, 8))
    diffusion = GaussianDiffusion(model, image_size=128, timesteps=1000, loss_type="l1")
    assert diffusion.num_timesteps == 1000 and diffusion.image_size == (128, 128)
    assert diffusion.loss_type == "l1" and diffusion.objective == "pred_noise" and diffusion.beta_schedule == "linear"


def test_forward_is_the_l1_loss_on_images_in_zero_one():
    class Zero(torch.nn.Module):
        channels = 1

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t):
            return torch.zeros_like(x) * self.w

    diffusion = GaussianDiffusion(Zero(), image_size=8, timesteps=10, loss_type="l1")
    torch.manual_seed(0)
    loss = diffusion(torch.rand(256, 1, 8, 8))
    # the loss of predicting 0 for N(0, 1) noise is E|eps| = sqrt(2 / pi)
    assert loss.item() == pytest.approx((2 / torch.pi) ** 0.5, rel=0.01)


def test_non_square_images_classes_and_all_timesteps():
    model = Unet(dim=8, dim_mults=(1, 2), channels=1, num_classes=3)
    diffusion = GaussianDiffusion(model, (8, 12), timesteps=6)
    assert diffusion(torch.rand(4, 1, 8, 12), torch.tensor([0, 1, 2, 0])).ndim == 0
    frames = diffusion.sample(batch_size=2, classes=[1, 2], return_all_timesteps=True)
    assert frames.shape == (2, 7, 1, 8, 12)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(diffusion.sample(2, generator=g1, steps=3), diffusion.sample(2, generator=g2, steps=3))


def test_bits_per_dim_through_the_facade():
    model = Unet(dim=8, dim_mults=(1, 2), channels=1)
    diffusion = GaussianDiffusion(model, 8, timesteps=10)
    images = torch.randint(0, 256, (2, 1, 8, 8)).float() / 255
    bpd = diffusion.bits_per_dim(images)
    assert bpd.total.shape == (2,) and bool((bpd.total > 0).all())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=(9, 8)), "image size 9x8 cannot be halved 1 time by this Unet"),
        (dict(image_size=8, loss_type="l3"), "unknown loss type 'l3'; choose one of l2, l1"),
        (dict(image_size=8, objective="eps"), "unknown objective 'eps'"),
        (dict(image_size=8, beta_schedule="cos"), "unknown beta schedule 'cos'"),
        (dict(image_size=8, variance_type="learned_range"), "does not fit a model with learned_variance=False"),
        (dict(image_size=8, zero_terminal_snr=True), "zero_terminal_snr needs objective 'pred_v' or 'pred_x0'"),
        (dict(image_size="big"), "image_size must be an int or a (height, width) pair; got 'big'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError) as err:
        GaussianDiffusion(Unet(dim=8, dim_mults=(1, 2), channels=1), **kwargs)
    assert message in str(err.value)


def test_bad_inputs_at_call_time():
    diffusion = GaussianDiffusion(Unet(dim=8, dim_mults=(1, 2), channels=1, num_classes=2), 8, timesteps=5)
    with pytest.raises(ConfigError, match=r"expected images of shape \[batch, 1, 8, 8\]; got \[2, 3, 8, 8\]"):
        diffusion(torch.rand(2, 3, 8, 8))
    with pytest.raises(ConfigError, match="class label 5 is out of range; labels run from 0 to 1"):
        diffusion.sample(2, classes=5)
    with pytest.raises(ConfigError, match="got 3 class labels for a batch of 2"):
        diffusion.sample(2, classes=[0, 1, 1])


def test_sampler_choice_steps_and_guidance_through_the_facade():
    calls = []

    class Counting(Unet):
        def forward(self, x, time, classes=None):
            calls.append(x.shape[0])
            return super().forward(x, time, classes)

    model = Counting(dim=8, dim_mults=(1, 2), channels=1, num_classes=3)
    diffusion = GaussianDiffusion(model, 8, timesteps=100)
    out = diffusion.sample(2, sampler="dpm++2m", classes=[0, 2], guidance_scale=3.0)
    assert out.shape == (2, 1, 8, 8)
    assert calls == [4] * 20  # the default 20 steps, conditional and unconditional in one batch
    calls.clear()
    diffusion.sample(2, sampler="ddim", steps=7, eta=0.5)
    assert calls == [2] * 7
    calls.clear()
    # lucidrains' convention: sampling_timesteps below T means DDIM with that many steps
    fast = GaussianDiffusion(model, 8, timesteps=100, sampling_timesteps=10)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = fast.sample(2, generator=g1)
    assert calls == [2] * 10
    torch.testing.assert_close(a, diffusion.sample(2, sampler="ddim", steps=10, generator=g2))
    with pytest.raises(ConfigError, match="guidance_scale needs class labels"):
        diffusion.sample(2, guidance_scale=2.0)
    with pytest.raises(ConfigError, match="unknown sampler 'euler'"):
        diffusion.sample(2, sampler="euler")


def test_sampling_turns_dropout_off_and_restores_the_mode():
    torch.manual_seed(0)
    model = Unet(dim=8, dim_mults=(1, 2), channels=1, dropout=0.5)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    diffusion = GaussianDiffusion(model, 8, timesteps=10).train()
    a = diffusion.sample(2, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(123)  # a different global RNG must not change the images
    b = diffusion.sample(2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert diffusion.training and model.training


class _LabelRecorder(torch.nn.Module):
    """A stand-in network that records the class labels it is given."""

    channels, num_classes = 3, 10  # what GaussianDiffusion reads from a network

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, x, t, classes=None):
        self.seen.append(classes.clone())
        return x * self.scale


def test_label_dropout_sends_p_uncond_of_the_labels_to_the_null_label():
    net = _LabelRecorder()
    diffusion = GaussianDiffusion(net, image_size=2, timesteps=10, p_uncond=0.25)
    images, labels = torch.rand(8000, 3, 2, 2), torch.full((8000,), 3)
    diffusion.loss_terms(images, labels, generator=torch.Generator().manual_seed(0))
    dropped = (net.seen[-1] == 10).double().mean().item()  # 10 = the null label
    assert dropped == pytest.approx(0.25, abs=0.015)  # 3 standard errors of 8000 draws: 0.0146
    assert set(net.seen[-1].tolist()) == {3, 10}
    keep = torch.arange(8000) % 2 == 0  # given masks are applied as they are (the trainer draws its own)
    diffusion.loss_terms(images, labels, keep_labels=keep)
    assert torch.equal(net.seen[-1], torch.where(keep, 3, 10))
    diffusion.eval()  # never in eval mode, and never with p_uncond = 0
    diffusion.loss_terms(images, labels)
    assert bool((net.seen[-1] == 3).all())
    no_drop = GaussianDiffusion(_LabelRecorder(), image_size=2, timesteps=10, p_uncond=0.0)
    no_drop.loss_terms(images, labels)
    assert bool((no_drop.model.seen[-1] == 3).all())


def test_starting_points_through_the_facade():
    """x_start (images in [0, 1]) noised to t_start, noise taken as x at t_start, explicit
    timesteps: with the exact denoiser of N(0.3, 0.2^2) data (in [-1, 1]) inside the facade,
    images drawn from the data come back from t_start = 500 with the data's statistics."""
    from ddpm.analytic import gaussian_model
    from ddpm.sampling import sample as run_sampler

    class Exact(torch.nn.Module):
        channels = 1

        def __init__(self, schedule):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))  # a parameter, for the device
            self.fn = gaussian_model(schedule, 0.3, 0.2)

        def forward(self, x, t):
            return self.fn(x, t)

    from ddpm import get_schedule

    diffusion = GaussianDiffusion(Exact(get_schedule("linear", 1000)), 4, auto_normalize=False)
    g = torch.Generator().manual_seed(0)
    data = 0.3 + 0.2 * torch.randn(2000, 1, 4, 4, generator=g)
    calls = []
    hook = diffusion.model.register_forward_hook(lambda m, args, out: calls.append(args[1][0].item()))
    out = diffusion.sample(2000, sampler="dpm++2m", steps=10, x_start=data, t_start=500, clip=None, generator=g)
    hook.remove()
    assert calls[0] == 500 and len(calls) == 10
    assert out.mean().item() == pytest.approx(0.3, abs=0.004) and out.std().item() == pytest.approx(0.2, abs=0.004)
    # each image is kept as far as x_t knows it: the ODE maps x_t affinely, so corr(out, x_0) is
    # corr(x_t, x_0) = a s / sqrt(a^2 s^2 + 1 - a^2) (32,000 pixels: standard error 0.006)
    a = diffusion.schedule.alpha_bar_at(500).sqrt().item()
    corr = torch.corrcoef(torch.stack([out.flatten(), data.flatten()]))[0, 1].item()
    assert corr == pytest.approx(a * 0.2 / (a * a * 0.04 + 1 - a * a) ** 0.5, abs=0.02)
    # noise= is x at the first visited time; timesteps= lists the times (steps and grid unused)
    x = torch.randn(8, 1, 4, 4, generator=g)
    ts = [700, 350.5, 100, 0]
    got = diffusion.sample(8, sampler="unipc3", noise=x, timesteps=ts, final="t0", clip=None)
    want = run_sampler("unipc3", diffusion.model.fn, x, diffusion.schedule, timesteps=ts, final="t0", clip=None)
    torch.testing.assert_close(got, want)
    with pytest.raises(ConfigError, match="x_start holds 2000 images for a batch of 4; give one per image"):
        diffusion.sample(4, x_start=data, t_start=500)
    with pytest.raises(ConfigError, match="clipped_eps=False applies only to the 'ddim' sampler"):
        diffusion.sample(4, sampler="dpm++2m", clipped_eps=False)


# ---- text conditioning ----------------------------------------------------------------------------


def _text_diffusion(objective="pred_noise", learned_variance=False, **kw):
    from ddpm.text import BuiltinTextEncoder, WordTokenizer

    vocab = ("a", "handwritten", "seven", "three", "the", "number")
    torch.manual_seed(0)
    unet = Unet(dim=8, dim_mults=(1, 2), channels=1, attn_heads=2, attn_dim_head=4, text_dim=8,
                text_encoder=BuiltinTextEncoder(len(vocab), 8, 1, max_tokens=6), learned_variance=learned_variance)
    for p in unet.parameters():  # away from the zero-initialised outputs, so prompts matter
        p.data.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    return GaussianDiffusion(unet, 8, timesteps=20, objective=objective, text_encoder=WordTokenizer(vocab, 6, 8), **kw)


class _TextRecorder(torch.nn.Module):
    channels, text_dim = 3, 2

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.seen = []

    def forward(self, x, t, text=None):
        self.seen.append(text)
        return x * self.scale


def test_caption_dropout_sends_p_uncond_of_the_captions_to_the_null_caption():
    from ddpm.text.base import TextBatch

    net = _TextRecorder()
    diffusion = GaussianDiffusion(net, image_size=2, timesteps=10, p_uncond=0.2)
    text = TextBatch(torch.ones(8000, 1, 2), torch.ones(8000, 1, dtype=torch.bool), torch.ones(8000, 2))
    diffusion.loss_terms(torch.rand(8000, 3, 2, 2), text=text, generator=torch.Generator().manual_seed(0))
    assert net.seen[-1].drop.double().mean().item() == pytest.approx(0.2, abs=0.0135)  # 3 standard errors
    keep = torch.arange(8000) % 4 != 0
    diffusion.loss_terms(torch.rand(8000, 3, 2, 2), text=text, keep_labels=keep)
    assert torch.equal(net.seen[-1].drop, ~keep)
    diffusion.eval()
    diffusion.loss_terms(torch.rand(8000, 3, 2, 2), text=text)
    assert net.seen[-1].drop is None


def test_the_same_prompt_and_seed_give_the_same_images():
    diffusion = _text_diffusion()
    draw = lambda prompts, seed=0: diffusion.sample(2, sampler="ddim", steps=4, prompts=prompts, guidance_scale=3.0,  # noqa: E731
                                                    generator=torch.Generator().manual_seed(seed))
    a = draw(["a handwritten seven", "the number three"])
    assert torch.equal(a, draw(["a handwritten seven", "the number three"]))
    assert torch.equal(draw("a handwritten seven")[0], a[0])  # one prompt for every image
    assert (a - draw(["the number three", "a handwritten seven"])).abs().amax() > 1e-4
    assert (a - draw(["a handwritten seven", "the number three"], seed=1)).abs().amax() > 1e-4
    loss = diffusion(torch.rand(2, 1, 8, 8), prompts=["a seven", "three"])  # Python training with captions
    loss.backward()
    assert torch.isfinite(loss) and diffusion.model.text_encoder.word.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("objective,learned", [("pred_noise", False), ("pred_x0", False), ("pred_v", False), ("pred_noise", True)])
def test_text_conditioning_works_with_every_sampler_and_objective(objective, learned):
    from ddpm.sampling import SAMPLERS

    diffusion = _text_diffusion(objective, learned)
    for sampler in SAMPLERS:
        out = diffusion.sample(2, sampler=sampler, steps=3, prompts=["a seven", "three"], guidance_scale=2.0,
                               generator=torch.Generator().manual_seed(0))
        assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all(), sampler


def test_prompts_reach_inpaint_and_img2img():
    """Editing builds its model function where sampling does: a prompt changes the result, the
    same prompt and seed repeat it, and the kept pixels stay exact."""
    diffusion = _text_diffusion()
    images = torch.rand(2, 1, 8, 8)
    keep = torch.zeros(8, 8)
    keep[:4] = 1
    fill = lambda prompt: diffusion.inpaint(images, keep, steps=6, jump_length=2, jump_n_sample=2, prompts=prompt,  # noqa: E731
                                            guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    seven, three = fill("a handwritten seven"), fill("the number three")
    assert torch.equal(seven, fill("a handwritten seven")) and (seven - three).abs().amax() > 1e-4
    assert torch.equal(seven[:, :, :4], images[:, :, :4])
    redraw = lambda prompt: diffusion.img2img(images, 0.7, sampler="ddim", steps=4, prompts=prompt,  # noqa: E731
                                              guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert (redraw("a handwritten seven") - redraw("the number three")).abs().amax() > 1e-4
    want = diffusion.sample(2, sampler="ddim", steps=4, prompts="a handwritten seven", guidance_scale=3.0,
                            x_start=images, t_start=round(0.7 * 19), generator=torch.Generator().manual_seed(0))
    assert torch.equal(redraw("a handwritten seven"), want)


def test_prompt_errors():
    plain = GaussianDiffusion(Unet(dim=8, dim_mults=(1, 2), channels=1, attn_heads=2, attn_dim_head=4), 8, timesteps=10)
    with pytest.raises(ConfigError, match="prompts were given but the model is not text-conditional"):
        plain.sample(1, prompts=["a seven"])
    diffusion = _text_diffusion()
    with pytest.raises(ConfigError, match="got 2 prompts for a batch of 3"):
        diffusion.sample(3, prompts=["a", "b"])
    with pytest.raises(ConfigError, match="guidance_scale needs class labels .* or prompts"):
        diffusion.sample(1, guidance_scale=2.0)
    from ddpm.text import WordTokenizer

    with pytest.raises(ConfigError, match="gives 5-wide embeddings but the Unet was built for text_dim=8"):
        GaussianDiffusion(Unet(dim=8, dim_mults=(1, 2), channels=1, attn_heads=2, attn_dim_head=4, text_dim=8), 8,
                          text_encoder=WordTokenizer(("a",), 4, 5))
    with pytest.raises(ConfigError, match="no text encoder: pass text_encoder"):
        GaussianDiffusion(Unet(dim=8, dim_mults=(1, 2), channels=1, attn_heads=2, attn_dim_head=4, text_dim=8), 8).sample(1, prompts="a")
    assert "text_encoder" not in dict(diffusion.named_children())  # frozen: not a submodule


@pytest.mark.parametrize("sampler, steps", [("ancestral", None), ("ddim", 7), ("dpm++2m-sde", 6)])
def test_img2img_is_sdedit_exactly(sampler, steps):
    """img2img at strength s: x_t ~ q(x_t | x_0) at t = round(s (T - 1)) with the generator's first
    draw, then the sampler from t with the rest of the same generator, bit for bit; strength 1 is
    plain sampling."""
    from ddpm.sampling import sample as run_sampler

    torch.manual_seed(0)
    diffusion = GaussianDiffusion(Unet(dim=8, dim_mults=(1, 2), channels=1), 8, timesteps=40)
    images = torch.rand(3, 1, 8, 8)
    calls = []
    hook = diffusion.model.register_forward_hook(lambda m, args, out: calls.append(args[1][0].item()))
    got = diffusion.img2img(images, 0.6, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(5))
    hook.remove()
    t = round(0.6 * 39)
    assert calls[0] == t == 23 and len(calls) == (steps or t + 1)

    g = torch.Generator().manual_seed(5)
    noise = torch.randn(images.shape, generator=g)
    a = diffusion.schedule.alpha_bar_at(t).sqrt().item()
    x_t = a * (images * 2 - 1) + (1 - a * a) ** 0.5 * noise  # Ho et al. eq. 4
    with torch.inference_mode():
        want = run_sampler(sampler, diffusion.model_fn(), x_t, diffusion.schedule, steps, t_start=t,
                           objective=diffusion.objective, generator=g)
    assert torch.equal(got, ((want + 1) / 2).clamp(0, 1))
    plain = diffusion.sample(3, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(5))
    assert torch.equal(diffusion.img2img(images, 1.0, sampler=sampler, steps=steps,
                                         generator=torch.Generator().manual_seed(5)), plain)


def test_img2img_bad_input():
    diffusion = GaussianDiffusion(Unet(dim=8, dim_mults=(1, 2), channels=1), 8, timesteps=40)
    images = torch.rand(2, 1, 8, 8)
    for bad in (0, 1.5, -0.2, True):
        with pytest.raises(ConfigError, match=r"strength must lie in \(0, 1\] \(1: plain sampling\); got"):
            diffusion.img2img(images, bad)
    with pytest.raises(ConfigError, match=r"images must be floats in \[0, 1\]; got torch.uint8"):
        diffusion.img2img((images * 255).to(torch.uint8), 0.5)
    with pytest.raises(ConfigError, match=r"expected images of shape \[batch, 1, 8, 8\]; got \[2, 3, 8, 8\]"):
        diffusion.img2img(torch.rand(2, 3, 8, 8), 0.5)
    with pytest.raises(ConfigError, match="steps must be an integer from 1 to the 21 integer timesteps up to t_start=20"):
        diffusion.img2img(images, 0.5, sampler="ddim", steps=30)
