"""Bulk feature extraction: scan reading (bad inputs), sources, resumable .npy / parquet output, throughput.

Formats read here follow their authors: KITTI velodyne ``.bin`` is float32 x, y, z, reflectance (the KITTI
devkit's readme, "velodyne point clouds are stored ... as 4 float32 values"); nuScenes ``.pcd.bin`` is float32 x, y,
z, intensity, ring index (nuscenes-devkit ``LidarPointCloud.from_file``: ``reshape((-1, 5))``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from largead import LargeADConfig, LargeADEncoder
from largead.extract import (
    ExtractionError,
    dataset_source,
    extract_features,
    file_source,
    read_scan,
    valid_npy,
)

RNG = np.random.default_rng(0)


def scan(n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(-25, 25, (n, 2)), rng.uniform(-2, 1, (n, 1)), rng.uniform(0, 1, (n, 1))],
                          1).astype(np.float32)


@pytest.fixture(scope="module")
def encoder() -> LargeADEncoder:
    torch.manual_seed(0)
    return LargeADEncoder(LargeADConfig(backbone="minkunet14", out_channels=8)).eval()


@pytest.fixture
def scans(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    arrays = {}
    for i in range(5):
        pts = scan(400 + 50 * i, seed=i)
        pts.tofile(folder / f"{i:06d}.bin")
        arrays[f"{i:06d}"] = pts
    return folder, arrays


# ------------------------------------------------------------------------------------------------ read_scan
def _write(path, array):
    np.asarray(array, dtype=np.float32).tofile(path)
    return path


def five_columns(n: int) -> np.ndarray:
    pts = scan(n)
    return np.concatenate([pts, np.floor(RNG.uniform(0, 32, (n, 1)))], 1).astype(np.float32)


@pytest.mark.parametrize("name, make, columns, match", [
    ("empty.bin", lambda p: _write(p, np.zeros((0, 4))), None, r"empty\.bin: empty scan \(0 points\)"),
    ("odd.bin", lambda p: _write(p, five_columns(101)), None,
     r"odd\.bin: 2020 bytes is not a multiple of 16 .* --columns, e\.g\. --columns 5"),
    ("ring.bin", lambda p: _write(p, five_columns(100)), None, r"ring\.bin: looks like 5 float32 columns"),
    ("trunc.bin", lambda p: p.write_bytes(b"\0" * 18), None, r"trunc\.bin: 18 bytes is not a multiple of 16"),
    ("five.bin", lambda p: _write(p, five_columns(50)), 6, r"five\.bin: 1000 bytes is not a multiple of the 24"),
    ("nan.bin", lambda p: _write(p, np.array([[0, 0, 0, 1], [np.nan, 0, 0, 1]])), None,
     r"nan\.bin: 1 of 2 points have non-finite .* row 1"),
    ("few.npy", lambda p: np.save(p, np.zeros((5, 3), np.float32)), None, r"few\.npy: expected an \(N, >=4\)"),
    ("text.npy", lambda p: p.write_text("hello"), None, r"text\.npy: not a readable \.npy"),
    ("nokey.npz", lambda p: np.savez(p, xyz=np.zeros((3, 4))), None, r"nokey\.npz: \.npz has no 'points'"),
    ("scan.ply", lambda p: p.write_text("ply"), None, r"scan\.ply: unsupported scan format"),
    ("missing.bin", lambda p: None, None, r"missing\.bin: no such file"),
    ("cols.bin", lambda p: _write(p, scan(10)), 3, r"columns must be an integer >= 4"),
])
def test_read_scan_bad_inputs(tmp_path, name, make, columns, match):
    path = tmp_path / name
    make(path)
    with pytest.raises(ExtractionError, match=match):
        read_scan(path, columns)


def test_read_scan_formats(tmp_path):
    pts = scan(64)
    assert np.array_equal(read_scan(_write(tmp_path / "a.bin", pts)), pts)
    five = five_columns(64)  # 64 * 20 bytes is also a multiple of 16: the ring column gives it away
    assert np.array_equal(read_scan(_write(tmp_path / "b.bin", five), columns=5), five[:, :4])
    assert np.array_equal(read_scan(_write(tmp_path / "c.pcd.bin", five)), five[:, :4])  # nuScenes: 5 by default
    np.save(tmp_path / "d.npy", five.astype(np.float64))
    assert np.array_equal(read_scan(tmp_path / "d.npy"), five[:, :4])
    np.savez(tmp_path / "e.npz", points=pts)
    assert np.array_equal(read_scan(tmp_path / "e.npz"), pts)


# ------------------------------------------------------------------------------------------------ sources
def test_file_source_expands_folders_globs_and_files(scans, tmp_path):
    folder, _ = scans
    assert file_source([folder]).names == [f"{i:06d}" for i in range(5)]
    assert file_source([str(folder / "00000[13].bin")]).names == ["000001", "000003"]
    src = file_source([folder / "000004.bin", folder / "000002.bin"])
    assert src.names == ["000004", "000002"]
    other = tmp_path / "other"
    other.mkdir()
    scan(10).tofile(other / "000001.bin")
    mixed = file_source([folder / "000001.bin", other / "000001.bin"])  # equal stems: relative paths
    assert mixed.names == ["scans/000001", "other/000001"]
    for bad, match in [([tmp_path / "nope"], "nope: no such file or folder"), ([str(tmp_path / "*.xyz")],
                       r"pattern matches no scan files"), ([tmp_path], "folder holds no scan files"),
                       ([folder, folder / "000001.bin"], "000001.bin: given twice"), ([], "no scans given")]:
        with pytest.raises(ExtractionError, match=match):
            file_source(bad)


class _Reader:
    """A reader stub: index lookups only; loading a frame is an error unless allowed."""

    def __init__(self, tokens=None, sequences=None):
        self.tokens, self.sequences, self.loads = tokens, sequences, 0

    def __len__(self):
        return len(self.tokens or self.sequences)

    def sequence_of(self, i):
        return self.sequences[i]

    def __getitem__(self, i):
        self.loads += 1
        raise AssertionError("frames must not be read to name them")


def test_dataset_source_names_frames_without_reading_them():
    from largead.extract import DatasetSource

    nus = _Reader(tokens=["a1b2", "c3d4"])
    nus.lidar_token = lambda i: nus.tokens[i]
    assert DatasetSource(nus, "nuscenes", "val").names == ["a1b2", "c3d4"]
    kitti = _Reader(sequences=[("08", 0), ("08", 1), ("09", 0)])
    assert DatasetSource(kitti, "semantickitti", "val").names == ["08/000000", "08/000001", "09/000000"]
    assert DatasetSource(kitti, "semantickitti", "val", limit=2).names == ["08/000000", "08/000001"]
    odd = _Reader(sequences=[("../x", 0), ("", 3)])
    assert DatasetSource(odd, "x", "val").names == ["000000", "000003"]  # unsafe tokens fall back to the index
    assert nus.loads == kitti.loads == odd.loads == 0
    i, pts, err = DatasetSource(kitti, "semantickitti", "val")[2]
    assert pts is None and err.startswith("semantickitti val frame 2 (09/000000): frames must not be read")
    src = dataset_source("synthetic", None, "val", {"num_sequences": 1, "frames_per_sequence": 3, "beams": 8})
    seq = src._ds.sequence_of(0)[0]
    assert src.names == [f"{seq}/{i:06d}" for i in range(3)]
    assert src._ds[0].cameras == []  # LiDAR only unless options say otherwise
    i, pts, err = src[1]
    assert i == 1 and err is None and pts.shape[1] == 4 and pts.dtype == np.float32


# ------------------------------------------------------------------------------------------------ extraction
def test_extract_npy_matches_embed_and_resumes(encoder, scans, tmp_path, capsys):
    folder, arrays = scans
    out = tmp_path / "feats"
    stats = extract_features(encoder, file_source([folder]), out, precision="fp32", batch_size=2, workers=1)
    assert stats.scans == 5 and stats.skipped == 0 and stats.points == sum(len(a) for a in arrays.values())
    assert stats.scans_per_s > 0 and stats.points_per_s > 0
    assert "embedded 5 scans" in stats.summary() and "scans/s" in stats.summary()
    for name, pts in arrays.items():
        feats = np.load(out / f"{name}.npy")
        assert feats.dtype == np.float32 and feats.shape == (len(pts), 8)
        np.testing.assert_allclose(feats, encoder.embed(pts, precision="fp32").numpy(), rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.npy" for i in range(5)]  # no temporary files left
    # a rerun skips every valid file; a truncated one (and only it) is recomputed
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    data = (out / "000002.npy").read_bytes()
    (out / "000002.npy").write_bytes(data[: len(data) // 2])
    again = extract_features(encoder, file_source([folder]), out, precision="fp32", workers=0)
    assert again.scans == 1 and again.skipped == 4 and "skipped 4 already done" in again.summary()
    assert valid_npy(out / "000002.npy", 8) and not valid_npy(out / "000002.npy", 9)
    assert all(p.stat().st_mtime_ns == mtimes[p.name] for p in out.iterdir() if p.name != "000002.npy")
    forced = extract_features(encoder, file_source([folder]), out, precision="fp32", overwrite=True, workers=0)
    assert forced.scans == 5


def test_extract_stops_at_a_bad_scan_leaving_whole_files(encoder, scans, tmp_path):
    folder, _ = scans
    np.zeros((0, 4), np.float32).tofile(folder / "000002.bin")  # empty scan in the middle
    out = tmp_path / "feats"
    with pytest.raises(ExtractionError, match=r"000002\.bin: empty scan"):
        extract_features(encoder, file_source([folder]), out, workers=1, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000000.npy", "000001.npy"] and all(valid_npy(out / n, 8) for n in names)


def test_extract_max_range_gives_nan_rows(encoder, tmp_path):
    pts = scan(300)
    pts[[3, 7], 0] = [4.3e8, 250.0]
    (tmp_path / "s").mkdir()
    pts.tofile(tmp_path / "s" / "far.bin")
    with pytest.raises(ExtractionError, match=r"far\.bin: scan 0, point 3: .* beyond the voxel grid's range"):
        extract_features(encoder, file_source([tmp_path / "s"]), tmp_path / "o", workers=0, progress=False)
    stats = extract_features(encoder, file_source([tmp_path / "s"]), tmp_path / "o", workers=0, max_range=100.0,
                             progress=False, precision="fp32")
    feats = np.load(tmp_path / "o" / "far.npy")
    assert stats.dropped == 2 and "dropped 2 points" in stats.summary()
    assert np.isnan(feats[[3, 7]]).all() and np.isfinite(np.delete(feats, [3, 7], 0)).all()
    keep = np.delete(pts, [3, 7], 0)
    np.testing.assert_allclose(np.delete(feats, [3, 7], 0), encoder.embed(keep, precision="fp32").numpy(),
                               rtol=1e-5, atol=1e-5)


def test_extract_parquet_shards_open_with_datasets(encoder, scans, tmp_path):
    import datasets

    folder, arrays = scans
    out = tmp_path / "pq"
    stats = extract_features(encoder, file_source([folder]), out, fmt="parquet", shard_size=2, precision="fp32",
                             workers=0, progress=False)
    shards = sorted(out.glob("*.parquet"))
    assert [p.name for p in shards] == [f"features-0000{i}-of-00003.parquet" for i in range(3)]
    assert stats.scans == 5
    ds = datasets.load_dataset("parquet", data_files=[str(p) for p in shards], split="train",
                               cache_dir=str(tmp_path / "hf")).with_format("numpy")
    assert [str(n) for n in ds["name"]] == [f"{i:06d}" for i in range(5)]
    for row in ds:
        ref = encoder.embed(arrays[row["name"]], precision="fp32").numpy()
        assert row["num_points"] == len(ref)
        np.testing.assert_allclose(np.stack(row["features"]), ref, rtol=1e-5, atol=1e-5)
    again = extract_features(encoder, file_source([folder]), out, fmt="parquet", shard_size=2, workers=0,
                             progress=False)
    assert again.scans == 0 and again.skipped == 5


def test_extract_dataset_split(encoder, tmp_path):
    src = dataset_source("synthetic", None, "val", {"num_sequences": 1, "frames_per_sequence": 2, "beams": 8})
    stats = extract_features(encoder, src, tmp_path / "ds", workers=0, progress=False, precision="fp32")
    files = sorted(p.relative_to(tmp_path / "ds").as_posix() for p in (tmp_path / "ds").rglob("*.npy"))
    assert files == [f"{name}.npy" for name in src.names] and stats.scans == 2
    frame = src._ds[1]
    np.testing.assert_allclose(np.load(tmp_path / "ds" / f"{src.names[1]}.npy"),
                               encoder.embed(frame.points[:, :4], precision="fp32").numpy(), rtol=1e-5, atol=1e-5)


def test_extract_bad_arguments(encoder, scans, tmp_path):
    folder, _ = scans
    (tmp_path / "file").write_text("x")
    for kwargs, match in [({"fmt": "csv"}, "unknown format"), ({"batch_size": 0}, "batch_size"),
                          ({"max_range": -1.0}, "max_range")]:
        with pytest.raises(ValueError, match=match):
            extract_features(encoder, file_source([folder]), tmp_path / "o", **kwargs)
    with pytest.raises(ExtractionError, match="exists and is not a folder"):
        extract_features(encoder, file_source([folder]), tmp_path / "file")
