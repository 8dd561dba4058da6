"""Drive a written page in headless Chromium (tests, screenshots, timings).

Uses the system's Chromium and its matching ChromeDriver (Debian: ``apt-get install -y chromium chromium-driver``)
through selenium (``pip install selenium``, in the ``test`` extra); nothing is downloaded. WebGL runs on
SwiftShader, Chromium's CPU renderer (``--use-angle=swiftshader --enable-unsafe-swiftshader``), so it works with no
GPU; frame times measured this way are CPU-rendering times, an upper bound for a machine with a GPU.

The networking flags matter where the network is closed: without them Chromium keeps trying to reach Google services
and misbehaves.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium", "chromium-browser")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver", "chromedriver")
INSTALL_HINT = ("install the browser: apt-get install -y chromium chromium-driver (Debian/Ubuntu), and "
                "pip install selenium (in largead's [test] extra)")

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--hide-scrollbars", "--force-device-scale-factor=1",
)
"""Flags that make headless Chromium render WebGL in software and stay quiet on a closed network."""


def _which(candidates: tuple[str, ...]) -> str | None:
    for c in candidates:
        path = c if os.path.isabs(c) else shutil.which(c)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def find_browser() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` paths (``LARGEAD_CHROMIUM`` / ``LARGEAD_CHROMEDRIVER`` override), or ``None``."""
    env_chromium, env_driver = os.environ.get("LARGEAD_CHROMIUM"), os.environ.get("LARGEAD_CHROMEDRIVER")
    chromium = _which((env_chromium,)) if env_chromium else _which(CHROMIUM_CANDIDATES)
    driver = _which((env_driver,)) if env_driver else _which(CHROMEDRIVER_CANDIDATES)
    return (chromium, driver) if chromium and driver else None


def missing_reason() -> str | None:
    """Why the browser cannot be driven here (``None`` if it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"selenium is not installed; {INSTALL_HINT}"
    if find_browser() is None:
        return f"chromium and/or chromedriver not found; {INSTALL_HINT}"
    return None


class Browser:
    """A headless Chromium window of ``width`` x ``height`` CSS pixels with a fresh profile (a context manager)."""

    def __init__(self, width: int = 1280, height: int = 800) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        found = find_browser()
        if found is None:
            raise RuntimeError(missing_reason() or INSTALL_HINT)
        chromium, chromedriver = found
        self._profile = tempfile.mkdtemp(prefix="largead-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        self.driver.set_script_timeout(120)

    def open(self, page: str | os.PathLike, timeout: float = 60.0) -> float:
        """Load ``page`` (a file) and wait until its viewer is ready; returns the seconds it took. Raises
        ``RuntimeError`` with the page's errors if it fails to start."""
        url = Path(page).resolve().as_uri()
        t0 = time.perf_counter()
        self.driver.get(url)
        while time.perf_counter() - t0 < timeout:
            state = self.driver.execute_script(
                "const v = window.largeadViewer; return v ? [v.ready, v.errors] : [false, []]")
            if state[1]:
                raise RuntimeError(f"{page}: the viewer reported errors: {state[1]}")
            if state[0]:
                return time.perf_counter() - t0
            time.sleep(0.05)
        raise RuntimeError(f"{page}: the viewer was not ready after {timeout:.0f} s; console: {self.console()}")

    def js(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``return`` a value) in the page."""
        return self.driver.execute_script(script, *args)

    def js_async(self, expression: str, *args: Any) -> Any:
        """Evaluate ``expression`` (may be a promise) in the page and return its resolved value."""
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"Promise.resolve((() => {expression})()).then(done, (e) => done({{__error__: String(e)}}));", *args)

    def console(self) -> list[dict[str, Any]]:
        """Browser console entries since the last call."""
        return list(self.driver.get_log("browser"))

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["CHROMIUM_FLAGS", "INSTALL_HINT", "Browser", "find_browser", "missing_reason"]
