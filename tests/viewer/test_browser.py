"""The written page in a real browser: headless Debian Chromium driven by selenium (no browser download).

``largead view`` writes a page for a scan in a SemanticKITTI tree with an encoder (a random MinkUNet-14 here; set
``LARGEAD_VIEWER_TEST_MODEL`` to a folder or zoo name to drive it with another, e.g. the demo's encoder). The test then
checks, in the page: no JavaScript error; a canvas that is not blank and shows exactly the legend's colours (the page
writes palette bytes unchanged); every colour mode against the colours computed here from the page's own arrays;
a click through the page's pick function (and one through a real mouse click) turning every point to the similarity
ramp with the clicked point at its top, the similarities equal to numpy's cosine of the embedded features, and the
point's ring in the camera image where the library projects it; the frame slider, moved with the keyboard.

With ``CI=true`` a missing browser fails the test; elsewhere it skips, saying what to install.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from largead import cli
from largead.data.geometry import project_points
from largead.viewer.browser import Browser, missing_reason
from largead.viewer.html import read_page
from largead.viewer.prepare import cosine_to, source_from_scan

BACKGROUND = (20, 22, 26)  # #14161a, the renderer's clear colour
PICK_MARKER = (255, 42, 42)  # #ff2a2a


def require_browser() -> None:
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the viewer's browser test cannot run: {reason}")
    pytest.skip(reason)


def test_a_missing_browser_skips_here_and_fails_under_ci(monkeypatch):
    monkeypatch.setenv("LARGEAD_CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium chromium-driver"):
        require_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and the viewer's browser test cannot run"):
        require_browser()


@pytest.fixture(scope="module")
def written(sk_scan, encoder_dir, tmp_path_factory):
    model = os.environ.get("LARGEAD_VIEWER_TEST_MODEL") or str(encoder_dir)
    out = tmp_path_factory.mktemp("view") / "view.html"
    rc = cli.main(["view", str(sk_scan), "--frames", "3", "--model", model, "--superpixels", "slic",
                   "--out", str(out)])
    assert rc == 0 and out.is_file()
    meta, arrays = read_page(out)
    return out, meta, arrays


def expected_colors(mode: dict, meta: dict, arrays: dict, n: int) -> np.ndarray:
    """The colours the page must show in ``mode``, computed from its arrays (JavaScript's Math.round: floor(x+.5))."""
    ignore = np.array(meta["ignore_color"], np.uint8)
    if mode["kind"] == "ramp":
        values = arrays["positions"][:, 2] if mode["field"] == "z" else arrays[mode["field"]]
        lo, hi = mode["range"]
        idx = np.clip(np.floor((values.astype(np.float64) - lo) / (hi - lo) * 255 + 0.5), 0, 255).astype(int)
        return np.array(meta["ramps"][mode["ramp"]], np.uint8)[idx]
    if mode["kind"] == "classes":
        table = np.vstack([np.array(mode["palette"], np.uint8), ignore])
        ids = arrays[mode["array"]].astype(int)
        return table[np.where((ids >= 0) & (ids < len(mode["palette"])), ids, len(mode["palette"]))]
    if mode["kind"] == "ids":
        table = np.vstack([arrays[mode["palette_array"]], ignore])
        ids = arrays[mode["array"]].astype(int)
        return table[np.where(ids >= 0, ids, len(table) - 1)]
    if mode["kind"] == "rgb":
        return arrays[mode["array"]]
    return np.tile(ignore, (n, 1))  # similarity before any click


def screenshot(browser: Browser) -> np.ndarray:
    from PIL import Image
    from selenium.webdriver.common.by import By

    canvas = browser.driver.find_element(By.CSS_SELECTOR, "#canvas-host canvas")
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB"))


def test_viewer_in_chromium(written, sk_scan):
    require_browser()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page, meta, arrays = written
    n = meta["num_points"]
    modes = {m["key"]: m for m in meta["modes"]}
    assert list(modes) == ["height", "intensity", "gt", "pca", "similarity", "superpoints", "segments"]
    with Browser(1280, 800) as b:
        b.open(page)

        def colors() -> np.ndarray:
            return np.array(b.js("return largeadViewer.getColors()"), np.uint8).reshape(-1, 3)

        def call(expr: str):
            out = b.js_async(expr)
            assert not (isinstance(out, dict) and "__error__" in out), out
            return out

        # ---- started cleanly, with what the file holds
        assert b.js("return largeadViewer.errors") == []
        assert b.js("return [largeadViewer.numPoints, largeadViewer.numFrames, largeadViewer.modes()]") == \
            [n, 3, list(modes)]

        # ---- the canvas shows the points in exactly the legend's colours
        call("largeadViewer.setMode('gt')")
        shot = screenshot(b)
        assert shot.shape[0] > 300 and shot.shape[1] > 1000
        not_background = (np.abs(shot.astype(int) - BACKGROUND).sum(2) > 0).mean()
        assert 0.005 < not_background < 0.5, not_background
        gt_colors = {tuple(c) for c in np.array(modes["gt"]["palette"])[np.unique(arrays["gt"][:2000][
            arrays["gt"][:2000] >= 0])]}
        exact = np.isin(shot.reshape(-1, 3) @ [65536, 256, 1], [r * 65536 + g * 256 + bl for r, g, bl in gt_colors])
        assert exact.sum() > 2000, exact.sum()  # ~2000 points of 2x2 pixels, partly overlapping
        assert len({tuple(c) for c in shot.reshape(-1, 3)[exact]}) >= 0.8 * len(gt_colors)

        # ---- every colour mode, point by point
        for key, mode in modes.items():
            call(f"largeadViewer.setMode('{key}')")
            assert b.js("return largeadViewer.getMode()") == key
            got, want = colors(), expected_colors(mode, meta, arrays, n)
            same = (got == want).all(1)
            if mode["kind"] == "ramp":  # float32 vs float64 at a rounding boundary: at most a neighbouring entry
                assert same.mean() > 0.999, (key, same.mean())
            else:
                assert same.all(), (key, np.flatnonzero(~same)[:5])
        before = colors()

        # ---- pick a point seen by the camera: similarity ramp, clicked point at its top, ring in the image
        f0 = meta["frames"][0]
        a, bnd = f0["cameras"][0]["proj"]
        q = int(arrays["proj_index"][a + (bnd - a) // 2])
        call(f"largeadViewer.pickIndex({q})")
        assert b.js("return [largeadViewer.getMode(), largeadViewer.getPick()]") == ["similarity", q]
        got = colors()
        viridis = np.array(meta["ramps"]["viridis"], np.uint8)
        assert (got[q] == viridis[255]).all()
        assert np.isin(got @ [65536, 256, 1], viridis.astype(int) @ [65536, 256, 1]).all()
        assert not np.array_equal(got, before)
        sims = cosine_to(arrays["features"], q)
        sample = np.linspace(0, n - 1, 200).astype(int)
        page_sims = np.array(b.js("return arguments[0].map((i) => largeadViewer.getSimilarity(i))", sample.tolist()))
        np.testing.assert_allclose(page_sims, sims[sample], atol=1e-5)
        lo, hi = b.js("return largeadViewer.similarityRange()")
        assert hi == pytest.approx(1.0, abs=1e-6)
        assert lo == pytest.approx(np.sort(sims)[int(0.02 * (n - 1))], abs=1e-5)
        want = viridis[np.where(sims >= hi, 255, np.clip(np.floor((sims - lo) / (hi - lo) * 255 + 0.5), 0, 255)
                                .astype(int))]
        assert (got == want).all(1).mean() > 0.999
        frame0 = source_from_scan(sk_scan).frames[0]
        cam = frame0.cameras[0]
        _, uv = project_points(frame0.points, cam.lidar_to_camera, cam.intrinsics, cam.height, cam.width)
        hits = b.js(f"return largeadViewer.imageHits({q})")
        assert len(hits) == 1 and hits[0]["name"] == "image_2"
        assert [hits[0]["u"], hits[0]["v"]] == pytest.approx(uv[q].tolist(), abs=1e-3)
        x, y = b.js(f"return largeadViewer.screenPosition({q})")
        shot = screenshot(b)
        patch = shot[max(0, int(y) - 2):int(y) + 3, max(0, int(x) - 2):int(x) + 3].reshape(-1, 3)
        assert (patch == PICK_MARKER).all(1).any()  # the red marker sits on the clicked point

        # ---- a real mouse click on another point picks what is drawn there
        call("largeadViewer.clearPick()")
        r = int(np.argmin(np.abs(arrays["positions"][:2000, 0] - 8.0) + np.abs(arrays["positions"][:2000, 1])))
        x, y = b.js(f"return largeadViewer.screenPosition({r})")
        canvas = b.driver.find_element(By.CSS_SELECTOR, "#canvas-host canvas")
        w, h = canvas.size["width"], canvas.size["height"]
        ActionChains(b.driver).move_to_element_with_offset(canvas, int(x - w / 2), int(y - h / 2)).click().perform()
        picked = b.js("return largeadViewer.getPick()")
        assert picked >= 0 and b.js("return largeadViewer.getMode()") == "similarity"
        px, py = b.js(f"return largeadViewer.screenPosition({picked})")
        assert np.hypot(px - int(x), py - int(y)) <= 6.0

        # ---- the frame slider, moved from the keyboard
        slider = b.driver.find_element(By.ID, "frame")
        slider.send_keys(Keys.ARROW_RIGHT)
        assert b.js("return largeadViewer.getFrame()") == 1
        assert b.js("return largeadViewer.visibleRange()") == [2000, 4000]
        assert "08/000001" in b.driver.find_element(By.ID, "frame-label").text
        slider.send_keys(Keys.ARROW_RIGHT)
        assert b.js("return largeadViewer.getFrame()") == 2
        call("largeadViewer.setFrame(0)")
        assert "image_2" in b.driver.find_element(By.CSS_SELECTOR, "#strip .cam-name").text
        b.js("largeadViewer.setShowAll(true)")
        assert b.js("return largeadViewer.visibleRange()") == [0, n]

        # ---- and nothing went wrong on the way
        assert b.js("return largeadViewer.errors") == []
        severe = [e for e in b.console() if e["level"] == "SEVERE"]
        assert severe == []
        if os.environ.get("LARGEAD_VIEWER_SCREENSHOT"):
            b.driver.save_screenshot(os.environ["LARGEAD_VIEWER_SCREENSHOT"])


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_float_features_are_decoded_in_the_page(dtype, tmp_path):
    """The page decodes float16 bit patterns (and float32) itself: its similarities equal numpy's on the stored
    values."""
    require_browser()
    from largead.viewer import view

    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-20, 20, (800, 2)), rng.uniform(-2, 2, 800), rng.uniform(0, 1, 800)].astype(np.float32)
    feats = rng.normal(size=(800, 12)).astype(np.float32) * [1e-3, 1, 10, 100, 0.5, 2, 3, 4, 5, 6, 7, 8]
    page = view(pts, tmp_path / "f.html", features=feats, feature_dtype=dtype, query=17)
    _, arrays = read_page(page)
    stored = arrays["features"].view(np.float16) if dtype == "float16" else arrays["features"]
    expected = cosine_to(stored.astype(np.float64), 17)
    with Browser(800, 600) as b:
        b.open(page)
        assert b.js("return [largeadViewer.getMode(), largeadViewer.getPick()]") == ["similarity", 17]
        got = np.array(b.js("return Array.from({length: 800}, (_, i) => largeadViewer.getSimilarity(i))"))
        assert b.js("return largeadViewer.errors") == []
    np.testing.assert_allclose(got, expected, atol=2e-6)
