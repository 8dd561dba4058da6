"""Atomic writes: complete files only, default permissions, nothing left behind on failure, no silent replacement
between concurrent writers (real processes), fsync when durable, stale temporaries of killed processes removed."""

import errno
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from largead import fileio
from largead.fileio import (
    atomic_directory,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_stale_temporaries,
    commit_directory,
    rename_noreplace,
    temporary_owner,
)

FORK = multiprocessing.get_context("fork")


@pytest.fixture(params=["renameat2", "fallback"])
def primitive(request, monkeypatch):
    """Run a test with Linux's renameat2 and with the portable fallback (os.link / mkdir reservation)."""
    if request.param == "renameat2":
        if fileio._renameat2_fn is None:
            pytest.skip("renameat2 is Linux-only; the fallback is tested by the other parameter")
    else:
        monkeypatch.setattr(fileio, "_renameat2_fn", None)
    return request.param


def test_writes_with_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "sub" / "a.txt", "hello")
        with atomic_directory(tmp_path / "folder") as d:
            (d / "x").write_text("x")
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's owner-only 0o600
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755  # not mkdtemp's 0o700


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_bytes(tmp_path / "b.bin", b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin"]


def test_temporary_name_keeps_the_suffix_and_names_its_owner(tmp_path):
    with atomic_path(tmp_path / "fig.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp.name.startswith(".fig.png.tmp-")
        assert temporary_owner(tmp.name) == (fileio._HOST, os.getpid())
        tmp.write_bytes(b"x")
    assert (tmp_path / "fig.png").read_bytes() == b"x"
    with atomic_directory(tmp_path / "encoder") as d:
        assert temporary_owner(d.name) == (fileio._HOST, os.getpid())
    for name in ("fig.png", "encoder", ".hidden", ".x.tmp-zz-12-abc", "notes.tmp-12"):
        assert temporary_owner(name) is None
    assert temporary_owner(".encoder.tmp-4242") is None  # trainer.atomic_directory's old name: only on request
    assert temporary_owner(".encoder.tmp-4242", legacy=True) == (fileio._HOST, 4242)


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


# --------------------------------------------------------------------------------------------- no silent replacement
def test_rename_noreplace_file_and_folder(tmp_path, primitive):
    (tmp_path / "src").write_text("new")
    (tmp_path / "dst").write_text("old")
    with pytest.raises(FileExistsError, match="dst"):
        rename_noreplace(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_text() == "old" and (tmp_path / "src").read_text() == "new"
    rename_noreplace(tmp_path / "src", tmp_path / "free")
    assert (tmp_path / "free").read_text() == "new" and not (tmp_path / "src").exists()

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("a")
    (tmp_path / "b").mkdir()  # an existing *empty* folder: os.rename would silently replace it
    with pytest.raises(FileExistsError, match="b"):
        rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert os.listdir(tmp_path / "b") == [] and (tmp_path / "a" / "f").read_text() == "a"
    rename_noreplace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c" / "f").read_text() == "a"
    assert sorted(os.listdir(tmp_path)) == ["b", "c", "dst", "free"]


def test_rename_noreplace_without_hard_links(tmp_path, monkeypatch):
    """The last fallback (no renameat2, no hard links, e.g. some FUSE mounts) reserves the name with O_EXCL."""
    monkeypatch.setattr(fileio, "_renameat2_fn", None)

    def no_link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    (tmp_path / "src").write_text("new")
    (tmp_path / "dst").write_text("old")
    with pytest.raises(FileExistsError):
        rename_noreplace(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_text() == "old"
    rename_noreplace(tmp_path / "src", tmp_path / "free")
    assert (tmp_path / "free").read_text() == "new" and not (tmp_path / "src").exists()


def _race(kind, target, k, barrier, results, fallback):
    """One writer process: write its own content, wait until every writer is ready to commit, then commit."""
    if fallback:
        fileio._renameat2_fn = None
    original = fileio.rename_noreplace

    def gated(src, dst):
        barrier.wait(timeout=30)  # every writer has passed the existence check on entry and finished writing
        return original(src, dst)

    fileio.rename_noreplace = gated
    try:
        if kind == "folder":
            with atomic_directory(target, overwrite=False) as tmp:
                (tmp / "writer").write_text(str(k))
        else:
            atomic_write_text(target, str(k), overwrite=False)
        results.put((k, "ok"))
    except FileExistsError as err:
        results.put((k, f"FileExistsError: {err}"))
    except BaseException as err:  # pragma: no cover - reported to the test
        results.put((k, f"{type(err).__name__}: {err}"))


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_concurrent_writers_exactly_one_succeeds(tmp_path, kind, primitive):
    target = tmp_path / "out"
    n = 4
    barrier, results = FORK.Barrier(n), FORK.Queue()
    procs = [FORK.Process(target=_race, args=(kind, target, k, barrier, results, primitive == "fallback"))
             for k in range(n)]
    for p in procs:
        p.start()
    outcome = dict(results.get(timeout=60) for _ in range(n))
    for p in procs:
        p.join(30)
    winners = [k for k, r in outcome.items() if r == "ok"]
    assert len(winners) == 1, outcome
    assert all(r.startswith("FileExistsError") and "already exists" in r and str(target) in r
               for k, r in outcome.items() if k != winners[0]), outcome
    content = (target / "writer").read_text() if kind == "folder" else target.read_text()
    assert content == str(winners[0])  # the winner's content, not replaced by a later writer
    assert os.listdir(tmp_path) == ["out"]  # the losers' temporaries are gone


def test_directory_replacement(tmp_path, primitive):
    final = tmp_path / "ckpt"
    with atomic_directory(final) as d:
        (d / "old").write_text("1")
    with atomic_directory(final) as d:
        (d / "new").write_text("2")
    assert os.listdir(final) == ["new"] and os.listdir(tmp_path) == ["ckpt"]
    with pytest.raises(RuntimeError), atomic_directory(final) as d:
        (d / "broken").write_text("3")
        raise RuntimeError("writer failed")
    assert os.listdir(final) == ["new"] and os.listdir(tmp_path) == ["ckpt"]
    with pytest.raises(FileExistsError):  # checked on entry, before any work
        with atomic_directory(final, overwrite=False):
            raise AssertionError("the block must not run")
    # commit_directory: for writers that fill a folder themselves (several processes -> one checkpoint)
    mine = fileio.temporary_path(final)
    assert mine.parent == tmp_path and temporary_owner(mine.name) == (fileio._HOST, os.getpid())
    mine.mkdir()
    (mine / "w").write_text("4")
    assert clean_stale_temporaries(tmp_path) == []  # ours, in use
    commit_directory(mine, final)
    assert os.listdir(final) == ["w"] and os.listdir(tmp_path) == ["ckpt"]
    other = fileio.temporary_path(final)
    other.mkdir()
    with pytest.raises(FileExistsError):
        commit_directory(other, final, overwrite=False)
    assert os.listdir(final) == ["w"] and other.is_dir()  # left for the caller to remove


# --------------------------------------------------------------------------------------------------------- durability
def _record_fsyncs(monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return synced


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names fsync-ed descriptors through Linux's /proc")
def test_durable_writes_fsync_file_before_rename_and_folder_after(tmp_path, monkeypatch):
    synced = _record_fsyncs(monkeypatch)
    atomic_write_text(tmp_path / "fast.txt", "x")
    assert synced == []  # the default for small files: no fsync
    with atomic_path(tmp_path / "slow.txt", durable=True) as tmp:
        tmp.write_text("y")
    assert synced == [str(tmp), str(tmp_path)]  # the temporary (before its rename), then the folder
    synced.clear()
    with atomic_directory(tmp_path / "ckpt") as d:  # durable by default
        (d / "sub").mkdir()
        (d / "sub" / "model.safetensors").write_bytes(b"w")
        (d / "optimizer.bin").write_bytes(b"o")
    assert sorted(synced) == sorted([str(d / "sub" / "model.safetensors"), str(d / "sub"), str(d / "optimizer.bin"),
                                     str(d), str(tmp_path)])
    assert synced[-1] == str(tmp_path) and synced.index(str(d)) == len(synced) - 2
    synced.clear()
    with atomic_directory(tmp_path / "scratch", durable=False) as d:
        (d / "x").write_text("x")
    assert synced == []


# ------------------------------------------------------------------------------------------------ stale temporaries
_WRITER = textwrap.dedent("""
    import sys, time
    from largead.fileio import atomic_directory, atomic_path
    with atomic_directory(sys.argv[1] + "/encoder") as d, atomic_path(sys.argv[1] + "/cache.npz") as f:
        (d / "model.safetensors").write_bytes(b"x" * 1000)
        f.write_bytes(b"partial")
        print(d.name, f.name, flush=True)
        time.sleep(60)
""")


def _start_writer(folder):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    names = proc.stdout.readline().split()
    assert len(names) == 2, "writer did not start"
    return proc, names


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    dead_dir, live_dir = tmp_path / "dead", tmp_path / "live"
    dead_dir.mkdir()
    live_dir.mkdir()
    killed, dead_names = _start_writer(dead_dir)
    alive, live_names = _start_writer(live_dir)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        (dead_dir / "encoder").mkdir()  # a finished folder beside the temporaries: kept
        (dead_dir / ".encoder.tmp-ffffffff-1-abc").mkdir()  # another host's temporary: its pid means nothing here
        (dead_dir / "notes.txt").write_text("kept")
        legacy = dead_dir / f".encoder.tmp-{killed.pid}"  # the name trainer.atomic_directory used to give
        legacy.mkdir()
        lookalike = dead_dir / f".bashrc.old-{killed.pid}"  # a user's file that happens to match the old pattern
        lookalike.write_text("kept")
        assert sorted(os.listdir(dead_dir)) == sorted([*dead_names, "encoder", ".encoder.tmp-ffffffff-1-abc",
                                                      "notes.txt", legacy.name, lookalike.name])
        removed = clean_stale_temporaries(dead_dir)
        assert sorted(p.name for p in removed) == sorted(dead_names)
        assert [p.name for p in clean_stale_temporaries(dead_dir, legacy=True)] == [legacy.name]  # folders only
        assert sorted(os.listdir(dead_dir)) == sorted([".encoder.tmp-ffffffff-1-abc", "encoder", "notes.txt",
                                                       lookalike.name])
        # a live writer's temporaries are kept, also when searched recursively from above
        assert clean_stale_temporaries(tmp_path, recursive=True) == []
        assert sorted(os.listdir(live_dir)) == sorted(live_names)
    finally:
        alive.kill()
        alive.wait(10)
    nested = tmp_path / "live"
    assert clean_stale_temporaries(tmp_path) == []  # not recursive: nested ones untouched
    assert sorted(p.name for p in clean_stale_temporaries(tmp_path, recursive=True)) == sorted(live_names)
    assert os.listdir(nested) == []
    assert clean_stale_temporaries(tmp_path / "missing") == []


def test_a_killed_unreaped_writer_counts_as_dead(tmp_path):
    proc, names = _start_writer(tmp_path)
    proc.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while fileio._pid_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # the kill is asynchronous; the process stays a zombie until wait()
    try:
        assert sorted(p.name for p in clean_stale_temporaries(tmp_path)) == sorted(names)
    finally:
        proc.wait(10)


def test_all_owners_for_the_folder_s_only_writer(tmp_path):
    """A caller that holds the folder's lock may remove every temporary, also those of other hosts and of live
    processes (e.g. a run restarted in a new container, whose PIDs mean nothing here) -- but never its own."""
    proc, names = _start_writer(tmp_path)
    try:
        foreign = tmp_path / ".encoder.tmp-ffffffff-1-abc"
        foreign.mkdir()
        with atomic_path(tmp_path / "mine.txt") as mine:
            mine.write_text("in progress")
            assert clean_stale_temporaries(tmp_path) == []
            removed = clean_stale_temporaries(tmp_path, all_owners=True)
            assert sorted(p.name for p in removed) == sorted([*names, foreign.name])
            assert os.listdir(tmp_path) == [mine.name]
        assert os.listdir(tmp_path) == ["mine.txt"]
    finally:
        proc.kill()
        proc.wait(10)


def test_host_token_includes_the_pid_namespace(monkeypatch):
    """Two containers with one host name but separate PID namespaces must not read each other's PIDs."""
    real_stat = os.stat
    base = fileio._host_token()

    def other_namespace(path, *args, **kwargs):
        if str(path) == "/proc/self/ns/pid":
            return os.stat_result((0, 12345, 0, 0, 0, 0, 0, 0, 0, 0))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", other_namespace)
    assert fileio._host_token() != base and len(base) == 8
