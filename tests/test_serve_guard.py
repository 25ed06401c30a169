"""ddpm serve refuses what a page on another site can make a browser send: state-changing requests
from another origin (403) and JSON or upload bodies of the types a "simple" request carries (415),
before any job or upload exists; the server's own page and scripts keep working."""

import asyncio
import io
import threading

import numpy as np
import pytest
from PIL import Image

from serve_helpers import error_of, need_server_packages, parse_sse, train_runs

need_server_packages()
from starlette.testclient import TestClient  # noqa: E402

from ddpm.serve import LOCAL_NAMES  # noqa: E402
from ddpm.serve.app import build_app  # noqa: E402
from ddpm.serve.catalog import Catalog  # noqa: E402

EVIL = "http://evil.example.com"
SIMPLE = {"content-type": "text/plain"}  # what a cross-site form or no-cors fetch may send


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture()
def served(runs):
    """(client, app, calls): ``calls`` records every job submitted and upload decoded."""
    app = build_app(Catalog(runs, device="cpu", log=lambda m: None), frame_interval=0.0, max_images=8,
                    allowed_hosts=LOCAL_NAMES)
    calls = []
    jobs, catalog = app.state.jobs, app.state.catalog
    submit, add_upload = jobs.submit, catalog.add_upload
    jobs.submit = lambda *a, **kw: calls.append("job") or submit(*a, **kw)
    catalog.add_upload = lambda *a, **kw: calls.append("upload") or add_upload(*a, **kw)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, app, calls


def png_bytes():
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# every state-changing route, as a cross-site page would send it: a simple body, or none
ROUTES = [
    ("POST", "/api/runs/plain/generate", b'{"n": 1}'),
    ("POST", "/api/runs/cc/inpaint", b'{"box": [0, 4, 8, 8], "n": 1}'),
    ("POST", "/api/runs/plain/images", png_bytes()),
    ("DELETE", "/api/jobs/0123456789abcdef", b""),
    ("PUT", "/api/runs", b"{}"),  # no such route: refused before routing all the same
]
FOREIGN = [
    {"origin": EVIL},
    {"origin": "null"},  # a sandboxed frame or a file:// page
    {"origin": "http://127.0.0.1:9999"},  # another server on this machine is another origin
    {"origin": "https://127.0.0.1"},
    {"sec-fetch-site": "cross-site"},  # a browser that sent no Origin
    {"sec-fetch-site": "same-site"},  # e.g. localhost:3000 calling 127.0.0.1
]


@pytest.mark.parametrize("method, path, body", ROUTES)
@pytest.mark.parametrize("headers", FOREIGN)
def test_cross_site_state_changes_are_refused(served, method, path, body, headers):
    client, app, calls = served
    response = client.request(method, path, content=body or None, headers={**SIMPLE, **headers})
    message = error_of(response, 403)
    assert message.startswith(f"cross-site request refused: {method} {path} ")
    assert message.endswith("use the page ddpm serve printed")
    assert "default-src 'self'" in response.headers["content-security-policy"]  # a refusal has them too
    assert calls == [] and app.state.jobs.status() == {"runs": {}, "finished": []}


def test_refusal_messages(served):
    client, _, _ = served
    response = client.post("/api/runs/plain/generate", content=b"{}", headers={**SIMPLE, "origin": EVIL})
    assert error_of(response, 403) == (
        "cross-site request refused: POST /api/runs/plain/generate comes from 'http://evil.example.com', not from this "
        "server's page (http://127.0.0.1); use the page ddpm serve printed")
    response = client.delete("/api/jobs/abc", headers={"sec-fetch-site": "cross-site"})
    assert error_of(response, 403) == (
        "cross-site request refused: DELETE /api/jobs/abc was sent by a page on another site (Sec-Fetch-Site: "
        "cross-site); use the page ddpm serve printed")
    response = client.get("/api/info", headers={"host": "evil.example.com"})
    assert error_of(response, 403) == "host 'evil.example.com' is not served; open the address ddpm serve printed"
    # reading is not refused: without CORS headers the other page cannot see the answer
    assert client.get("/api/info", headers={"origin": EVIL}).status_code == 200
    assert "access-control-allow-origin" not in client.get("/api/info", headers={"origin": EVIL}).headers


