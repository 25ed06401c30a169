"""The logic that decides which cells the figure scripts in benchmarks/ draw, so that the command
printed beside a figure re-makes it: quality_curve.py scores a run's final checkpoint, distill_quality.py
draws its target's baseline in the same run, sampler_quality.py scores with ddpm eval's classifier.
The figures themselves are not tests."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ddpm.config import RunConfig
from ddpm.config.schema import DataConfig
from ddpm.eval.classifier import SmallClassifier, save_classifier
from ddpm.eval.report import _cache_root, _data_key

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import each other as top-level modules
    import distill_quality
    import quality_curve
    import sampler_quality
    import text_prompts

    yield SimpleNamespace(curve=quality_curve, distill=distill_quality, samplers=sampler_quality, text=text_prompts)
    for name in ("distill_quality", "quality_curve", "sampler_quality", "text_prompts"):
        sys.modules.pop(name, None)


def test_every_n_scores_the_multiples_and_the_final_checkpoint(scripts):
    steps = [550, 1100, 1650, 2200, 2750, 3300, 3850, 4317]  # a run its clock stopped at 4,317
    pick = scripts.curve.steps_to_score
    assert pick(steps, 1100, last=False) == {1100, 2200, 3300, 4317}
    assert pick(steps, 0, last=False) == set(steps)
    assert pick(steps, 1100, last=True) == pick(steps, 0, last=True) == {4317}
    assert pick([1100, 2200], 1100, last=False) == {1100, 2200}  # a final multiple is not scored twice
    assert pick([], 1100, last=False) == set()


def test_the_final_checkpoint_s_minutes_are_carried_on_from_the_last_logged_row(scripts):
    logged = {50: 16.0, 100: 30.0, 8150: 2200.0, 8200: 2214.0}  # metrics.csv every 50 steps; stopped at 8,220
    seconds = scripts.curve.train_seconds
    assert seconds(logged, 8200) == 2214.0  # logged: as written
    assert seconds(logged, 8220) == pytest.approx(2214.0 + 20 * 14.0 / 50)  # that interval's seconds per step
    assert seconds(logged, 120) == pytest.approx(30.0 + 20 * 14.0 / 50)  # between rows: the interval before it
    assert seconds({50: 16.0}, 60) == pytest.approx(16.0 * 60 / 50)  # one row: its own rate from the start
    assert seconds(logged, 40) is None and seconds({}, 4317) is None


def test_checkpoint_steps_come_from_the_directory_names(scripts):
    assert scripts.curve.checkpoint_step(Path("runs/mnist/checkpoints/step_00004317")) == 4317


def test_the_distillation_target_s_baseline_is_always_drawn_in_the_same_run(scripts):
    cells = scripts.distill.cells_to_draw
    todo = cells(32, "ddim@4,ddim@8,dpm++2m@20", "8,4,2,1", {16, 8, 4, 2, 1})
    assert todo == [("teacher", "ddim@32"), ("teacher", "ddim@4"), ("teacher", "ddim@8"), ("teacher", "dpm++2m@20"),
                    ("teacher", "ancestral@1000"), ("student", "ddim@8"), ("student", "ddim@4"), ("student", "ddim@2"),
                    ("student", "ddim@1")]
    assert scripts.distill.TARGET[1] == "ancestral@1000"
    # named already: drawn once; a student the runs do not hold is left out; the start drawn first
    assert cells(32, "ancestral@1000,ddim@32", "4,3", {4}) == [("teacher", "ddim@32"), ("teacher", "ancestral@1000"),
                                                               ("student", "ddim@4")]


def test_the_sampler_table_scores_with_the_classifier_ddpm_eval_keeps(scripts, tmp_path):
    config = RunConfig(data=DataConfig(dataset="digits", image_size=(8, 8), channels=1))
    torch.manual_seed(0)
    kept = SmallClassifier(1, 10, 8, widths=(4, 8))
    save_classifier(kept, _cache_root(str(tmp_path)) / "classifiers" / _data_key(config), accuracy=0.5,
                    meta={"dataset": "digits"})
    extractor, (mu, sigma, feats), accuracy = scripts.samplers.eval_scorer(
        SimpleNamespace(config=config), str(tmp_path), str(tmp_path), log=lambda m: None)
    assert accuracy == 0.5  # the cached one, not a classifier trained anew (whose accuracy would be far above)
    assert feats.shape[1] == 8 and mu.shape == (8,)
    assert extractor.name == scripts.curve.classifier_extractor(kept).name  # the same weights, by their hash


def test_text_prompt_rows_are_named_after_their_files_and_the_trained_ones_spread(scripts):
    assert scripts.text.set_name(str(scripts.text.UNSEEN)) == "unseen"
    assert scripts.text.set_name("benchmarks/prompts/mnist_near_templates.txt") == "near_templates"
    labelled = [(c, f"{c}-{j}") for j in range(4) for c in range(3)]  # phrasing-major, 4 per class
    assert scripts.text.spread(labelled, 10) == labelled
    assert scripts.text.spread(labelled, 2) == [(0, "0-0"), (1, "1-0"), (2, "2-0"), (0, "0-2"), (1, "1-2"), (2, "2-2")]
