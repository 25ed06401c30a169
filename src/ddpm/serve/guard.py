"""Who may use ``ddpm serve``'s API: the checks every request passes before it reaches a route.

- The Host header: bound locally, the server answers only localhost, 127.0.0.1 and ::1, so a page
  that rebinds its DNS name to 127.0.0.1 cannot read the API (403).
- Cross-site requests: a page on any other origin can still *send* a "simple" request (a form
  post, or ``fetch`` with ``mode: "no-cors"`` and a text/plain body) to 127.0.0.1; the browser
  hides the answer, but the request has already started a job. So every state-changing request
  (POST, PUT, PATCH, DELETE, on any path) must come from this server's own origin: its
  ``Origin`` header, or without one its ``Sec-Fetch-Site``, must say so (403 otherwise). Clients
  that send neither (curl, scripts) are not browsers, and a page cannot make a browser omit both.
- Content types (:func:`require_type`): bodies that a simple request can carry (text/plain,
  form encodings, none) are refused with 415, so a JSON or upload route never reads one.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import DDPMError

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
HOST_HEADER = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
"""A Host header as browsers send it: a name or an IP address (IPv6 in brackets) and a port, nothing
else (no user info such as ``127.0.0.1:8000@evil``, which a URL parser would read as host ``evil``)."""
SAME_SITE = {"same-origin", "none"}  # "none": typed in the address bar or a bookmark, not a page
DEFAULT_PORTS = {"http": 80, "https": 443}
# the page and everything it loads come from this server: no CDN, nothing from elsewhere
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                                 b"frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/gif", "application/octet-stream")
"""What an upload may be sent as: the folder loader's formats, or bytes of an unknown type (the
page sends a file's own type, or application/octet-stream when the browser knows none)."""


class UnsupportedType(DDPMError):
    """A body sent with a content type its route does not read (HTTP 415)."""


def origin_key(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an origin such as ``http://127.0.0.1:8000``, the default port filled
    in, so that ``http://localhost`` equals ``http://localhost:80``; None if it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


def media_type(request: Request) -> str:
    """The request's content type without its parameters (``; charset=...``), lower case; "" if none."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def require_type(request: Request, accepted: tuple[str, ...], what: str) -> None:
    """Refuse (415) a body whose content type is not one of ``accepted``."""
    got = media_type(request)
    if got not in accepted:
        shown = repr(got) if got else "none"
        wanted = accepted[0] if len(accepted) == 1 else f"one of {', '.join(accepted)}"
        raise UnsupportedType(f"{what} must be sent with Content-Type {wanted}; got {shown}")


class RequestGuard:
    """ASGI middleware: answers 403 to a Host not in ``allowed`` (None: any) and to a state-changing
    request from another site, and adds the security headers to every answer."""

    def __init__(self, app, allowed: set[str] | None):
        self.app, self.allowed = app, allowed

    def refusal(self, scope) -> str | None:
        """Why the request is refused (one sentence), or None."""
        headers = {k.lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get(b"host", "")
        if host and not HOST_HEADER.match(host):
            return f"host {host!r} is not a host name or address with a port; open the address ddpm serve printed"
        if self.allowed is not None:
            name = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
            if name.lower() not in self.allowed:
                return f"host {host!r} is not served; open the address ddpm serve printed"
        if scope["method"] not in STATE_CHANGING:
            return None
        request = f"{scope['method']} {scope['path']}"
        own = f"{scope.get('scheme', 'http')}://{host}"
        origin = headers.get(b"origin")
        if origin is not None:
            if origin_key(origin) is None or origin_key(origin) != origin_key(own):
                return (f"cross-site request refused: {request} comes from {origin!r}, not from this server's page "
                        f"({own}); use the page ddpm serve printed")
            return None
        fetch_site = headers.get(b"sec-fetch-site")
        if fetch_site is not None and fetch_site.lower() not in SAME_SITE:
            return (f"cross-site request refused: {request} was sent by a page on another site (Sec-Fetch-Site: "
                    f"{fetch_site}); use the page ddpm serve printed")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        reason = self.refusal(scope)
        if reason is not None:
            return await JSONResponse({"error": reason}, 403)(scope, receive, with_headers)
        await self.app(scope, receive, with_headers)
