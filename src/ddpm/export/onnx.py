"""A run's network as ONNX: what ``ddpm export onnx`` writes and ``ddpm export web`` puts beside its page.

The graph is the network alone (no sampler, no guidance): inputs ``x`` [B, C, H, W] float32 and
``t`` [B] float32 (the training schedule's timesteps, 0..T-1; whole numbers at integer steps), and
``class`` [B] int64 for a class-conditional run (``num_classes``: the null label, the
unconditional half of guidance) or ``prompt`` [B] int64 for a text-conditional one (an index into
the prompts given at export, whose encodings are constants of the graph; ``len(prompts)``: the null
caption); output ``prediction`` [B, C or 2C, H, W], what the network predicts under the run's
objective. B is dynamic, so one graph serves the doubled batch of classifier-free guidance.

Why a prompt index rather than the embedding as input: the page then needs no text encoder and no
embedding files, its input is B integers, and the null caption (a learned parameter of the network,
not an encoding) is reached the same way as a prompt.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..fileio import atomic_write
from ..runs import load_for_sampling
from ..text.base import TextBatch, check_prompts

TOLERANCE = 1e-4
"""Largest |onnxruntime - PyTorch| allowed on the check (fp32)."""
OPSET = 18
EXTRA_HINT = 'install the export extra: pip install "torch-ddpm[export]" (or pip install ".[export]" in a clone)'


def require_export_packages() -> None:
    """A one-sentence ConfigError naming what is missing of onnx, onnxscript and onnxruntime."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"ddpm export needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                          f"installed; {EXTRA_HINT}")


class PlainNet(nn.Module):
    """An unconditional network: (x [B, C, H, W], t [B]) -> prediction."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model(x, t)


class ClassNet(nn.Module):
    """A class-conditional network: (x, t, class [B] int64; num_classes = null label) -> prediction."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, t: Tensor, classes: Tensor) -> Tensor:
        return self.model(x, t, classes)


class PromptNet(nn.Module):
    """A text-conditional network with the encodings of P prompts built in: (x, t, prompt [B] int64)
    -> prediction, prompt index P (or more) taking the learned null caption."""

    def __init__(self, model: nn.Module, text: TextBatch):
        super().__init__()
        self.model = model
        self.count = len(text)
        self.register_buffer("tokens", text.tokens)
        self.register_buffer("mask", text.mask)
        self.register_buffer("pooled", text.pooled if text.pooled is not None else torch.zeros(0))
        self.has_pooled = text.pooled is not None

    def forward(self, x: Tensor, t: Tensor, prompt: Tensor) -> Tensor:
        row = prompt.clamp(0, self.count - 1)
        pooled = self.pooled[row] if self.has_pooled else None
        text = TextBatch(self.tokens[row], self.mask[row], pooled, prompt >= self.count)
        return self.model(x, t, text=text)


def network_for_export(diffusion, prompts: Sequence[str] | None) -> tuple[nn.Module, list[str], list[str]]:
    """The wrapper to export for ``diffusion``'s network, its input names and the checked prompts."""
    model = diffusion.model
    if diffusion.text_conditional:
        if not prompts:
            raise ConfigError("this run is text-conditional: give the prompts the page offers with --prompt "
                              "(repeat it for several); their encodings are built into the graph")
        prompts = check_prompts(list(prompts), diffusion.text_encoder)
        text = diffusion.text_encoder.encode(prompts)
        return PromptNet(model, TextBatch(text.tokens, text.mask, text.pooled)).eval(), ["x", "t", "prompt"], prompts
    if prompts:
        raise ConfigError("--prompt needs a text-conditional run (trained with --text-conditional); this run was trained "
                          "without captions")
    if diffusion.num_classes:
        return ClassNet(model).eval(), ["x", "t", "class"], []
    return PlainNet(model).eval(), ["x", "t"], []


