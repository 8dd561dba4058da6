"""The page: arrays and metadata survive the trip into HTML, nothing in the data can end a <script> element, the
import map carries the vendored three.js unchanged but for the two documented specifiers, and a tampered asset is
refused."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import numpy as np
import pytest

from largead.viewer import ViewData, html, prepare
from largead.viewer.scene import build_view


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-10, 10, (300, 3)), rng.uniform(0, 1, 300)].astype(np.float32)
    src = prepare.source_from_points(pts)
    src.frames[0].labels = rng.integers(-1, 3, 300)
    src.class_names = ("car", "</script><script>alert(1)</script>", "a & b <!-- c")
    view = build_view(src, title="</title><b>x</b>")
    view.arrays["extra_i8"] = np.array([-128, 0, 127], np.int8)
    view.arrays["extra_u32"] = np.array([[0, 2**32 - 1]], np.uint32)
    path = tmp_path_factory.mktemp("page") / "p.html"
    path.write_text(html.render_html(view), encoding="utf-8")
    return view, path


def test_round_trip_of_meta_and_arrays(page):
    view, path = page
    meta, arrays = html.read_page(path)
    assert meta == view.meta
    assert set(arrays) == set(view.arrays)
    for k, v in view.arrays.items():
        assert arrays[k].dtype == v.dtype and arrays[k].shape == v.shape
        np.testing.assert_array_equal(arrays[k], v)


def test_nothing_in_the_data_ends_a_script_element(page):
    view, path = page
    text = path.read_text(encoding="utf-8")
    assert text.count("</script>") == text.count("<script")  # every element closes once, none early
    assert "<b>x</b>" not in text and "&lt;/title&gt;&lt;b&gt;x&lt;/b&gt;" in text
    meta, _ = html.read_page(path)
    assert meta["modes"][2]["names"][1] == "</script><script>alert(1)</script>"
    assert html.script_json({"a": "<>&"}) == '{"a":"\\u003c\\u003e\\u0026"}'


def test_import_map_holds_the_vendored_modules(page):
    _, path = page
    text = path.read_text(encoding="utf-8")
    block = re.search(r'<script type="importmap">(.*?)</script>', text, re.S).group(1)
    imports = json.loads(block)["imports"]
    assert set(imports) == {"three", "three/core", "three/addons/controls/OrbitControls.js"}
    decoded = {k: base64.b64decode(v.split(",", 1)[1]).decode("utf-8") for k, v in imports.items()}
    core = html.asset_text("three/three.core.js")
    module = html.asset_text("three/three.module.js")
    assert decoded["three/core"] == core
    assert decoded["three"] == module.replace("from './three.core.js'", "from 'three/core'")
    assert decoded["three"].count("from 'three/core'") == 2 and "./three.core.js" not in decoded["three"]
    assert "from 'three'" in decoded["three/addons/controls/OrbitControls.js"]
    assert "REVISION = '187'" in core
    assert "import * as THREE from 'three'" in text  # the page's own module, inlined


def test_vendored_files_match_their_recorded_hashes():
    for name, digest in html.VENDORED_SHA256.items():
        assert hashlib.sha256(html.asset_text(name).encode("utf-8")).hexdigest() == digest
    readme = html.asset_text("three/README.md")
    for digest in html.VENDORED_SHA256.values():
        assert digest in readme
    assert html.THREE_VERSION in readme and "MIT" in html.asset_text("three/LICENSE")


def test_a_tampered_asset_is_refused(monkeypatch):
    real = html.asset_text
    monkeypatch.setattr(html, "asset_text", lambda n: real(n) + ("//x" if n.endswith("OrbitControls.js") else ""))
    html.vendored_modules.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="OrbitControls.js has sha256"):
            html.vendored_modules()
    finally:
        monkeypatch.undo()
        html.vendored_modules.cache_clear()


def test_arrays_must_have_a_page_dtype():
    with pytest.raises(TypeError, match="float64"):
        html.encode_array("x", np.zeros(3))
    with pytest.raises(ValueError, match="letters"):
        html.encode_array("a-b", np.zeros(3, np.float32))
    big_endian = np.arange(3, dtype=">i4")
    el = html.encode_array("be", big_endian)
    data = base64.b64decode(re.search(r">(.*)<", el).group(1))
    np.testing.assert_array_equal(np.frombuffer(data, "<i4"), [0, 1, 2])


def test_read_page_refuses_other_html(tmp_path):
    (tmp_path / "x.html").write_text("<html><body>hi</body></html>")
    with pytest.raises(ValueError, match="not a page written by largead view"):
        html.read_page(tmp_path / "x.html")
    assert isinstance(ViewData(meta={}, arrays={}), ViewData)
