import os

import numpy as np
import pytest
from PIL import Image

from largead.fileio import CorruptFileError
from largead.superpixels.io import load_superpixels, save_superpixels, superpixel_path


def test_superpixel_path_layout(tmp_path):
    assert superpixel_path(tmp_path, "seem", "abc123") == tmp_path / "superpixels_seem" / "abc123.png"
    assert superpixel_path(tmp_path, "slic", "08/000001") == tmp_path / "superpixels_slic" / "08" / "000001.png"
    for bad in ("", "../x", "/abs"):
        with pytest.raises(ValueError):
            superpixel_path(tmp_path, "slic", bad)
    with pytest.raises(ValueError):
        superpixel_path(tmp_path, "a/b", "tok")


def test_roundtrip_8bit_matches_official_layout(tmp_path):
    ids = np.random.default_rng(0).integers(0, 256, (30, 47)).astype(np.int64)
    path = save_superpixels(tmp_path / "a" / "t.png", ids)
    with Image.open(path) as im:
        assert im.mode == "L"  # what SLidR/Seal write, byte layout shared
    back = load_superpixels(path, expected_hw=(30, 47))
    assert back.dtype == np.int32 and np.array_equal(back, ids)
    # A file written the official way (PIL uint8) reads back identically.
    Image.fromarray(ids.astype(np.uint8)).save(tmp_path / "official.png")
    assert np.array_equal(load_superpixels(tmp_path / "official.png"), ids)


def test_roundtrip_16bit_no_wraparound(tmp_path):
    ids = np.zeros((20, 25), np.int32)
    ids[:, 10:] = 256
    ids[5:, 20:] = 40000
    path = save_superpixels(tmp_path / "t.png", ids)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # 16-bit PNG, not wrapped at 255
    back = load_superpixels(path)
    assert np.array_equal(back, ids)
    assert set(np.unique(back)) == {0, 256, 40000}


def test_save_rejects_bad_ids(tmp_path):
    with pytest.raises(ValueError, match="negative|>= 0"):
        save_superpixels(tmp_path / "n.png", np.full((3, 3), -1))
    with pytest.raises(ValueError, match="16-bit"):
        save_superpixels(tmp_path / "b.png", np.full((3, 3), 70000))
    with pytest.raises(ValueError, match="integers"):
        save_superpixels(tmp_path / "f.png", np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        save_superpixels(tmp_path / "s.png", np.zeros((3, 3, 1), np.int32))
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_atomic_write_leaves_no_temp_files_and_replaces(tmp_path):
    p = tmp_path / "x.png"
    save_superpixels(p, np.ones((4, 4), np.int32))
    save_superpixels(p, np.full((4, 4), 7, np.int32))
    assert os.listdir(tmp_path) == ["x.png"]
    assert (load_superpixels(p) == 7).all()


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_superpixels(tmp_path / "missing.png")
    p = save_superpixels(tmp_path / "m.png", np.zeros((10, 12), np.int32))
    with pytest.raises(ValueError, match=r"m\.png.*10x12.*9x12"):
        load_superpixels(p, expected_hw=(9, 12))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png.*single-channel"):
        load_superpixels(tmp_path / "rgb.png")


def _blocky_map():
    """A SLIC-like map (flat blocks compress well, so a flipped byte can still inflate to wrong ids)."""
    yy, xx = np.mgrid[0:45, 0:80]
    return ((yy // 15) * 6 + (xx // 15)).astype(np.int32)


@pytest.mark.parametrize("how", ["empty", "header only", "half", "zeroed", "missing end"])
def test_truncated_or_zeroed_maps_are_named(tmp_path, how):
    ids = _blocky_map()
    path = save_superpixels(tmp_path / "tok.png", ids)
    data = path.read_bytes()
    damaged = {"empty": b"", "header only": data[:33], "half": data[: len(data) // 2], "zeroed": bytes(len(data)),
               "missing end": data[:-12]}[how]
    path.write_bytes(damaged)
    with pytest.raises(CorruptFileError, match=r"tok\.png: superpixel PNG is truncated or damaged") as info:
        load_superpixels(path, expected_hw=ids.shape)
    assert info.value.path == path and isinstance(info.value, ValueError)


def test_flipped_bytes_never_give_wrong_ids(tmp_path):
    """Pillow's decoder alone returns wrong ids for some flipped bytes (chunk CRCs are not checked on load); every
    flip must either be harmless or raise an error naming the file."""
    ids = _blocky_map()
    path = save_superpixels(tmp_path / "tok.png", ids)
    data = path.read_bytes()
    detected = 0
    for offset in range(len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x04
        path.write_bytes(bytes(damaged))
        try:
            back = load_superpixels(path, expected_hw=ids.shape)
        except ValueError as err:  # CorruptFileError, or a size mismatch when IHDR's width/height changed
            assert str(err).startswith(str(path)), err
            detected += 1
            continue
        assert np.array_equal(back, ids), offset
    assert detected >= len(data) - 8  # only the CRC-free bytes of the signature/ancillary fields may be harmless


def test_maps_are_written_durably(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    save_superpixels(tmp_path / "a.png", np.zeros((4, 4), np.int32))
    assert len(synced) == 2  # the file before its rename, the folder after
    save_superpixels(tmp_path / "b.png", np.zeros((4, 4), np.int32), durable=False)
    assert len(synced) == 2
