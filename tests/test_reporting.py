"""What a run shows while it trains: log lines, the progress bar, TensorBoard."""

import sys
import types

from ddpm.config import RunConfig, apply_overrides
from ddpm.training.loop import train

TINY = {"dataset": "digits", "dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8", "timesteps": "20", "batch_size": "8",
        "log_every": "3", "sample_every": "3", "save_every": "0", "num_samples": "4", "sampler": "ddim", "steps": "2",
        "max_steps": "6"}


def test_log_lines_when_not_a_terminal(tmp_path):
    lines = []
    train(apply_overrides(RunConfig(), {**TINY, "runs_dir": str(tmp_path), "tensorboard": "false"}), log=lines.append,
          progress=False)
    steps = [line for line in lines if line.startswith("step ")]
    assert [s.split()[1] for s in steps] == ["3/6", "6/6"]
    assert all(" loss " in s and " img/s " in s and " eta " in s for s in steps)


def test_progress_bar_on_a_terminal(tmp_path, capsys):
    lines = []
    train(apply_overrides(RunConfig(), {**TINY, "runs_dir": str(tmp_path), "tensorboard": "false"}), log=lines.append,
          progress=True)
    err = capsys.readouterr().err
    assert "6/6" in err and "loss=" in err and "img_s=" in err
    assert not [line for line in lines if line.startswith("step ")]  # the bar replaces the log lines


def test_tensorboard_gets_the_figures_and_the_grids(tmp_path, monkeypatch):
    events = []

    class FakeWriter:
        def __init__(self, logdir):
            events.append(("open", logdir))

        def add_scalar(self, tag, value, step):
            events.append((tag, step))

        def add_image(self, tag, image, step):
            events.append((tag, step, tuple(image.shape)))

        def close(self):
            events.append(("close",))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    result = train(apply_overrides(RunConfig(), {**TINY, "runs_dir": str(tmp_path)}), log=lambda m: None, progress=False)
    assert events[0] == ("open", str(result.run_dir / "tensorboard"))
    assert ("train/loss", 3) in events and ("train/images_per_s", 6) in events and ("train/lr", 6) in events
    images = [e for e in events if e[0] == "samples"]
    assert [e[1] for e in images] == [3, 6] and images[0][2][0] == 3  # CHW
    assert events[-1] == ("close",)