def example_inputs(diffusion, names: Sequence[str], batch: int, generator: torch.Generator, count: int = 0,
                   fractional: bool = False) -> tuple[Tensor, ...]:
    """Random inputs of ``batch`` rows: x ~ N(0, I), whole times (and with ``fractional`` one between
    two timesteps, as the karras-sigmas and lu-lambdas grids visit), labels or prompts with the null."""
    x = torch.randn((batch, diffusion.channels, *diffusion.image_size), generator=generator)
    T = diffusion.num_timesteps
    t = torch.randint(0, T, (batch,), generator=generator).float()
    t[0] = T - 1
    if fractional:
        t[1] = t[1] * 0.5 + 0.25
    out = [x, t]
    if len(names) == 3:
        top = diffusion.num_classes if names[2] == "class" else count
        out.append(torch.randint(0, top + 1, (batch,), generator=generator))
        out[2][-1] = top  # the null label / caption
    return tuple(out)


@contextlib.contextmanager
def quiet_exporter():
    """torch.onnx's progress lines and its notes about optional packages (torchvision) stay off the
    user's terminal; real failures still raise."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def write_onnx(net: nn.Module, names: list[str], inputs: tuple[Tensor, ...], path: Path) -> None:
    """``net`` traced on ``inputs`` by torch.export and written as one ONNX file with a dynamic batch."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with quiet_exporter():
            torch.onnx.export(net, inputs, str(path), dynamo=True, input_names=names, output_names=["prediction"],
                              dynamic_shapes=tuple({0: batch} for _ in names), opset_version=OPSET,
                              external_data=False, verbose=False)
    except Exception as err:  # the exporter's own failure: name it in one sentence
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200].rstrip(".")
        raise ConfigError(f"this run's network cannot be exported to ONNX by torch.onnx ({type(err).__name__}: {first}); "
                          "only the library's Unet is known to export") from None


def check_onnx(path: Path, net: nn.Module, names: list[str], inputs: tuple[Tensor, ...]) -> float:
    """Max |onnxruntime - PyTorch| over ``inputs`` (the network called with integer times where
    they are whole, as the samplers call it); a ConfigError above :data:`TOLERANCE`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: v.numpy() for n, v in zip(names, inputs)})[0]
    t = inputs[1]
    with torch.inference_mode():
        want = net(inputs[0], t.long() if bool((t == t.round()).all()) else t, *inputs[2:]).float().numpy()
    if got.shape != want.shape:
        raise ConfigError(f"the exported graph returned shape {list(got.shape)} where PyTorch gives {list(want.shape)}")
    err = float(np.max(np.abs(got - want)))
    if not err <= TOLERANCE:
        raise ConfigError(f"onnxruntime and PyTorch disagree by {err:.3g} on the exported network, more than the "
                          f"{TOLERANCE:g} allowed; the file was not written")
    return err


def export_onnx(source: str | Path, out: str | Path, *, prompts: Sequence[str] | None = None, use_ema: bool = True,
                log: Callable[[str], None] = print) -> dict:
    """Write the network of run (or checkpoint) ``source`` to ``out`` as ONNX, checked with
    onnxruntime against PyTorch (batches of 3 and 5, within :data:`TOLERANCE`) before it takes the
    name ``out``. Returns the graph's input names, the checked prompts and the largest error."""
    require_export_packages()
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"--out must name a .onnx file; got {str(out)!r}")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; name a .onnx file")
    diffusion, ckpt = load_for_sampling(source, use_ema=use_ema, device="cpu")
    net, names, prompts = network_for_export(diffusion, prompts)
    log(f"exporting {ckpt.path} ({'EMA' if use_ema else 'raw'} weights) to ONNX")
    return write_checked(diffusion, net, names, prompts, out, log)


def write_checked(diffusion, net: nn.Module, names: list[str], prompts: list[str], out: Path,
                  log: Callable[[str], None] = print) -> dict:
    """``net`` (from :func:`network_for_export`) written to ``out`` once onnxruntime agrees with it."""
    g = torch.Generator().manual_seed(0)
    count = len(prompts)
    trace = example_inputs(diffusion, names, 2, g, count)
    checks = [example_inputs(diffusion, names, b, g, count, fractional=b == 3) for b in (3, 5)]
    worst = 0.0

    def write(tmp: Path) -> None:
        nonlocal worst
        write_onnx(net, names, trace, tmp)
        for inputs in checks:
            worst = max(worst, check_onnx(tmp, net, names, inputs))

    atomic_write(out, write)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB); onnxruntime matches PyTorch within {worst:.2g}")
    return {"inputs": names, "prompts": prompts, "max_error": worst}
