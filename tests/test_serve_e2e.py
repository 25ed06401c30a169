"""ddpm serve as a user runs it: the command and its errors, real HTTP (a client that leaves
cancels its job, Ctrl-C stops the server) and the page in a real browser (headless Chromium
driven by Playwright). Without Chromium or Playwright the browser test skips, except under CI
(the CI variable, set by .ci/run), where it fails."""

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from serve_helpers import decode_png, need_server_packages, train_runs

need_server_packages()
import httpx  # noqa: E402

from ddpm.cli import main  # noqa: E402
from ddpm.schedules import get_schedule  # noqa: E402
from ddpm.serve import is_local, prepare  # noqa: E402
from ddpm.viz import make_grid  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def unavailable(reason: str):
    """Skip locally, fail in CI: CI must run the browser tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs chromium and playwright)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def server(runs):
    """``ddpm serve`` in a subprocess on a free port; yields (address, its output so far)."""
    proc = subprocess.Popen([sys.executable, "-m", "ddpm", "serve", "--runs-dir", str(runs), "--run", str(runs / "plain"),
                             "--port", "0", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen, address = [], None
    deadline = time.monotonic() + 120
    while address is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        found = re.search(r"at (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)", seen[-1])
        address = found.group(1) if found else None
    if address is None:
        proc.kill()
        pytest.fail(f"ddpm serve printed no address: {''.join(seen)}")
    try:
        yield address, seen
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            status = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        while not lines.empty():
            seen.append(lines.get())
        assert status == 0 and seen[-1] == "ddpm serve: stopped\n" and "Traceback" not in "".join(seen), "".join(seen)


# ---- the command --------------------------------------------------------------------------------


def test_command_prints_its_address_and_serves_over_http(server):
    address, output = server
    assert output[-1].startswith("ddpm serve: 2 runs at http://127.0.0.1:") and "warning" not in "".join(output)
    runs = httpx.get(address + "api/runs", timeout=30).json()["runs"]
    assert [r["name"] for r in runs] == ["cc", "plain"]
    assert httpx.get(address + "api/info", timeout=30).json()["default_run"] == "plain"


def test_a_client_that_leaves_cancels_its_job(server):
    address, _ = server
    body = {"sampler": "ancestral", "steps": 1000, "n": 64}
    with httpx.stream("POST", address + "api/runs/plain/generate", json=body, timeout=60) as response:
        assert response.status_code == 200
        job = None
        for line in response.iter_lines():
            if line.startswith("data: ") and job is None:
                job = json.loads(line[6:])["job"]
            if line == "event: step":
                break  # the client goes away after the first frame
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = httpx.get(address + "api/jobs", timeout=30).json()
        outcome = [f["state"] for f in state["finished"] if f["job"] == job]
        if outcome:
            break
        time.sleep(0.1)
    assert outcome == ["cancelled"] and state["runs"] == {}


def test_command_errors(tmp_path, capsys, monkeypatch):
    assert main(["serve", "--runs-dir", str(tmp_path / "none")]) == 2
    assert f"runs directory {tmp_path / 'none'} does not exist; train a model first" in capsys.readouterr().err
    assert main(["serve", "--runs-dir", str(tmp_path), "--port", "70000"]) == 2
    assert "--port must be from 0 to 65535; got 70000" in capsys.readouterr().err
    assert main(["serve", "--runs-dir", str(tmp_path), "--max-images", "0"]) == 2
    assert "--max-images must be positive; got 0" in capsys.readouterr().err
    assert main(["serve", "--run", str(tmp_path / "nope")]) == 2
    assert f"--run {tmp_path / 'nope'} is not a run directory" in capsys.readouterr().err
    with socket.socket() as busy:  # a port in use: one sentence, not a traceback
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", "--runs-dir", str(tmp_path), "--port", str(busy.getsockname()[1])]) == 2
        assert "ddpm: error: Address already in use" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the serve extra were not installed
    assert main(["serve", "--runs-dir", str(tmp_path)]) == 2
    assert ('ddpm serve needs uvicorn, which is not installed; install the serve extra: pip install "torch-ddpm[serve]"'
            in capsys.readouterr().err)


def test_other_hosts_are_served_with_a_warning(tmp_path):
    assert [is_local(h) for h in ("127.0.0.1", "127.8.0.1", "localhost", "::1")] == [True] * 4
    assert [is_local(h) for h in ("0.0.0.0", "::", "192.168.1.20", "example.com")] == [False] * 4
    said = []
    _, sock, address = prepare(tmp_path, host="0.0.0.0", port=0, log=said.append)
    sock.close()
    assert address.startswith("http://0.0.0.0:") and len(said) == 1
    assert said[0].startswith("warning: --host 0.0.0.0 lets other machines reach this page and its API, without a password")
    said.clear()
    _, sock, _ = prepare(tmp_path, port=0, log=said.append)
    sock.close()
    assert said == []


# ---- the page in a browser ------------------------------------------------------------------------

BROKEN_IMAGES = """() => [...document.images]
    .filter((img) => img.getClientRects().length && !(img.complete && img.naturalWidth > 0))
    .map((img) => img.id || img.alt)"""
SIZES = """(imgs) => imgs.map((img) => [img.clientWidth, img.clientHeight, img.naturalWidth, Number(img.dataset.scale),
                                  getComputedStyle(img).imageRendering])"""


def frame_scale(page, selector):
    """The whole-number factor a live frame shows its picture at (checked against its size)."""
    ((width, height, natural, scale, rendering),) = page.locator(selector).evaluate_all(SIZES)
    assert scale == int(scale) >= 1 and width == natural * scale and rendering == "pixelated", (width, natural, scale)
    return scale


def assert_crisp_results(page, selector, size, live):
    """Finished images: each shown at a whole-number multiple of its ``size`` pixels, pixelated,
    and at least as large as in the live frame (factor ``live``)."""
    sizes = page.locator(selector).evaluate_all(SIZES)
    assert sizes
    for width, height, natural, scale, rendering in sizes:
        assert natural == size and width == height == size * scale and scale >= live, (width, size, scale, live)
        assert rendering == "pixelated"



@pytest.fixture(scope="module")
def sync_playwright():
    """Playwright's entry point, once Chromium and Playwright are known to be here (checked before
    the server starts, so a skip costs nothing)."""
    if not Path(CHROMIUM).is_file():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install '.[browser]')")
    return sync_playwright


def test_page_in_a_browser(sync_playwright, server, tmp_path):
    address, _ = server
    problems = []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900}, accept_downloads=True)
        try:
            page = context.new_page()
            page.on("pageerror", lambda err: problems.append(str(err)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(address)
            page.wait_for_selector("body[data-ready=true]", timeout=30_000)
            assert page.input_value("#run") == "plain"  # --run opens first
            assert page.locator("#row-class").is_hidden() and page.locator("#row-prompt").is_hidden()
            # a fresh page: empty frames as boxes, not broken images
            assert page.evaluate(BROKEN_IMAGES) == []
            for frame in page.locator("#panel-generate .frame").all():
                box = frame.bounding_box()
                assert box["width"] >= 256 and box["height"] >= 256

            # the tabs, from the keyboard (WAI-ARIA: Left/Right wrap, Home, End)
            page.focus("#tab-generate")
            for key, expected in (("ArrowRight", "forward"), ("ArrowRight", "inpaint"), ("ArrowRight", "generate"),
                                  ("ArrowLeft", "inpaint"), ("Home", "generate"), ("End", "inpaint"),
                                  ("Home", "generate")):
                page.keyboard.press(key)
                assert page.get_attribute(f"#tab-{expected}", "aria-selected") == "true", (key, expected)
                assert page.evaluate("() => document.activeElement.id") == f"tab-{expected}"
                assert page.locator(f"#panel-{expected}").is_visible()
                assert page.locator("#tabs [tabindex='0']").count() == 1  # only the selected tab is in the Tab order

            # Generate: press the button, wait for the images
            page.select_option("#sampler", "ddim")
            page.fill("#steps", "4")
            page.fill("#n", "4")
            page.click("#generate")
            page.wait_for_selector("#panel-generate[data-state=done]", timeout=60_000)
            assert page.get_attribute("#progress", "value") == "4"
            images = page.locator("#result-images img")
            assert images.count() == 4
            assert decode_png(images.first.get_attribute("src")).shape == (8, 8)
            grid = decode_png(page.get_attribute("#download-grid", "href"))
            assert grid.shape == make_grid(torch.zeros(4, 1, 8, 8)).shape
            with page.expect_download() as download:
                page.locator("#result-images a").first.click()
            assert download.value.suggested_filename == "plain-seed0-00000.png"
            assert np.array_equal(decode_png(images.first.get_attribute("src")),
                                  np.asarray(Image.open(download.value.path())))
            assert_crisp_results(page, "#result-images img", 8, frame_scale(page, "#frame-xt"))
            page.screenshot(path=str(tmp_path / "generate.png"), full_page=True)

            # a new run clears the last one's pictures at once: here it waits behind another client's job,
            # and is cancelled before its first step
            old = page.get_attribute("#frame-xt", "src")
            with httpx.stream("POST", address + "api/runs/plain/generate", timeout=60,
                              json={"sampler": "ancestral", "steps": 1000, "n": 64}) as blocker:
                lines = blocker.iter_lines()  # held: a dropped iterator would close the stream, cancelling the job
                assert any(line.startswith("event: step") for line in lines)
                page.click("#generate")
                page.wait_for_selector("#progress-text:has-text('waiting: 1 ahead')", timeout=30_000)
                assert page.get_attribute("#frame-xt", "src") is None and page.get_attribute("#frame-x0", "src") is None
                assert page.locator("#results").is_hidden() and page.locator("#result-images img").count() == 0
                queue = httpx.get(address + "api/jobs", timeout=30).json()["runs"]["plain"]
                assert queue["running"] and len(queue["waiting"]) == 1  # so the page's job had drawn nothing yet
                page.click("#cancel")
                page.wait_for_selector("#panel-generate[data-state=cancelled]", timeout=30_000)
                assert page.get_attribute("#frame-xt", "src") is None and old is not None
                assert page.evaluate(BROKEN_IMAGES) == []

            # Cancel: a long run stops at once
            page.select_option("#sampler", "ancestral")
            page.fill("#steps", "1000")
            page.fill("#n", "64")
            page.click("#generate")
            page.wait_for_selector("#progress:not([value='0'])", timeout=60_000)  # a step has been drawn
            page.click("#cancel")
            page.wait_for_selector("#panel-generate[data-state=cancelled]", timeout=30_000)
            assert float(page.get_attribute("#progress", "value") or 0) < 1000
            assert page.locator("#results").is_hidden()

            # the forward process: move the slider, the picture changes
            page.click("#tabs button[data-panel=forward]")
            page.wait_for_selector("#panel-forward[data-t]", timeout=30_000)
            before = page.get_attribute("#fwd-xt", "src")
            page.fill("#t", "900")
            page.wait_for_selector("#panel-forward[data-t='900']", timeout=30_000)
            assert page.get_attribute("#fwd-xt", "src") != before
            assert frame_scale(page, "#fwd-xt") == 32  # 8 pixels at 256
            # the chart has axis labels: said in its accessible name, and drawn in its margins
            label = page.get_attribute("#schedule-chart", "aria-label")
            assert "(left axis, 0 to 1)" in label and "log-SNR (right axis" in label
            assert "over t (bottom axis, 0 to 999)" in label and "t = 900" in label
            inked = page.locator("#schedule-chart").evaluate("""(c) => {
                const r = c.width / c.clientWidth, g = c.getContext("2d");
                const count = (x, y, w, h) => g.getImageData(x * r, y * r, w * r, h * r).data
                    .filter((v, i) => i % 4 === 3 && v > 0).length;
                return [count(0, 30, 40, 170), count(c.clientWidth - 50, 30, 50, 170), count(60, 200, 260, 30)];
            }""")
            assert all(n > 20 for n in inked), inked  # left, right and bottom margins hold text
            ab = float(get_schedule("linear", 1000).alphas_cumprod[900])
            assert float(page.text_content("#stat-alpha-bar")) == pytest.approx(ab, rel=1e-3)
            upload = tmp_path / "upload.png"
            Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(upload)
            page.set_input_files("#upload", str(upload))
            page.wait_for_selector("#train-images img.chosen[data-image^='upload:']", timeout=30_000)
            chosen = page.get_attribute("#train-images img.chosen", "src")
            for _ in range(300):  # (the page's CSP forbids Playwright's string predicates)
                if page.get_attribute("#fwd-x0", "src") == chosen:
                    break
                page.wait_for_timeout(100)
            assert (decode_png(page.get_attribute("#fwd-x0", "src")) == 200).all()  # a flat gray, decoded at 8x8
            shot = tmp_path / "forward.png"
            page.screenshot(path=str(shot), full_page=True)
            with Image.open(shot) as im:
                assert im.format == "PNG" and im.width == 1280 and im.height >= 900

            # a class-conditional run shows its class picker
            page.click("#tabs button[data-panel=generate]")
            page.select_option("#run", "cc")
            page.wait_for_selector("#row-class:not([hidden])", timeout=10_000)
            assert page.locator("#class option").count() == 11 and page.locator("#row-prompt").is_hidden()
        finally:
            context.close()
    assert problems == []


def test_inpaint_in_a_browser(sync_playwright, server, runs, tmp_path):
    """Paint on the canvas with the mouse, then the bottom half: RePaint fills what was painted, the
    rest of the image stays exactly, and the completions are ddpm inpaint's for the same settings."""
    from ddpm.editing import inpaint_to_directory

    address, _ = server
    problems = []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            page.on("pageerror", lambda err: problems.append(str(err)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(address)
            page.wait_for_selector("body[data-ready=true]", timeout=30_000)
            page.select_option("#run", "cc")
            page.click("#tabs button[data-panel=inpaint]")
            page.wait_for_selector("#panel-inpaint[data-image='train:0']", timeout=30_000)
            assert page.locator("#inpaint-row-class").is_visible() and page.is_disabled("#inpaint")
            original = decode_png(page.get_attribute("#inpaint-images img.chosen", "src"))
            # hovering another thumbnail does not look like choosing it
            ring = "(img) => { const s = getComputedStyle(img); return [s.outlineColor, s.outlineWidth, s.outlineOffset]; }"
            chosen_ring = page.locator("#inpaint-images img.chosen").evaluate(ring)
            other = page.locator("#inpaint-images img:not(.chosen)").nth(2)
            other.hover()
            hover_ring = other.evaluate(ring)
            assert hover_ring[1] != "0px" and hover_ring != chosen_ring, (hover_ring, chosen_ring)

            # a stroke across the top-left quarter of the canvas
            box = page.locator("#mask-canvas").bounding_box()
            page.fill("#brush", "1")
            page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.1)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.1, steps=8)
            page.mouse.up()
            painted = int(page.get_attribute("#panel-inpaint", "data-painted"))
            assert 0 < painted < 16, painted
            for selector, value in (("#inpaint-steps", "6"), ("#jump-length", "2"), ("#jump-n-sample", "2"),
                                    ("#inpaint-n", "3"), ("#inpaint-seed", "4")):
                page.fill(selector, value)
            page.click("#inpaint")
            # what it does is in sight: the progress bar and the live frames fit the 900-pixel window
            assert page.evaluate("() => window.scrollY") == 0
            for selector in ("#inpaint-progress", "#inpaint-xt", "#mask-canvas"):
                page.wait_for_selector(selector, state="attached")
                box = page.locator(selector).bounding_box() or page.locator(selector).locator("..").bounding_box()
                assert 0 <= box["y"] and box["y"] + box["height"] <= 900, (selector, box)
            page.wait_for_selector("#panel-inpaint[data-state=done]", timeout=60_000)
            assert_crisp_results(page, "#inpaint-results-images img", 8, frame_scale(page, "#inpaint-xt"))
            stroke = [decode_png(img.get_attribute("src")) for img in page.locator("#inpaint-results-images img").all()]
            assert len(stroke) == 3
            changed = (stroke[0] != original)
            assert changed.sum() <= painted and not changed[4:].any()  # only painted pixels (top rows) may change

            # Bottom half adds to the stroke (which lies in the top half); after Clear it is the box 0,4,8,8,
            # and the completions are ddpm inpaint --box 0,4,8,8's
            page.click("#mask-bottom")
            assert int(page.get_attribute("#panel-inpaint", "data-painted")) == painted + 32
            page.click("#mask-clear")
            assert page.get_attribute("#panel-inpaint", "data-painted") == "0" and page.is_disabled("#inpaint")
            page.click("#mask-bottom")
            assert page.get_attribute("#panel-inpaint", "data-painted") == "32"
            page.click("#inpaint")
            page.wait_for_selector("#panel-inpaint[data-state=done] #inpaint-results:not([hidden])", timeout=60_000)
            page.wait_for_selector("#inpaint-progress-text:has-text('3 completions')", timeout=60_000)
            got = [decode_png(img.get_attribute("src")) for img in page.locator("#inpaint-results-images img").all()]
            Image.fromarray(original).save(tmp_path / "in.png")
            out = inpaint_to_directory(runs / "cc", tmp_path / "in.png", box="0,4,8,8", out=tmp_path / "cli", num=3,
                                       seed=4, steps=6, jump_length=2, jump_n_sample=2, device="cpu", log=lambda m: None)
            for i, image in enumerate(got):
                with Image.open(out / f"{i:05d}.png") as im:
                    assert np.array_equal(image, np.asarray(im))
                assert np.array_equal(image[:4], original[:4])
            page.screenshot(path=str(tmp_path / "inpaint.png"), full_page=True)
        finally:
            context.close()
    assert problems == []
