"""The `largead` command, run as a user would (subprocess), including its error paths."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from largead import LargeADConfig, LargeADEncoder


def run(*args, env=None, check_rc=None):
    proc = subprocess.run([sys.executable, "-m", "largead.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=300)
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    LargeADEncoder(LargeADConfig()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scan_bin(tmp_path_factory):
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-30, 30, (3000, 2)), rng.uniform(-2, 2, (3000, 1)),
                          rng.uniform(0, 1, (3000, 1))], 1).astype(np.float32)
    path = tmp_path_factory.mktemp("scan") / "000000.bin"
    pts.tofile(path)
    return path, pts


@pytest.mark.parametrize("cmd", [[], ["list"], ["info"], ["datasets"], ["embed"], ["convert"], ["demo"]])
def test_help(cmd):
    proc = run(*cmd, "--help", check_rc=0)
    assert "usage: largead" in proc.stdout


def test_no_command_is_a_usage_error():
    proc = run(check_rc=2)
    assert "required" in proc.stderr


def test_list_and_filter():
    proc = run("list", "--filter", "*seem-nkw*", check_rc=0)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("largead/minkunet34-seem-nkw ")


def test_info_shows_paper_number():
    proc = run("info", "minkunet34-seem-nkw", check_rc=0)
    assert "47.84" in proc.stdout and "Table 11" in proc.stdout and "vit-b" in proc.stdout


def test_info_unknown_name_is_one_line_with_suggestion():
    proc = run("info", "minkunet34-seam-nkw", check_rc=1)
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("largead: error:") and "largead/minkunet34-seem-nkw" in err[0]


def test_datasets_lists_readers():
    proc = run("datasets", check_rc=0)
    for name in ("nuscenes", "semantickitti", "synthetic"):
        assert name in proc.stdout


def test_embed_writes_features_and_png(model_dir, scan_bin, tmp_path):
    scan, pts = scan_bin
    out, png = tmp_path / "feats.npy", tmp_path / "feats.png"
    run("embed", str(scan), "--model", str(model_dir), "--out", str(out), "--png", str(png), check_rc=0)
    feats = np.load(out)
    assert feats.shape == (len(pts), 64) and np.isfinite(feats).all()
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-4)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same features as the Python API
    enc = LargeADEncoder.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        ref = enc.embed(pts).numpy()
    np.testing.assert_allclose(feats, ref, atol=1e-5)


@pytest.mark.parametrize("preset", [None, "512"])
def test_embed_keeps_more_compiled_product_kernels_unless_told(model_dir, scan_bin, tmp_path, monkeypatch, preset):
    """`largead embed` raises oneDNN's kernel cache (1024) for long runs over varied scans; a value the user set
    stands."""
    if preset is None:
        monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", preset)
    from largead.cli import main

    assert main(["embed", str(scan_bin[0]), "--model", str(model_dir), "--out", str(tmp_path / "f.npy")]) in (0, None)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == (preset or "4096")


def test_embed_missing_scan(model_dir, tmp_path):
    proc = run("embed", str(tmp_path / "nope.bin"), "--model", str(model_dir), "--out", str(tmp_path / "f.npy"),
               check_rc=1)
    assert "nope.bin: no such file" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_embed_truncated_scan(model_dir, tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00" * 18)  # not a multiple of 16 bytes
    proc = run("embed", str(bad), "--model", str(model_dir), "--out", str(tmp_path / "f.npy"))
    assert proc.returncode == 1 and "bad.bin" in proc.stderr


def test_embed_uncached_model_offline(scan_bin, tmp_path):
    scan, _ = scan_bin
    proc = run("embed", str(scan), "--model", "largead/minkunet34-seem-nkw", "--out", str(tmp_path / "f.npy"),
               env={"HF_HUB_CACHE": str(tmp_path / "empty-cache")}, check_rc=1)
    assert "largead/minkunet34-seem-nkw" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_convert_official_checkpoint(model_dir, tmp_path):
    enc = LargeADEncoder.from_pretrained(str(model_dir))
    ckpt = tmp_path / "model.pt"
    torch.save({"model_points": {f"module.{k}": v for k, v in enc.state_dict().items()}, "epoch": 50}, ckpt)
    out = tmp_path / "converted"
    run("convert", str(ckpt), str(out), check_rc=0)
    back = LargeADEncoder.from_pretrained(str(out))
    for k, v in enc.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_convert_missing_file(tmp_path):
    proc = run("convert", str(tmp_path / "none.pt"), str(tmp_path / "out"), check_rc=1)
    assert "none.pt: no such file" in proc.stderr


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")) if folder.exists() else None


@pytest.mark.parametrize("case", ["list no match", "info unknown", "info typo with org", "convert missing",
                                  "convert text file", "convert into a non-empty folder", "demo output is a file",
                                  "unknown flag", "bad subcommand"])
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, model_dir):
    out = tmp_path / "out"
    text_pt = tmp_path / "text.pt"
    text_pt.write_text("hello")
    rc, argv = 1, []
    if case == "list no match":
        argv, needle = ["list", "--filter", "*nothing*"], "no model matches"
    elif case == "info unknown":
        argv, needle = ["info", "minkunet34-seam-nkw"], "Closest known names"
    elif case == "info typo with org":
        argv, needle = ["info", "largead/minkunet34-seem-nwk"], "largead/minkunet34-seem-nkw"
    elif case == "convert missing":
        argv, needle = ["convert", str(tmp_path / "none.pt"), str(out)], "none.pt: no such file"
    elif case == "convert text file":
        argv, needle = ["convert", str(text_pt), str(out)], "text.pt: not a PyTorch checkpoint"
    elif case == "convert into a non-empty folder":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        enc = LargeADEncoder.from_pretrained(str(model_dir))
        torch.save({"model_points": enc.state_dict()}, tmp_path / "ok.pt")
        argv, needle = ["convert", str(tmp_path / "ok.pt"), str(out)], "pass --overwrite"
    elif case == "demo output is a file":
        out.write_text("a file")
        argv, needle = ["demo", "--quick", "--output-dir", str(out)], "out"
    elif case == "unknown flag":
        rc, argv, needle = 2, ["list", "--nope"], "unrecognized arguments: --nope"
    else:
        rc, argv, needle = 2, ["nope"], "invalid choice"
    before = _snapshot(out)
    proc = run(*argv, check_rc=rc)
    err = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    if rc == 1:
        assert len(err) == 1 and err[0].startswith("largead: error:"), proc.stderr
    assert _snapshot(out) == before  # nothing written or changed


def test_list_into_a_closed_pipe_exits_quietly():
    proc = subprocess.run(f"{sys.executable} -m largead.cli list | head -1", shell=True, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.count("\n") == 1 and proc.stderr == ""


# ------------------------------------------------------------------------------------------------ embed: bad input
def _scan_file(folder, name, pts):
    path = folder / name
    np.asarray(pts, dtype=np.float32).tofile(path)
    return path


def _five_columns(n):
    rng = np.random.default_rng(1)
    ring = np.floor(rng.uniform(0, 32, (n, 1)))
    pts = np.concatenate([rng.uniform(-20, 20, (n, 3)), rng.uniform(0, 1, (n, 1)), ring], 1)
    return pts.astype(np.float32)


def _far(n=200):
    pts = np.random.default_rng(2).uniform(-10, 10, (n, 4)).astype(np.float32)
    pts[17, 0] = 4.3e8
    return pts


EMBED_BAD = [
    # (id, files to create {name: array}, arguments (scans first), expected exit code, stderr pattern)
    ("empty", {"e.bin": np.zeros((0, 4))}, ["e.bin"], 1, r"e\.bin: empty scan \(0 points\)"),
    ("five-columns-ambiguous", {"f.bin": _five_columns(64)}, ["f.bin"], 1, r"f\.bin: looks like 5 float32 columns"),
    ("five-columns-size", {"g.bin": _five_columns(63)}, ["g.bin"], 1, r"g\.bin: 1260 bytes is not a multiple of 16"),
    ("wrong-columns", {"h.bin": _five_columns(64)}, ["h.bin", "--columns", "6"], 1, r"not a multiple of the 24-byte"),
    ("far-point", {"far.bin": _far()}, ["far.bin"], 1, r"far\.bin: scan 0, point 17: .* beyond the voxel grid"),
    ("non-finite", {"n.bin": np.array([[0, 0, 0, 1], [np.inf, 0, 0, 1]])}, ["n.bin"], 1, r"n\.bin: 1 of 2 points"),
    ("no-inputs", {}, [], 1, r"give scan files, folders or globs, or --dataset NAME"),
    ("dataset-without-split", {}, ["--dataset", "synthetic"], 1, r"--split SPLIT"),
    ("unknown-dataset", {}, ["--dataset", "nope", "--split", "val"], 1, r"unknown dataset 'nope'; known: .*nuscenes"),
    ("unknown-split", {}, ["--dataset", "synthetic", "--split", "test"], 1, r"no split 'test'"),
    ("root-with-scans", {"a.bin": np.zeros((4, 4))}, ["a.bin", "--root", "x"], 1, r"do not apply to scan files"),
    ("png-with-many", {"a.bin": np.ones((4, 4)), "b.bin": np.ones((4, 4))}, ["a.bin", "b.bin", "--png", "x.png"], 1,
     r"--png needs exactly one scan"),
    ("bad-precision", {"a.bin": np.ones((4, 4))}, ["a.bin", "--precision", "half"], 2, r"invalid choice: 'half'"),
    ("missing-glob", {}, ["nothing*.bin"], 1, r"nothing\*\.bin: pattern matches no scan files"),
    ("bad-norm", {"a.bin": np.ones((4, 4))}, ["a.bin", "--norm", "waymo"], 0, None),  # no statistics: ignored
]


@pytest.mark.parametrize("files, args, rc, match", [case[1:] for case in EMBED_BAD], ids=[c[0] for c in EMBED_BAD])
def test_embed_bad_input_is_one_line_and_writes_nothing(model_dir, tmp_path, files, args, rc, match):
    for name, pts in files.items():
        _scan_file(tmp_path, name, pts)
    before = set(tmp_path.iterdir())
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "largead.cli", "embed", *args, "--model", str(model_dir), "--out",
                           str(out), "--no-progress"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == rc, proc.stderr
    if match is None:
        return
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 or rc == 2, err
    assert re.search(match, err[-1]), err
    assert set(tmp_path.iterdir()) == before  # nothing written, no temporary files


def test_embed_cuda_on_a_cpu_build_is_one_line(model_dir, scan_bin, tmp_path):
    scan, _ = scan_bin
    proc = run("embed", str(scan), "--model", str(model_dir), "--out", str(tmp_path / "f.npy"), "--device", "cuda")
    if torch.cuda.is_available():
        assert proc.returncode == 0
        return
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1 and "--device cuda:" in err[0] and "use --device cpu" in err[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "f.npy").exists()


# ------------------------------------------------------------------------------------------------ embed: outputs
def test_embed_out_path_is_written_as_given(model_dir, scan_bin, tmp_path):
    scan, pts = scan_bin
    out = tmp_path / "features"  # no .npy suffix: np.save would have appended one
    proc = run("embed", str(scan), "--model", str(model_dir), "--out", str(out), "--precision", "fp32", check_rc=0)
    assert out.is_file() and not (tmp_path / "features.npy").exists()
    assert "precision fp32 -> float32" in proc.stdout
    feats = np.load(out)
    enc = LargeADEncoder.from_pretrained(str(model_dir)).eval()
    np.testing.assert_allclose(feats, enc.embed(pts, precision="fp32").numpy(), atol=1e-5)


def test_embed_several_scans_columns_and_resume(model_dir, scan_bin, tmp_path):
    scan, pts = scan_bin
    five = np.concatenate([pts, np.zeros((len(pts), 1), np.float32)], 1)
    scans = tmp_path / "scans"
    scans.mkdir()
    five.tofile(scans / "a.bin")
    five[:1000].tofile(scans / "b.bin")
    out = tmp_path / "feats"
    proc = run("embed", str(scans), "--model", str(model_dir), "--out", str(out), "--columns", "5",
               "--precision", "fp32", "--batch-size", "2", "--no-progress", check_rc=0)
    assert re.search(r"embedded 2 scans \(4000 points\) in [0-9.]+ s: [0-9.]+ scans/s, [0-9,]+ points/s", proc.stdout)
    a, b = np.load(out / "a.npy"), np.load(out / "b.npy")
    enc = LargeADEncoder.from_pretrained(str(model_dir)).eval()
    np.testing.assert_allclose(a, enc.embed(pts, precision="fp32").numpy(), atol=1e-5)
    assert b.shape == (1000, 64)
    proc = run("embed", str(scans / "*.bin"), "--model", str(model_dir), "--out", str(out), "--columns", "5",
               "--no-progress", check_rc=0)
    assert "embedded 0 scans" in proc.stdout and "skipped 2 already done" in proc.stdout


def test_embed_max_range_drops_and_counts(model_dir, tmp_path):
    far = _scan_file(tmp_path, "far.bin", _far())
    out = tmp_path / "far.npy"
    proc = run("embed", str(far), "--model", str(model_dir), "--out", str(out), "--max-range", "50", check_rc=0)
    assert "dropped 1 points farther than 50.0 m (their rows are NaN)" in proc.stdout
    feats = np.load(out)
    assert feats.shape == (200, 64) and np.isnan(feats[17]).all() and np.isfinite(np.delete(feats, 17, 0)).all()


def test_embed_dataset_split_with_progress_and_throughput(model_dir, tmp_path):
    out = tmp_path / "ds"
    proc = run("embed", "--dataset", "synthetic", "--split", "val", "--option", "num_sequences=1",
               "--option", "frames_per_sequence=2", "--option", "beams=8", "--model", str(model_dir),
               "--out", str(out), "--format", "parquet", check_rc=0)
    assert "embedded 2 scans" in proc.stdout and "scans/s" in proc.stdout and "2/2" in proc.stderr  # tqdm bar
    assert [p.name for p in out.iterdir()] == ["features-00000-of-00001.parquet"]


def test_embed_unknown_dataset_name_with_scans_lists_the_known_ones(model_dir, scan_bin, tmp_path):
    scan, _ = scan_bin
    proc = run("embed", str(scan), "--model", str(model_dir), "--out", str(tmp_path / "f.npy"), "--dataset",
               "nuscenez", check_rc=1)
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "unknown dataset 'nuscenez'; known:" in err[0] and "nuscenes" in err[0]
    assert not (tmp_path / "f.npy").exists()
