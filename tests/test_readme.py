"""The README's statements that a test can hold it to: paths a reader can open, code that runs."""

import re
from pathlib import Path

import ddpm.training.loop

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_path_the_readme_names_exists():
    root = Path(__file__).resolve().parents[1]
    paths = set(re.findall(r"`((?:src|configs|benchmarks|tests)/[^`* ]+)`", README))
    assert "src/ddpm/sampling/registry.py" in paths and "src/ddpm/models/layers.py" in paths
    missing = [p for p in sorted(paths) if not (root / p).exists()]
    assert not missing, missing
    # module paths without the src/ a reader needs to find them
    assert not re.findall(r"(?<![/\w])`ddpm/[\w/]+\.py`", README)


def test_the_python_training_example_builds_the_config_it_says(monkeypatch):
    block = next(b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "ddpm.training.loop import train" in b)
    assert len(block.strip().splitlines()) == 3
    seen = []
    monkeypatch.setattr(ddpm.training.loop, "train", lambda config: seen.append(config) or "trained")
    scope = {}
    exec(block, scope)
    (config,) = seen
    assert scope["result"] == "trained"
    assert (config.name, config.data.dataset, config.train.max_steps) == ("mine", "digits", 500)
    assert config.model == ddpm.config.ModelConfig()  # everything else keeps its default


def test_the_load_run_example_runs_as_written(tmp_path, monkeypatch):
    from ddpm.config import RunConfig, apply_overrides
    from ddpm.runs.build import build_unet
    from ddpm.runs.checkpoint import save_checkpoint

    block = next(b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "ddpm.load_run(" in b)
    config = apply_overrides(RunConfig(), {"dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8",
                                           "image_size": "8", "channels": "1", "class_conditional": "true",
                                           "num_classes": "10"})
    weights = build_unet(config).state_dict()
    save_checkpoint(tmp_path / "runs" / "mnist", 4000, model_state=weights, ema_state=weights,
                    train_state={"step": 4000}, config=config)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(block, scope)
    assert scope["images"].shape == (16, 1, 8, 8)
    assert not scope["diffusion"].training and not scope["raw"].training
