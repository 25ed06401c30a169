"""ddpm export web in a real browser: the exported folder, served on 127.0.0.1 with the bundled
onnxruntime-web and every other address refused, draws images in headless Chromium (Playwright);
from a fixed x_T (and fixed noise, for a stochastic sampler) given through the page's test hook,
its images equal PyTorch's sampler's within 2e-3 for DDIM, DPM-Solver++(2M), UniPC and
SDE-DPM-Solver++(2M); another class or prompt gives other images; bad field values get a message
and no console error. Needs Chromium, Playwright, the export extra and ``npm install
onnxruntime-web@<pinned>`` in the project's root (.ci/run does all four)."""

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from export_helpers import tiny_run
from ddpm import load_run
from ddpm.cli import main
from ddpm.config import SampleConfig
from ddpm.export import runtime
from ddpm.export.web import page_plan
from ddpm.runs import load_for_sampling

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "node_modules" / "onnxruntime-web"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
TOLERANCE = 2e-3


def missing_pieces() -> list[str]:
    out = []
    for name in ("onnx", "onnxscript", "onnxruntime", "playwright"):
        try:
            __import__(name)
        except ImportError:
            out.append(name)
    if not (PACKAGE / "package.json").is_file():
        out.append(f"onnxruntime-web in {PACKAGE.parent} ({runtime.INSTALL})")
    if not Path(CHROMIUM).is_file():
        out.append(f"Chromium at {CHROMIUM}")
    return out


