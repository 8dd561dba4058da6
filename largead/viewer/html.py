"""Render a :class:`~largead.viewer.scene.ViewData` into one self-contained HTML page.

The page needs no server and no network: it opens from ``file://`` in any browser with ES modules and import maps
(Chromium 89+, Firefox 108+, Safari 16.4+).

- **JavaScript.** The vendored three.js (``assets/three/``, npm ``three@0.187.0``, MIT) and the viewer's own module
  (``assets/viewer.js``) are inlined. three.js is made of ES modules that import each other, so the page carries an
  import map whose entries are ``data:`` URLs holding each module's source (base64): ``three/core``, ``three`` and
  ``three/addons/controls/OrbitControls.js``. A module loaded from a ``data:`` URL cannot resolve a relative
  specifier, so the two ``from './three.core.js'`` of ``three.module.js`` are rewritten to ``from 'three/core'``
  (checked: exactly two, nothing else changed). The vendored files are checked against their recorded sha256.
- **Data.** The metadata is a ``<script type="application/json">`` block (``<``, ``>`` and ``&`` written as JSON
  ``\\u`` escapes, so no string can close the element); each array is a ``<script type="application/octet-stream">``
  block holding base64 little-endian bytes, with its dtype and shape in ``data-`` attributes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html as _html
import json
import os
import re
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import numpy as np

from largead.viewer.scene import ViewData

THREE_VERSION = "0.187.0"
VENDORED_SHA256 = {
    "three/three.core.js": "613e370f76638fdef83926642bf256dc9615684922de1ce1f63a8583e5d78578",
    "three/three.module.js": "104f56145899722094556490d787aae0617cc2fc3382f31df02d724ea1aee341",
    "three/OrbitControls.js": "e7fca2fe9e7670a828af9b28084669a5909445b7f36f1f26cee9bf8f2961c32c",
    "three/LICENSE": "8b378ebe60e2fe500158cb0ac71cb5e8b7d92953c2abcc63a0eb90499653b5bc",
}
"""sha256 of the vendored files as unpacked from ``npm pack three@0.187.0`` (see ``assets/three/README.md``)."""

CORE_IMPORT = "from './three.core.js'"
ARRAY_DTYPES = ("float32", "int8", "uint8", "int16", "uint16", "int32", "uint32")


def asset_text(name: str) -> str:
    """Text of ``largead/viewer/assets/<name>`` (works from a source checkout and from an installed wheel)."""
    return resources.files("largead.viewer").joinpath("assets", *name.split("/")).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def vendored_modules() -> dict[str, str]:
    """``{import specifier: module source}`` of the vendored three.js, checked against :data:`VENDORED_SHA256`."""
    texts = {}
    for name, digest in VENDORED_SHA256.items():
        text = asset_text(name)
        got = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if got != digest:
            raise RuntimeError(f"largead/viewer/assets/{name} has sha256 {got}, expected {digest} (three@"
                               f"{THREE_VERSION} as vendored); reinstall largead or restore the file")
        texts[name] = text
    module = texts["three/three.module.js"]
    if module.count(CORE_IMPORT) != 2:
        raise RuntimeError(f"three.module.js has {module.count(CORE_IMPORT)} imports {CORE_IMPORT!r}, expected 2")
    return {
        "three/core": texts["three/three.core.js"],
        "three": module.replace(CORE_IMPORT, "from 'three/core'"),
        "three/addons/controls/OrbitControls.js": texts["three/OrbitControls.js"],
    }


def _data_url(source: str) -> str:
    return "data:text/javascript;base64," + base64.b64encode(source.encode("utf-8")).decode("ascii")


def import_map() -> str:
    """The page's import map (JSON) with every vendored module as a ``data:`` URL."""
    return json.dumps({"imports": {k: _data_url(v) for k, v in vendored_modules().items()}}, indent=1)


def script_json(obj: object) -> str:
    """``obj`` as JSON safe inside a ``<script>`` element: ``<``, ``>``, ``&`` escaped as ``\\u003c`` etc."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _check_inline_script(text: str, what: str) -> str:
    if "</script" in text.lower() or "<!--" in text:
        raise RuntimeError(f"{what} contains '</script' or '<!--' and cannot be inlined")
    return text


def encode_array(name: str, array: np.ndarray) -> str:
    """One ``<script type="application/octet-stream">`` element holding ``array`` as base64 little-endian bytes."""
    arr = np.asarray(array)
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    if dtype.name not in ARRAY_DTYPES:
        raise TypeError(f"array {name!r} has dtype {arr.dtype}; the page reads {', '.join(ARRAY_DTYPES)}")
    if not name.replace("_", "").isalnum():
        raise ValueError(f"array name {name!r} must be letters, digits and underscores")
    data = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<")).tobytes()
    shape = ",".join(str(s) for s in arr.shape)
    return (f'<script type="application/octet-stream" id="largead-array-{name}" data-dtype="{dtype.name}" '
            f'data-shape="{shape}">{base64.b64encode(data).decode("ascii")}</script>')


def render_html(view: ViewData) -> str:
    """The whole page as a string."""
    template = asset_text("template.html")
    parts = {
        "{{TITLE}}": _html.escape(str(view.meta.get("title", "largead view"))),
        "{{CSS}}": asset_text("viewer.css"),
        "{{IMPORTMAP}}": import_map(),
        "{{META}}": script_json(view.meta),
        "{{ARRAYS}}": "\n".join(encode_array(k, v) for k, v in view.arrays.items()),
        "{{APP}}": _check_inline_script(asset_text("viewer.js"), "assets/viewer.js"),
        "{{THREE_VERSION}}": THREE_VERSION,
    }
    missing = [k for k in parts if k not in template]
    if missing:
        raise RuntimeError(f"assets/template.html lacks the placeholders {missing}")
    # one pass over the template, so that no inserted value is ever searched for placeholders
    return re.sub(r"\{\{[A-Z_]+\}\}", lambda m: parts[m.group(0)], template)


class _PageParser(HTMLParser):
    """Collects the text of the page's ``<script>`` elements with their attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._current: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self._current, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._current is not None:
            self.scripts.append((self._current, "".join(self._text)))
            self._current = None


def read_page(page: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, arrays)`` embedded in a page written by :func:`render_html` (for inspection and tests)."""
    parser = _PageParser()
    parser.feed(Path(page).read_text(encoding="utf-8"))
    meta = None
    arrays: dict[str, np.ndarray] = {}
    for attrs, text in parser.scripts:
        if attrs.get("id") == "largead-meta":
            meta = json.loads(text)
        elif (attrs.get("id") or "").startswith("largead-array-"):
            shape = tuple(int(v) for v in (attrs.get("data-shape") or "").split(",") if v)
            dtype = np.dtype(attrs["data-dtype"]).newbyteorder("<")
            data = np.frombuffer(base64.b64decode(text), dtype=dtype)
            arrays[attrs["id"][len("largead-array-"):]] = data.reshape(shape)
    if meta is None:
        raise ValueError(f"{page}: no largead-meta block; not a page written by largead view")
    return meta, arrays


__all__ = ["THREE_VERSION", "VENDORED_SHA256", "asset_text", "encode_array", "import_map", "read_page", "render_html",
           "script_json", "vendored_modules"]
