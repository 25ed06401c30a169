"""The fast paths agree with the plain path: bf16 autocast, channels_last, the two attention
kernels, checkpointing with dropout, fused AdamW, the foreach EMA and torch.compile; and the
samplers run in inference mode without reading the device once per step.

Speed is measured by benchmarks/throughput.py, never here. Tests marked for CUDA skip without it.
"""

import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F

from ddpm import GaussianDiffusion
from ddpm.errors import ConfigError
from ddpm.models import Unet
from ddpm.models.layers import CPU_MATH_ATTENTION_MAX_TOKENS, Attention
from ddpm.sampling import SAMPLERS, sample
from ddpm.schedules import get_schedule
from ddpm.training.ema import EMA

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def small_unet(device="cpu", **options) -> Unet:
    """A Unet with attention at its second level, its zero-initialised branches switched on."""
    torch.manual_seed(0)
    model = Unet(dim=16, dim_mults=(1, 2), channels=3, full_attn=(False, True), **options)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return model.to(device)


def batch(device):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 8, 8, generator=g)
    noise = torch.randn(4, 3, 8, 8, generator=g)
    return x.to(device), torch.tensor([0, 10, 500, 999], device=device), noise.to(device)


def loss_and_grads(model, x, t, noise, *, bf16=False):
    """The diffusion loss of one batch and the flattened gradient of every parameter."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = GaussianDiffusion(model, 8).loss_terms(x, t=t, noise=noise).loss.mean()
    loss.backward()
    return loss.detach().float(), torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.fixture
def exact_cuda():
    # TF32 would make CUDA convolutions and matrix products differ by ~1e-3 between layouts
    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_is_close_to_fp32(device, exact_cuda):
    model, (x, t, noise) = small_unet(device), batch(device)
    loss32, grad32 = loss_and_grads(model, x, t, noise)
    loss16, grad16 = loss_and_grads(model, x, t, noise, bf16=True)
    # bf16 keeps 8 mantissa bits (relative rounding 2**-9); measured here: loss within 2e-5,
    # gradient within 0.2-0.5 % (L2) over three seeds, so the bounds leave a 4x margin
    assert abs(float(loss16 - loss32)) <= 1e-3 * float(loss32)
    assert float((grad16 - grad32).norm() / grad32.norm()) < 2e-2
    assert float(F.cosine_similarity(grad16, grad32, dim=0)) > 0.999


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_gives_the_same_outputs_and_gradients(device, exact_cuda):
    x, t, noise = batch(device)
    plain = small_unet(device)
    fast = small_unet(device).to(memory_format=torch.channels_last)
    assert fast.init_conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last), t), plain(x, t), rtol=1e-5, atol=1e-6)
    loss_a, grad_a = loss_and_grads(plain, x, t, noise)
    loss_b, grad_b = loss_and_grads(fast, x.contiguous(memory_format=torch.channels_last), t, noise)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad_b, grad_a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("positions", [(4, 4), (24, 32)])
def test_attention_kernels_agree(device, positions, exact_cuda):
    torch.manual_seed(0)
    sdpa = Attention(32, heads=2, dim_head=16, impl="sdpa").to(device)
    math = Attention(32, heads=2, dim_head=16, impl="math").to(device)
    torch.nn.init.normal_(sdpa.out.weight, std=0.2)  # undo the zero init so the branch matters
    math.load_state_dict(sdpa.state_dict())
    x = torch.randn(3, 32, *positions, device=device)

    def run(module, bf16=False):
        xx = x.clone().requires_grad_()
        with torch.autocast(xx.device.type, dtype=torch.bfloat16, enabled=bf16):
            y = module(xx)
        (y.float() * torch.linspace(-1, 1, y.numel(), device=device).view_as(y)).sum().backward()
        return y.detach().float(), xx.grad, module.qkv.weight.grad

    reference = run(sdpa)
    for got, want in zip(run(math), reference):  # the same sums in another order: fp32 rounding
        assert float((got - want).norm() / want.norm()) < 1e-5
    for module in (sdpa, math):  # bf16 under autocast stays within bf16 rounding of fp32
        module.zero_grad()
        for got, want in zip(run(module, bf16=True), reference):
            assert float((got - want).norm() / want.norm()) < 2e-2


def test_auto_attention_takes_the_math_kernel_only_for_short_low_precision_cpu_sequences():
    auto = Attention(8, heads=1, dim_head=8, groups=4)
    n = CPU_MATH_ATTENTION_MAX_TOKENS

    def picks_sdpa(dtype, tokens, device="cpu"):
        return auto.use_sdpa(torch.empty(1, 3, 1, 8, tokens, dtype=dtype, device=device))

    assert not picks_sdpa(torch.bfloat16, 16) and not picks_sdpa(torch.float16, n)
    assert picks_sdpa(torch.bfloat16, n + 1) and picks_sdpa(torch.float32, 16)
    assert picks_sdpa(torch.bfloat16, 16, device="meta")  # any accelerator: the fused kernels
    assert Attention(8, groups=4, impl="sdpa").use_sdpa(torch.empty(1, 3, 1, 8, 16, dtype=torch.bfloat16))
    assert not Attention(8, groups=4, impl="math").use_sdpa(torch.empty(1, 3, 1, 8, 4096))
    with pytest.raises(ConfigError) as err:
        Attention(8, groups=4, impl="flash")
    assert str(err.value) == "unknown attention implementation 'flash'; choose one of auto, sdpa, math"
    with pytest.raises(ConfigError, match="unknown attention implementation 'xformers'"):
        Unet(dim=8, dim_mults=(1,), attn_impl="xformers")


def test_checkpointing_replays_dropout_and_gives_the_same_gradients():
    # tests/test_unet.py checks checkpointing without dropout; with it, the recomputed forward
    # must draw the same dropout masks as the first one
    x, t, noise = batch("cpu")
    grads = []
    for checkpointed in (False, True):
        model = small_unet(dropout=0.3, grad_checkpoint=checkpointed).train()
        torch.manual_seed(5)
        grads.append(loss_and_grads(model, x, t, noise)[1])
    torch.testing.assert_close(grads[1], grads[0])
    model = small_unet(dropout=0.3).train()
    torch.manual_seed(6)  # other masks change the gradient: dropout is really on
    assert not torch.allclose(loss_and_grads(model, x, t, noise)[1], grads[0])


@pytest.mark.parametrize("device", DEVICES)
def test_fused_adamw_follows_foreach_adamw(device):
    models = [small_unet(device), small_unet(device)]
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1, **{kind: True})
            for m, kind in zip(models, ("foreach", "fused"))]
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=g).to(device) for p in models[0].parameters()]
        for model, opt in zip(models, opts):
            for p, gr in zip(model.parameters(), grads):
                p.grad = gr.clone()
            opt.step()
    start = small_unet(device)
    for a, b, s in zip(models[0].parameters(), models[1].parameters(), start.parameters()):
        assert not torch.equal(a, s)  # the steps moved the weights
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_foreach_ema_equals_a_per_parameter_loop():
    model = small_unet()
    ema = EMA(model, decay=0.99, warmup=True)
    reference = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(3)
    for k in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        ema.update(model)
        d = min(0.99, (1 + k) / (10 + k))
        for e, p in zip(reference, model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)
    for got, want in zip(ema.model.parameters(), reference):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def compiled_agrees(backend: str, device: str) -> None:
    model = small_unet(device)
    x, t, _ = batch(device)
    out = torch.compile(model, backend=backend, fullgraph=True)(x, t)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref = model(x, t)
    ref.square().sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for got, p in zip(grads, model.parameters()):
        torch.testing.assert_close(got, p.grad, rtol=1e-4, atol=1e-5)


def test_the_unet_compiles_as_one_graph_and_agrees_with_eager():
    # fullgraph=True: no graph breaks. The aot_eager backend traces forward and backward as
    # torch.compile does (about 15 s here); inductor would add C++ code generation, which
    # took 190 s for this tiny Unet on 2 CPU cores, so inductor is tested on CUDA only
    compiled_agrees("aot_eager", "cpu")


@CUDA
@pytest.mark.needs(shutil.which("cc") is None and shutil.which("gcc") is None, "inductor needs a C compiler")
def test_inductor_on_cuda_agrees_with_eager(exact_cuda):
    compiled_agrees("inductor", "cuda")


def toy_model_fn(seen: list):
    def model_fn(x, t):
        seen.append(torch.is_inference_mode_enabled())
        return 0.1 * x + 1e-4 * t.float().view(-1, 1, 1, 1)

    return model_fn


def host_reads(monkeypatch, name: str, steps: int) -> int:
    """How many tensors the sampler reads back to Python (item, tolist, bool, float, int)."""
    count = [0]
    for method in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, method)

        def counting(self, *args, _original=original):
            count[0] += 1
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, method, counting)
    seen = []
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    sample(name, toy_model_fn(seen), x_T, get_schedule("linear", 100), steps, generator=torch.Generator().manual_seed(1))
    monkeypatch.undo()
    assert len(seen) == steps and all(seen), "every network call runs under torch.inference_mode"
    return count[0]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_read_the_device_only_while_setting_up(monkeypatch, name):
    # a read-back is a host-device synchronisation on a GPU; the coefficient tables are built
    # once per call, so the number of reads must not grow with the number of steps
    assert host_reads(monkeypatch, name, 8) == host_reads(monkeypatch, name, 4)


@CUDA
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_synchronise_only_while_setting_up_on_cuda(name):
    def syncs(steps: int) -> int:
        x_T = torch.randn(2, 1, 4, 4, device="cuda")
        schedule = get_schedule("linear", 100).to("cuda")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sample(name, toy_model_fn([]), x_T, schedule, steps)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(8) == syncs(4)


def test_bf16_is_used_where_it_is_fast_and_adamw_is_fused_on_cpu_and_cuda(monkeypatch):
    from ddpm.runs.build import adamw_kernel, bf16_is_fast, use_bf16

    cpu = torch.device("cpu")
    # PyTorch computing as an AVX2 CPU (ATEN_CPU_CAPABILITY=avx2) has no fast bf16, whatever the CPU has
    cases = [("AVX512", False, False, False), ("AVX512", True, False, True), ("AVX512", False, True, True),
             ("AVX2", True, True, False), ("DEFAULT", True, False, False)]
    for capability, avx512_bf16, amx, want in cases:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda v=capability: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert bf16_is_fast(cpu) is want and use_bf16(None, cpu) is want
        assert use_bf16(True, cpu) is True and use_bf16(False, cpu) is False
    for supported in (False, True):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, v=supported, **k: v)
        assert use_bf16(None, torch.device("cuda")) is supported
    assert use_bf16(None, torch.device("mps")) is False  # unmeasured there: left off
    assert adamw_kernel(cpu) == adamw_kernel(torch.device("cuda")) == {"fused": True}
    assert adamw_kernel(torch.device("mps")) == {"foreach": True}


def test_compile_auto_is_on_for_long_single_process_fp32_cpu_runs_where_inductor_can_generate_code(monkeypatch):
    from ddpm.runs import build

    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    n, m = build.COMPILE_AUTO_MIN_STEPS, build.COMPILE_AUTO_MIN_MINUTES
    monkeypatch.setattr(build.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(build.os, "name", "posix")

    def auto(device=cpu, steps=n, bf16=False, **more):
        return build.use_compile(None, device, steps, bf16=bf16, **more)

    assert auto() and not auto(steps=n - 1)
    assert auto(minutes=m) and not auto(minutes=m - 1)  # a time limit too short to pay the compiling back
    assert not auto(bf16=True)  # slower under bf16 autocast
    assert not auto(processes=2)  # unmeasured under DDP: left off
    assert not auto(cuda, 10 * n) and not auto(mps, 10 * n)  # its break-even on GPUs was not measured
    assert build.use_compile(True, cpu, 1, bf16=True) and not build.use_compile(False, cpu, 10 * n, bf16=False)  # as given
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    assert not auto(steps=10 * n)  # no C++ compiler for inductor's CPU code
    monkeypatch.setattr(build.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(build.os, "name", "nt")
    assert not auto(steps=10 * n)