MISSING = missing_pieces()
pytestmark = pytest.mark.needs(bool(MISSING), f"the browser export tests need {', '.join(MISSING)}")


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """Pages of a class-conditional run (ddim from the command line; dpm++2m and unipc2 beside it,
    their plan.json written by the same page_plan), a text run and an unconditional run sampled
    with SDE-DPM-Solver++(2M), all under one folder served on 127.0.0.1."""
    root = tmp_path_factory.mktemp("export")
    runs = root / "runs"
    tiny_run(runs, "cc", class_conditional="true", sampler="ddim", steps="5")
    tiny_run(runs, "words", seed=1, text_conditional="true", text_encoder="builtin", builtin_text_dim="8",
             builtin_text_layers="1", sampler="unipc2", steps="4", guidance_scale="2")
    tiny_run(runs, "plain", seed=2, objective="pred_v", sampler="dpm++2m-sde", steps="6")
    www = root / "www"
    assert main(["export", "web", "--run", str(runs / "cc"), "--out", str(www / "ddim"), "--n", "4",
                 "--bundle-runtime", "--runtime-dir", str(PACKAGE)]) == 0
    diffusion, ckpt = load_for_sampling(runs / "cc", device="cpu")
    for name in ("dpm++2m", "unipc2"):
        folder = www / name
        shutil.copytree(www / "ddim", folder)
        settings = SampleConfig(sampler=name, steps=5, guidance_scale=2.0)
        plan = page_plan(diffusion, ckpt, settings, ["x", "t", "class"], [], 4, bundled=True)
        (folder / "plan.json").write_text(json.dumps(plan))
    assert main(["export", "web", "--run", str(runs / "words"), "--out", str(www / "words"), "--n", "3",
                 "--prompt", "a three", "--prompt", "two sevens", "--bundle-runtime", "--runtime-dir", str(PACKAGE)]) == 0
    assert main(["export", "web", "--run", str(runs / "plain"), "--out", str(www / "plain"), "--n", "2",
                 "--bundle-runtime", "--runtime-dir", str(PACKAGE)]) == 0
    return runs, www


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(sites):
    """(page opener, the requests seen): a static server of the pages and headless Chromium whose
    every request elsewhere is aborted (and recorded)."""
    from playwright.sync_api import sync_playwright

    _, www = sites
    handler = functools.partial(QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_port}/"
    elsewhere = []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(www.parent / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)

        def only_ours(route):
            if route.request.url.startswith(address):
                return route.continue_()
            elsewhere.append(route.request.url)
            return route.abort()

        context.route("**/*", only_ours)
        problems = []

        def open_page(name, prepare=None, ready="true"):
            page = context.new_page()
            page.on("pageerror", lambda err: problems.append(str(err)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            if prepare is not None:
                prepare(page)
            page.goto(address + name + "/")
            page.wait_for_selector(f"body[data-ready={ready}]", timeout=120_000)
            return page

        try:
            yield open_page, elsewhere, problems
        finally:
            context.close()
            server.shutdown()


def draw(page, noise, *, condition=None, guidance=None, n=None):
    """Generate on ``page`` with ``noise`` (x_T, then the sampler's fresh draws) through the test hook;
    returns x_0 [n, ...] as the page computed it."""
    runs = page.evaluate("window.ddpmTest.runs")
    page.evaluate("noise => { window.ddpmTest.noise = noise; }", [a.flatten().tolist() for a in noise])
    if condition is not None:
        page.select_option("#condition", condition)
    if guidance is not None:
        page.fill("#guidance", str(guidance))
    if n is not None:
        page.fill("#n", str(n))
    page.click("#generate")
    page.wait_for_function(f"window.ddpmTest.runs === {runs + 1}", timeout=120_000)
    return np.array(page.evaluate("window.ddpmTest.result"), dtype=np.float32).reshape(noise[0].shape)


def pytorch(run: Path, www: Path, x_T, *, classes=None, prompts=None, guidance=1.0, generator=None):
    """PyTorch's sampler on the same plan (the page's plan.json: its sampler and times), in [-1, 1]."""
    plan = json.loads((www / "plan.json").read_text())
    diffusion = load_run(run)
    out = diffusion.sample(x_T.shape[0], sampler=plan["sampler"]["name"], timesteps=plan["plan"]["times"],
                           noise=x_T, classes=classes, prompts=prompts, guidance_scale=guidance, generator=generator,
                           clip=plan["denoiser"]["clip"], final=plan["plan"]["final"], eta=plan["sampler"]["eta"])
    return (2 * out - 1).numpy()


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m", "unipc2"])
def test_class_page_equals_pytorch_from_the_same_x_T(sites, browser, sampler):
    runs, www = sites
    open_page, elsewhere, problems = browser
    page = open_page(sampler)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    got = draw(page, [x_T], condition="3", guidance=2)
    want = pytorch(runs / "cc", www / sampler, x_T, classes=[3] * 4, guidance=2.0)
    assert np.abs(want).max() > 0.5 and np.abs(got - want).max() <= TOLERANCE, np.abs(got - want).max()
    # each class in turn, unguided (one forward pass per step, no doubled batch)
    got = draw(page, [x_T], condition="each", guidance=1)
    assert np.abs(got - pytorch(runs / "cc", www / sampler, x_T, classes=[0, 1, 2, 3], guidance=1.0)).max() <= TOLERANCE
    # another class, another picture
    other = draw(page, [x_T], condition="7", guidance=2)
    assert np.abs(other - draw(page, [x_T], condition="3", guidance=2)).max() > 0.05
    page.close()
    assert problems == [] and elsewhere == []


def test_prompt_page_equals_pytorch_and_prompts_matter(sites, browser):
    runs, www = sites
    open_page, elsewhere, problems = browser
    page = open_page("words")
    assert page.locator("#condition option").all_inner_texts() == ["a three", "two sevens", "no prompt (unconditional)"]
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    first = draw(page, [x_T], condition="0")  # the run's own guidance, 2
    assert np.abs(first - pytorch(runs / "words", www / "words", x_T, prompts="a three", guidance=2.0)).max() <= TOLERANCE
    second = draw(page, [x_T], condition="1")
    assert np.abs(second - pytorch(runs / "words", www / "words", x_T, prompts="two sevens", guidance=2.0)).max() <= TOLERANCE
    assert np.abs(first - second).max() > 0.05
    page.close()
    assert problems == [] and elsewhere == []


def test_stochastic_sampler_with_the_same_noise(sites, browser):
    runs, www = sites
    open_page, elsewhere, problems = browser
    page = open_page("plain")
    assert page.locator("#row-condition").is_hidden() and page.locator("#row-guidance").is_hidden()
    plan = json.loads((www / "plain" / "plan.json").read_text())
    draws = sum(1 for step in plan["table"] if step[2] > 0)
    assert plan["sampler"]["name"] == "dpm++2m-sde" and draws >= 4
    g = torch.Generator().manual_seed(5)
    noise = [torch.randn(2, 1, 8, 8, generator=g) for _ in range(1 + draws)]  # x_T, then each step's draw
    got = draw(page, noise)
    again = torch.Generator().manual_seed(5)
    torch.randn(2, 1, 8, 8, generator=again)  # x_T: the sampler then draws what the page was given
    want = pytorch(runs / "plain", www / "plain", noise[0], generator=again)
    assert np.abs(got - want).max() <= TOLERANCE
    # the page's own seeded draws: the same seed gives the same images, another seed others
    page.evaluate("window.ddpmTest.noise = null")
    page.click("#generate")
    page.wait_for_function("window.ddpmTest.runs === 2", timeout=120_000)
    seeded = page.evaluate("window.ddpmTest.result")
    assert "Drew 2 images in" in page.inner_text("#message") and page.locator("#save").is_enabled()
    page.fill("#seed", "1")
    page.click("#generate")
    page.wait_for_function("window.ddpmTest.runs === 3", timeout=120_000)
    assert page.evaluate("window.ddpmTest.result") != seeded
    page.close()
    assert problems == [] and elsewhere == []


@pytest.mark.parametrize("field, value, message", [
    ("#seed", "-1", "The seed must be a whole number from 0 to 4294967295."),
    ("#seed", "2.5", "The seed must be a whole number from 0 to 4294967295."),
    ("#n", "0", "Images must be a whole number from 1 to 64."),
    ("#n", "65", "Images must be a whole number from 1 to 64."),
    ("#guidance", "", "Guidance must be a number from 0 to 50"),
    ("#guidance", "-1", "Guidance must be a number from 0 to 50"),
])
def test_bad_field_values_get_a_message(sites, browser, field, value, message):
    open_page, elsewhere, problems = browser
    page = open_page("ddim")
    page.fill(field, value)
    page.click("#generate")
    page.wait_for_function("document.getElementById('message').className === 'error'", timeout=30_000)
    assert page.inner_text("#message").startswith(message)
    assert page.evaluate("window.ddpmTest.runs") == 0 and page.locator("#generate").is_enabled()
    page.close()
    assert problems == [] and elsewhere == []


def test_the_cdn_runtime_is_checked_against_its_integrity(sites, browser):
    """A page loading onnxruntime-web from jsDelivr (served here from the npm package's files, the
    network being closed) works with the published bytes and refuses a changed file."""
    runs, www = sites
    open_page, elsewhere, problems = browser
    folder = www / "cdn"
    if not folder.exists():
        shutil.copytree(www / "ddim", folder, ignore=shutil.ignore_patterns("runtime"))
        plan = json.loads((folder / "plan.json").read_text())
        plan["runtime"] = runtime.runtime_spec(bundled=False)
        (folder / "plan.json").write_text(json.dumps(plan))
    served = []

    def cdn(tamper):
        def prepare(page):
            def fulfil(route):
                name = route.request.url.removeprefix(runtime.CDN)
                body = (PACKAGE / "dist" / name).read_bytes()
                if tamper and name.endswith(".wasm"):
                    body = body[:-1] + bytes([body[-1] ^ 1])
                served.append(name)
                kind = "application/wasm" if name.endswith(".wasm") else "text/javascript"
                route.fulfill(status=200, body=body, headers={"Content-Type": kind, "Access-Control-Allow-Origin": "*"})
            page.route(runtime.CDN + "*", fulfil)
        return prepare

    page = open_page("cdn", cdn(tamper=False))
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    got = draw(page, [x_T], condition="2", guidance=2)
    assert np.abs(got - pytorch(runs / "cc", www / "cdn", x_T, classes=[2] * 4, guidance=2.0)).max() <= TOLERANCE
    assert sorted(served) == sorted(name for name, _ in runtime.FILES.values())
    page.close()
    assert problems == [] and elsewhere == []
    page = open_page("cdn", cdn(tamper=True), ready="failed")
    assert page.inner_text("#message").startswith("The page could not start:") and page.locator("#generate").is_disabled()
    page.close()
    assert any("integrity" in p for p in problems)  # the browser's own report of the refused file
    problems.clear()
