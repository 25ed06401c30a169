"""ddpm export web without a browser: what it writes (the plan from the Python planning code, a
student's own steps), what it refuses (one sentence, exit 2, the folder left as it was), and the
pinned onnxruntime-web's integrity hashes recomputed from the npm package's files."""

import json
from pathlib import Path

import pytest

from export_helpers import tiny_run
from ddpm.cli import main
from ddpm.export import runtime
from ddpm.sampling import make_plan
from ddpm.runs import load_for_sampling
from ddpm.sampling.dpm_solver import multistep_coefficients

try:
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
    MISSING = False
except ImportError:
    MISSING = True

PACKAGE = Path(__file__).resolve().parents[1] / "node_modules" / "onnxruntime-web"
pytestmark = pytest.mark.needs(MISSING, 'the export extra is not installed (pip install ".[export]")')


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    tiny_run(root, "cc", class_conditional="true", sampler="dpm++2m", steps="6", guidance_scale="3")
    assert main(["distill", "--run", str(root / "cc"), "--to-steps", "2", "--rounds", "1", "--steps-per-round", "2",
                 "--out", str(root / "student"), "--batch-size", "4", "--num-samples", "2", "--no-tensorboard"]) == 0
    return root


def one_sentence(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_the_plan_is_the_python_samplers_and_the_folder_is_complete(runs, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["export", "web", "--run", str(runs / "cc"), "--out", str(out), "--embed"]) == 0
    printed = capsys.readouterr().out
    assert '<iframe src="site/index.html"' in printed
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "model.onnx", "page.js", "plan.json", "sampler.js"]
    plan = json.loads((out / "plan.json").read_text())
    diffusion, _ = load_for_sampling(runs / "cc", device="cpu")
    want = make_plan(diffusion.schedule, 6, "tapered")  # dpm++2m's own grid, the run's 6 steps
    assert plan["plan"]["times"] == list(want.times) and plan["plan"]["alpha_bars"] == list(want.alpha_bars)
    table = multistep_coefficients(list(want.alpha_bars[:-1]), 2, True, end=want.alpha_bars[-1])
    assert [[c_x, list(c_m)] for c_x, c_m in table] == [[row[0], row[1]] for row in plan["table"]]
    assert plan["defaults"]["guidance"] == 3.0 and plan["condition"]["null"] == 10 and plan["inputs"] == ["x", "t", "class"]
    assert plan["runtime"]["base"] == runtime.CDN and plan["runtime"]["files"]["wasm"]["integrity"].startswith("sha384-")
    # another sampler takes its own default grid and steps
    assert main(["export", "web", "--run", str(runs / "cc"), "--out", str(out), "--overwrite", "--sampler", "ddim"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["sampler"]["name"] == "ddim" and len(plan["plan"]["times"]) == 50


def test_a_student_samples_on_its_own_steps(runs, tmp_path, capsys):
    out = tmp_path / "student"
    assert main(["export", "web", "--run", str(runs / "student"), "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    _, ckpt = load_for_sampling(runs / "student", device="cpu")
    assert plan["sampler"]["name"] == "ddim" and len(plan["plan"]["times"]) == 2 and plan["run"]["student"]
    assert plan["plan"]["times"] == list(make_plan(load_for_sampling(runs / "student")[0].schedule,
                                                   ckpt.config.sample.steps, ckpt.config.sample.grid).times)
    assert main(["export", "web", "--run", str(runs / "student"), "--out", str(tmp_path / "x"), "--steps", "8"]) == 2
    assert "this run is a 2-step student, trained on its own 2 timesteps only; leave out --steps" in one_sentence(capsys)
    assert main(["export", "web", "--run", str(runs / "student"), "--out", str(tmp_path / "x"), "--sampler", "unipc2"]) == 2
    assert "leave out --sampler" in one_sentence(capsys)


@pytest.mark.parametrize("extra, expected", [
    (["--sampler", "ancestral"], "the page samples with ddim, dpm++2m, dpm++3m, dpm++2m-sde, unipc2, unipc3; this run's "
                                 "sampler 'ancestral' is not among them"),
    (["--sampler", "euler"], "unknown sampler 'euler'"),
    (["--n", "0"], "--n must be from 1 to 64 images; got 0"),
    (["--steps", "-1"], "--steps must be 0 (the sampler's default) or a positive number of model evaluations; got -1"),
    (["--prompt", "a cat"], "--prompt needs a text-conditional run"),
    (["--bundle-runtime", "--runtime-dir", "nowhere"], "no onnxruntime-web package at nowhere; run npm install "
                                                       f"onnxruntime-web@{runtime.VERSION}"),
])
def test_what_cannot_be_exported_is_one_sentence(runs, tmp_path, capsys, extra, expected):
    out = tmp_path / "site"
    assert main(["export", "web", "--run", str(runs / "cc"), "--out", str(out), *extra]) == 2
    assert expected in one_sentence(capsys)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no half-written folder beside it either


def test_a_folder_with_other_files_is_never_touched(runs, tmp_path, capsys):
    out = tmp_path / "blog"
    out.mkdir()
    (out / "post.md").write_text("my post")
    assert main(["export", "web", "--run", str(runs / "cc"), "--out", str(out)]) == 2
    assert f"--out {out} is not empty; choose a new folder, or pass --overwrite" in one_sentence(capsys)
    assert main(["export", "web", "--run", str(runs / "cc"), "--out", str(out), "--overwrite"]) == 2
    assert "holds files that ddpm export web did not write" in one_sentence(capsys)
    assert [p.name for p in out.iterdir()] == ["post.md"] and (out / "post.md").read_text() == "my post"


@pytest.mark.needs(not (PACKAGE / "package.json").is_file(), f"onnxruntime-web is not in {PACKAGE.parent} ({runtime.INSTALL})")
def test_the_pinned_hashes_are_the_npm_packages_files(tmp_path):
    assert json.loads((PACKAGE / "package.json").read_text())["version"] == runtime.VERSION
    for name, sri in runtime.FILES.values():
        assert runtime.integrity((PACKAGE / "dist" / name).read_bytes()) == sri
    runtime.copy_runtime(runtime.package_dir(PACKAGE), tmp_path / "runtime")
    assert sorted(p.name for p in (tmp_path / "runtime").iterdir()) == sorted(n for n, _ in runtime.FILES.values())
