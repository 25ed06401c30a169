"""onnxruntime-web for the exported page: the pinned release, its files' subresource-integrity
hashes, and copying it from a local ``npm install onnxruntime-web``.

The page loads three files of the npm package's ``dist/``: the WebAssembly build's script
(``ort.wasm.min.js``, a classic script that defines ``ort``), the module that instantiates the
WebAssembly (``ort-wasm-simd-threaded.mjs``) and the WebAssembly itself. By default they come from
jsDelivr at the pinned version, each checked by the browser against the SHA-384 of the npm
package's own bytes (``integrity`` on the script tag and on the page's fetches), so a changed file
on the CDN is refused rather than run. The hashes below were computed from the package's files; a
test recomputes them from an installed copy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

from ..errors import ConfigError

VERSION = "1.31.1"
CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{VERSION}/dist/"
FILES = {
    "js": ("ort.wasm.min.js", "sha384-tNxIwEqSlcdvKtUte98AsccPbDKM958LBXB/+3BLS42TTihXHKTWgdqPqXI/lot8"),
    "mjs": ("ort-wasm-simd-threaded.mjs", "sha384-L9olMNCg9w3FaNhr+m7EAeeiUpM5zy2Nlh6APnoogtFXjsL4ZZZRXlYhSVJc1r3j"),
    "wasm": ("ort-wasm-simd-threaded.wasm", "sha384-bQJgW/bZhNOlc9KU45Zu0dyd0EFfNpkOZjfHyH/90dkZQSBBGkFTsAJaabSyYA4Z"),
}
"""kind -> (file name in dist/, its integrity string)."""
LOCAL = "runtime/"
"""Where ``--bundle-runtime`` puts the files, relative to the page."""
INSTALL = f"npm install onnxruntime-web@{VERSION}"


def integrity(data: bytes) -> str:
    """The subresource-integrity string of ``data`` (SHA-384, base64)."""
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode("ascii")


def package_dir(runtime_dir: str | Path | None) -> Path:
    """The onnxruntime-web package folder (default ./node_modules/onnxruntime-web), checked to be the
    pinned version with the files the page loads."""
    folder = Path(runtime_dir) if runtime_dir is not None else Path("node_modules") / "onnxruntime-web"
    manifest = folder / "package.json"
    if not manifest.is_file():
        raise ConfigError(f"no onnxruntime-web package at {folder}; run {INSTALL} (or give its folder with --runtime-dir)")
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(f"{manifest} cannot be read as JSON; reinstall with {INSTALL}") from None
    if meta.get("name") != "onnxruntime-web" or meta.get("version") != VERSION:
        raise ConfigError(f"{folder} holds {meta.get('name')} {meta.get('version')}, not onnxruntime-web {VERSION}, the "
                          f"release the page is made for; run {INSTALL}")
    for name, _ in FILES.values():
        if not (folder / "dist" / name).is_file():
            raise ConfigError(f"{folder / 'dist' / name} is missing; reinstall with {INSTALL}")
    return folder


def runtime_spec(bundled: bool) -> dict:
    """Where the page finds each runtime file and the integrity it must have."""
    return {"version": VERSION, "base": LOCAL if bundled else CDN,
            "files": {kind: {"name": name, "integrity": sri} for kind, (name, sri) in FILES.items()}}


def copy_runtime(folder: Path, dest: Path) -> None:
    """Copy the runtime files from package ``folder`` into ``dest``, refusing any whose bytes differ
    from the pinned release's (the page would refuse them too)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, sri in FILES.values():
        data = (folder / "dist" / name).read_bytes()
        if integrity(data) != sri:
            raise ConfigError(f"{folder / 'dist' / name} differs from onnxruntime-web {VERSION} as published; "
                              f"reinstall with {INSTALL}")
        shutil.copyfile(folder / "dist" / name, dest / name)
