"""`ddpm eval` on a tiny trained run: the figures, the JSON record, the caches."""

import json

import pytest
import torch

import ddpm.eval.report as report
from ddpm.cli import main
from ddpm.config import apply_overrides, RunConfig
from ddpm.data import get_dataset
from ddpm.errors import ConfigError
from ddpm.eval.report import EvalSettings, evaluate_run, format_table
from ddpm.training.loop import train

TINY = {"dataset": "digits", "dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8", "timesteps": "20", "batch_size": "8",
        "sample_every": "0", "save_every": "0", "num_samples": "4", "sampler": "ddim", "steps": "4", "tensorboard": "false",
        "max_steps": "2"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    plain = train(apply_overrides(RunConfig(), {**TINY, "runs_dir": str(root), "name": "plain"}), log=lambda m: None, progress=False)
    cond = train(apply_overrides(RunConfig(), {**TINY, "runs_dir": str(root), "name": "cond", "class_conditional": "true"}),
                 log=lambda m: None, progress=False)
    return plain.run_dir, cond.run_dir, root / "cache"


def _real_test_images():
    data = get_dataset("digits", split="test")
    return data.images.float() / 255, data.labels


def test_real_images_score_perfectly_and_the_record_is_complete(runs, monkeypatch):
    """Feeding the held-out images themselves in place of samples must give FID ~ 0 and
    precision = recall = 1: the figures compare against the right split with the right features."""
    plain, _, cache = runs
    images, _ = _real_test_images()
    monkeypatch.setattr(report, "generate", lambda diffusion, num, **kw: images[:num])
    result = evaluate_run(plain, EvalSettings(num_samples=len(images), cache_dir=str(cache), bpd_images=4), log=lambda m: None)
    assert result["fid"] == pytest.approx(0.0, abs=1e-6)
    assert result["precision"] == 1.0 and result["recall"] == 1.0
    # KID's unbiased estimator is slightly negative for a set compared with itself (the cross term
    # keeps the diagonal the within-set terms leave out); a bad model scores far higher
    assert -0.05 < result["kid"] <= 0.0
    assert result["features"]["classifier_test_accuracy"] > 0.85
    saved = json.loads(open(result["written_to"]).read())
    assert saved["settings"]["sample"]["sampler"] == "ddim" and saved["settings"]["sample"]["steps"] == 4
    assert saved["settings"]["sample"]["grid"] == "quadratic"  # the grid used, not "" for "the default"
    assert saved["settings"]["num_samples"] == len(images) and saved["step"] == 2
    assert saved["bits_per_dim"] > 0 and saved["bpd_images"] == 4
    assert "FID" in format_table(result) and "bits/dim" in format_table(result)
    # the classifier and the real statistics are cached and reused
    assert list((cache / "classifiers").iterdir()) and list((cache / "stats").iterdir())


def test_samples_of_a_barely_trained_model_score_badly(runs):
    plain, _, cache = runs
    result = evaluate_run(plain, EvalSettings(num_samples=64, batch_size=64, cache_dir=str(cache), bpd_images=0),
                          log=lambda m: None)
    assert result["fid"] > 10 and result["kid"] > 0.1 and result["precision"] < 1.0
    assert "bits_per_dim" not in result


def test_class_accuracy_of_a_conditional_run(runs, monkeypatch):
    _, cond, cache = runs
    images, labels = _real_test_images()

    def by_label(diffusion, num, labels=None, **kw):
        # one held-out image of each requested class
        return torch.stack([images[(labels_all == c).nonzero()[i // 10, 0]] for i, c in enumerate(labels)])

    labels_all = labels
    monkeypatch.setattr(report, "generate", by_label)
    result = evaluate_run(cond, EvalSettings(num_samples=100, cache_dir=str(cache), bpd_images=0), log=lambda m: None)
    assert set(result["class_accuracy"]["per_class"]) == {str(c) for c in range(10)}
    assert result["class_accuracy"]["overall"] > 0.8
    # requested classes only, drawn in turn
    asked = evaluate_run(cond, EvalSettings(num_samples=40, cache_dir=str(cache), bpd_images=0, classes=(3, 7)),
                         log=lambda m: None)
    assert set(asked["class_accuracy"]["per_class"]) == {"3", "7"}
    assert json.loads(open(asked["written_to"]).read())["settings"]["classes"] == [3, 7]
    plain = runs[0]
    with pytest.raises(ConfigError, match="--class needs a class-conditional run"):
        evaluate_run(plain, EvalSettings(num_samples=4, cache_dir=str(cache), classes=(1,)), log=lambda m: None)
    with pytest.raises(ConfigError, match="class 12 is out of range; this model knows classes 0 to 9"):
        evaluate_run(cond, EvalSettings(num_samples=4, cache_dir=str(cache), bpd_images=0, classes=(12,)), log=lambda m: None)


def test_eval_command_and_its_errors(runs, capsys):
    plain, _, cache = runs
    assert main(["eval", "--run", str(plain), "--num-samples", "20", "--bpd-images", "2", "--cache-dir", str(cache),
                 "--sampler", "dpm++2m"]) == 0
    out = capsys.readouterr().out
    # the steps come from the run's [sample] (4), the grid is dpm++2m's default, written out as used
    assert "FID" in out and "dpm++2m, 4 steps on the tapered grid" in out and "written to" in out
    # --steps 0 is the sampler's default (dpm++2m: 20, here all T = 20), printed and written as used
    assert main(["eval", "--run", str(plain), "--num-samples", "4", "--bpd-images", "0", "--cache-dir", str(cache),
                 "--sampler", "dpm++2m", "--steps", "0"]) == 0
    out = capsys.readouterr().out
    assert "with dpm++2m (20 steps, tapered grid)" in out and "dpm++2m, 20 steps on the tapered grid" in out
    assert main(["eval", "--run", str(plain), "--features", "inception", "--cache-dir", str(cache / "empty")]) == 2
    assert "need pytorch-fid's weights file" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--num-samples must be at least 2"):
        evaluate_run(plain, EvalSettings(num_samples=1))


def test_a_negative_kid_is_explained():
    result = {"checkpoint": "c", "step": 1, "real_images": 10, "fid": 0.1, "kid": -0.0004, "kid_stderr": 0.0003,
              "precision": 1.0, "recall": 1.0, "seconds_per_image": 0.1, "features": {"extractor": "classifier",
              "classifier_test_accuracy": None},
              "settings": {"num_samples": 10, "seed": 0, "sample": {"sampler": "ddim", "steps": 4, "grid": "quadratic",
                                                                    "eta": 0.0, "guidance_scale": 1.0}}}
    kid = next(line for line in format_table(result).splitlines() if line.startswith("KID"))
    assert kid.endswith("-0.00040 +- 0.00030 (below 0: KID is an unbiased estimate, so it can be slightly negative "
                        "when the generated and real sets are indistinguishable at this sample size)")
    result["kid"] = 0.0004
    assert next(line for line in format_table(result).splitlines() if line.startswith("KID")).endswith("0.00040 +- 0.00030")


def test_prompt_accuracy_of_a_text_run(runs, monkeypatch, tmp_path):
    import ddpm.eval.prompts as prompts_module
    from ddpm.text.label_captions import label_phrasings

    _, _, cache = runs
    run = train(apply_overrides(RunConfig(), {**TINY, "runs_dir": str(tmp_path), "name": "text", "text_conditional": "true",
                                              "text_encoder": "builtin", "builtin_text_dim": "8", "builtin_text_layers": "0"}),
                log=lambda m: None, progress=False).run_dir
    images, labels = _real_test_images()
    asks = {p: c for c, ps in enumerate(label_phrasings("digits", None, 10)) for p in ps}
    asks.update({"the number seven": 7, "3": 3, "a 3 written by hand": 3})
    seen = []

    def obedient(diffusion, num, prompts=None, **kw):  # a model that draws exactly what it is asked
        seen.append(list(prompts))
        return torch.stack([images[(labels == asks[p]).nonzero()[i // 10, 0]] for i, p in enumerate(prompts)])

    monkeypatch.setattr(report, "generate", obedient)
    monkeypatch.setattr(prompts_module, "generate", obedient)
    f = tmp_path / "unseen.txt"
    f.write_text("7: the number seven\n3: 3\n 3 : a 3 written by hand\n", encoding="utf-8")
    result = evaluate_run(run, EvalSettings(num_samples=200, cache_dir=str(cache), bpd_images=0, prompts_file=str(f)),
                          log=lambda m: None)
    trained, unseen = result["prompt_accuracy"]["trained phrasings"], result["prompt_accuracy"][str(f)]
    assert len(set(seen[0])) == 100 and trained["images"] == 200 and set(trained["per_class"]) == {str(c) for c in range(10)}
    assert trained["overall"] > 0.8 and set(unseen["per_class"]) == {"3", "7"} and unseen["overall"] > 0.8
    assert set(unseen["per_prompt"]) == {"the number seven", "3", "a 3 written by hand"}
    assert "prompt accuracy (trained phrasings)" in format_table(result)
    with pytest.raises(ConfigError, match="--prompts-file needs a text-conditional run"):
        evaluate_run(runs[0], EvalSettings(num_samples=4, cache_dir=str(cache), prompts_file=str(f)), log=lambda m: None)


def test_score_prompts_is_a_plain_fraction():
    from ddpm.eval.prompts import prompt_layout, score_prompts

    wanted, prompts = prompt_layout([(1, "one"), (2, "two"), (2, "2")], 6)
    assert wanted == [1, 2, 2, 1, 2, 2] and prompts == ["one", "two", "2", "one", "two", "2"]
    s = score_prompts(torch.tensor([1, 2, 0, 0, 2, 2]), wanted, prompts)
    assert s["overall"] == pytest.approx(4 / 6) and s["per_class"] == {"1": 0.5, "2": 0.75}
    assert s["per_prompt"] == {"one": 0.5, "two": 1.0, "2": 0.5} and s["images"] == 6
