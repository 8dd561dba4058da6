"""`largead view` as a user runs it (subprocess): outputs, --serve, and the one-line errors of the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from largead.viewer.html import read_page
from largead.viewer.serve import make_server


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "largead.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=timeout)


def test_view_writes_a_page(sk_scan, encoder_dir, tmp_path):
    out = tmp_path / "v.html"
    proc = run("view", str(sk_scan), "--model", str(encoder_dir), "--out", str(out), "--max-image-width", "64",
               "--feature-dtype", "float32", "--query", "3", "--title", "my scan")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out} (") and proc.stderr == ""
    meta, arrays = read_page(out)
    assert meta["title"] == "my scan" and meta["initial"]["query"] == 3
    assert arrays["features"].dtype.name == "float32" and meta["frames"][0]["cameras"][0]["size"][0] == 64


def test_view_with_features_from_largead_embed(sk_scan, encoder_dir, tmp_path):
    feats = tmp_path / "f.npy"
    assert run("embed", str(sk_scan), "--model", str(encoder_dir), "--out", str(feats)).returncode == 0
    out = tmp_path / "f.html"
    proc = run("view", str(sk_scan), "--features", str(feats), "--out", str(out), "--feature-dtype", "float32")
    assert proc.returncode == 0, proc.stderr
    meta, arrays = read_page(out)
    np.testing.assert_array_equal(arrays["features"], np.load(feats))
    assert "similarity" in [m["key"] for m in meta["modes"]]


def test_view_of_a_dataset_frame_with_options(tmp_path):
    out = tmp_path / "d.html"
    proc = run("view", "--dataset", "synthetic", "--split", "val", "--index", "1", "--frames", "2",
               "--option", "num_sequences=1", "--option", "frames_per_sequence=2", "--option", "beams=4",
               "--option", "num_cameras=1", "--option", "image_size=[24, 40]", "--option", "azimuth_resolution=4.0",
               "--no-segments", "--no-cameras", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    meta, _ = read_page(out)
    assert len(meta["frames"]) == 1 and "sequence ends after 1 of the 2" in meta["notes"][0]
    assert meta["frames"][0]["cameras"] == [] and "segments" not in [m["key"] for m in meta["modes"]]


@pytest.mark.parametrize("args, message", [
    ((), "give a scan file, or --dataset"),
    (("x.bin", "--dataset", "synthetic"), "not both"),
    (("missing.bin",), "missing.bin: no such file"),
    (("--dataset", "synthetic", "--option", "novalue"), "--option 'novalue' must look like key=value"),
    (("--dataset", "synthetic", "--frames", "0"), "--frames must be >= 1"),
    (("--dataset", "nope"), "unknown dataset 'nope'"),
    (("--dataset", "synthetic", "--model", "/no/such/folder"), "/no/such/folder"),
    (("--dataset", "synthetic", "--features", "/no/f.npy"), "/no/f.npy"),
])
def test_errors_are_one_line(args, message, tmp_path):
    proc = run("view", *args, "--out", str(tmp_path / "e.html"))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("largead: error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "e.html").exists()


def test_serve_answers_the_page_and_nothing_else(tmp_path):
    page = tmp_path / "my view.html"
    page.write_text("<html>hello</html>")
    (tmp_path / "secret.txt").write_text("no")
    server, url = make_server(page)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/my%20view.html")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for path in (url, url.rsplit("/", 1)[0] + "/"):
            with urllib.request.urlopen(path, timeout=10) as r:
                assert r.status == 200 and r.read() == b"<html>hello</html>"
                assert r.headers["Content-Type"].startswith("text/html")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url.rsplit("/", 1)[0] + "/secret.txt", timeout=10)
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(FileNotFoundError, match="no such page"):
        make_server(tmp_path / "none.html")


def test_view_serve_prints_the_url(sk_scan, tmp_path):
    out = tmp_path / "s.html"
    proc = subprocess.Popen([sys.executable, "-m", "largead.cli", "view", str(sk_scan), "--out", str(out),
                             "--serve", "--no-cameras"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
                                 "HF_HUB_OFFLINE": "1"})  # the URL must come through a pipe, unbuffered or not
    watchdog = threading.Timer(120, proc.kill)  # an unflushed URL would block readline() forever
    watchdog.start()
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert lines[0].startswith("wrote ")
        url = lines[1].split(" at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    assert r.read() == out.read_bytes()
                break
            except urllib.error.URLError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(timeout=30)
