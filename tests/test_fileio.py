"""Atomic writes: complete files only, default permissions, nothing left behind on failure."""

import os
import stat

import pytest

from largead.fileio import atomic_directory, atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def test_writes_with_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "sub" / "a.txt", "hello")
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's owner-only 0o600


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_bytes(tmp_path / "b.bin", b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin"]


def test_temporary_name_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "fig.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp.name.startswith(".fig.png.")
        tmp.write_bytes(b"x")
    assert (tmp_path / "fig.png").read_bytes() == b"x"


def test_json(tmp_path):
    path = atomic_write_json(tmp_path / "r.json", {"miou": 41.5, "classes": [1, 2]})
    assert path.read_text() == '{\n  "miou": 41.5,\n  "classes": [\n    1,\n    2\n  ]\n}\n'


def test_atomic_directory_keeps_old_on_error(tmp_path):
    final = tmp_path / "export"
    with atomic_directory(final) as d:
        (d / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), atomic_directory(final) as d:
        (d / "a.txt").write_text("2")
        raise RuntimeError("boom")
    assert (final / "a.txt").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["export"]