def test_a_cross_site_delete_leaves_the_job_running(served):
    client, app, _ = served
    started = threading.Event()

    def busy(job):
        started.set()
        while True:
            job.check()
            threading.Event().wait(0.01)

    job = app.state.jobs.submit("plain", busy, loop=asyncio.new_event_loop())
    assert started.wait(10)
    assert client.delete(f"/api/jobs/{job.id}", headers={"origin": EVIL}).status_code == 403
    assert app.state.jobs.status()["runs"] == {"plain": {"running": job.id, "waiting": []}}
    same = client.delete(f"/api/jobs/{job.id}", headers={"origin": "http://127.0.0.1"})
    assert same.status_code == 200 and same.json() == {"cancelled": job.id}


@pytest.mark.parametrize("headers", [
    {"origin": "http://127.0.0.1"},  # the page itself
    {"origin": "http://127.0.0.1:80"},  # the same origin, its default port written out
    {"host": "localhost:8000", "origin": "http://LOCALHOST:8000"},
    {"sec-fetch-site": "same-origin"},
    {"sec-fetch-site": "none"},
    {},  # a script or curl: not a browser, no page behind it
])
def test_same_origin_requests_work(served, headers):
    client, _, calls = served
    response = client.post("/api/runs/plain/generate", json={"n": 1, "steps": 2}, headers=headers)
    assert response.status_code == 200 and parse_sse(response.text)[-1][0] == "done"
    upload = client.post("/api/runs/plain/images", content=png_bytes(), headers={"content-type": "image/png", **headers})
    assert upload.status_code == 200 and upload.json()["image"].startswith("upload:")
    assert calls == ["job", "upload"]


def test_any_host_mode_compares_the_origin_with_the_host(runs):
    app = build_app(Catalog(runs, device="cpu", log=lambda m: None), frame_interval=0.0, allowed_hosts=None)
    with TestClient(app, base_url="http://192.168.1.20:8000") as client:
        ok = client.post("/api/runs/plain/generate", json={"n": 1, "steps": 1},
                         headers={"origin": "http://192.168.1.20:8000"})
        assert ok.status_code == 200
        refused = client.post("/api/runs/plain/generate", json={"n": 1}, headers={"origin": "http://192.168.1.21:8000"})
        assert "comes from 'http://192.168.1.21:8000', not from this server's page (http://192.168.1.20:8000)" in (
            error_of(refused, 403))


@pytest.mark.parametrize("path, body", [("/api/runs/plain/generate", b'{"n": 1}'),
                                        ("/api/runs/cc/inpaint", b'{"box": [0, 4, 8, 8], "n": 1}')])
@pytest.mark.parametrize("content_type, shown", [
    ("text/plain", "'text/plain'"),
    ("text/plain; charset=utf-8", "'text/plain'"),
    ("application/x-www-form-urlencoded", "'application/x-www-form-urlencoded'"),
    ("multipart/form-data; boundary=x", "'multipart/form-data'"),
    (None, "none"),
])
def test_json_routes_need_json(served, path, body, content_type, shown):
    client, app, calls = served
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post(path, content=body, headers=headers)
    assert error_of(response, 415) == f"the request body must be sent with Content-Type application/json; got {shown}"
    assert calls == [] and app.state.jobs.status() == {"runs": {}, "finished": []}
    charset = client.post(path, content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert charset.status_code == 200 and calls == ["job"]


@pytest.mark.parametrize("content_type, shown", [
    ("text/plain", "'text/plain'"),
    ("multipart/form-data; boundary=x", "'multipart/form-data'"),
    ("application/x-www-form-urlencoded", "'application/x-www-form-urlencoded'"),
    ("application/json", "'application/json'"),
    (None, "none"),
])
def test_uploads_need_an_image_type(served, content_type, shown):
    client, _, calls = served
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post("/api/runs/plain/images", content=png_bytes(), headers=headers)
    assert error_of(response, 415) == (
        "the upload must be sent with Content-Type one of image/png, image/jpeg, image/webp, image/bmp, image/gif, "
        f"application/octet-stream; got {shown}")
    assert calls == []
    for accepted in ("image/png", "IMAGE/PNG", "application/octet-stream"):
        assert client.post("/api/runs/plain/images", content=png_bytes(),
                           headers={"content-type": accepted}).status_code == 200


def test_a_host_header_with_user_info_cannot_pose_as_the_origin(runs):
    # "127.0.0.1:8000@evil.example.com" would parse as host evil.example.com, matching an evil Origin
    app = build_app(Catalog(runs, device="cpu", log=lambda m: None), frame_interval=0.0, allowed_hosts=None)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        refused = client.post("/api/runs/plain/generate", json={"n": 1},
                              headers={"host": "127.0.0.1:8000@evil.example.com", "origin": "http://evil.example.com"})
        assert "is not a host name or address with a port" in error_of(refused, 403)
        assert client.get("/api/info", headers={"host": "[::1]:8000"}).status_code == 200
