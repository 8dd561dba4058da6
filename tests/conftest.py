"""Suite-wide test settings and shared session fixtures.

``official_samples`` / ``official_roots``: a small sample of every supported dataset in its official on-disk layout
(:func:`largead.data.export.write_official_samples`), written once per session (per xdist worker).

Tests run single-threaded unless LARGEAD_TEST_THREADS says otherwise: under ``pytest -n 2`` on a 2-core CI machine (or
any busy machine) two OpenMP threads per worker oversubscribe the cores and small sparse ops become 10-50x slower
(measured: MinkUNet-14 on 80 voxels 0.07 s with 1 thread, 0.1-1.3 s with 2 on a loaded host). torch's own thread pool
is set directly; the environment variables reach libraries loaded later that bring their own OpenMP/BLAS runtime
(MinkowskiEngine links the system libgomp and OpenBLAS).
"""

from __future__ import annotations

import os

import pytest
from script_modules import load_script


def pytest_configure(config) -> None:
    threads = os.environ.get("LARGEAD_TEST_THREADS", "1")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    import torch

    torch.set_num_threads(int(threads))


@pytest.fixture
def read_only_checkpoints(monkeypatch):
    """``make(run_dir)``: new checkpoints under ``run_dir/checkpoints`` cannot be written, the way a read-only mount
    refuses them (chmod 0o555; as root, which writes through permissions, ``Path.mkdir`` of a ``.tmp-checkpoint-*``
    folder raises EROFS). The folder's mode is restored at teardown."""
    import errno
    from pathlib import Path

    made: list[Path] = []

    def make(run_dir) -> None:
        folder = Path(run_dir) / "checkpoints"
        made.append(folder)
        if os.geteuid() != 0:
            os.chmod(folder, 0o555)
            return
        real_mkdir = Path.mkdir

        def read_only(self, *args, **kwargs):
            if self.name.startswith(".tmp-checkpoint-"):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", read_only)

    yield make
    for folder in made:
        os.chmod(folder, 0o755)


@pytest.fixture
def full_disk_on_optimizer(monkeypatch):
    """``install()``: from then on, ``torch.save`` of an ``optimizer.bin`` writes half the file and raises ENOSPC (the
    disk fills up in the middle of a checkpoint); returns the real ``torch.save`` (``monkeypatch`` restores it at
    teardown, or set it back earlier)."""
    import errno
    import io
    from pathlib import Path

    import torch

    def install():
        real = torch.save

        def full_disk(obj, f, *args, **kwargs):
            if str(f).endswith("optimizer.bin"):
                buf = io.BytesIO()
                real(obj, buf, *args, **kwargs)
                Path(f).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
            return real(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", full_disk)
        return real

    return install


def damage_file(path, how: str) -> None:
    """Damage a checkpoint file: ``truncated`` (half), ``zeroed`` (same size), ``removed``, or ``flipped`` (one bit of
    silent rot, same size)."""
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "zeroed":
        path.write_bytes(bytes(path.stat().st_size))
    elif how == "removed":
        path.unlink()
    elif how == "flipped":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))
    else:
        raise ValueError(f"unknown damage {how!r}")


@pytest.fixture
def damage():
    """:func:`damage_file`, for tests in any folder."""
    return damage_file


# ------------------------------------------------------------------------------------------------------------------
# Official-layout samples of every dataset (written once per session / xdist worker; never modify them in a test:
# copy what you need to break). See largead.data.export.samples and docs/datasets.md.

@pytest.fixture(scope="session")
def official_samples(tmp_path_factory):
    """``{key: largead.data.export.OfficialSample}`` for every key of ``OFFICIAL_SAMPLES``: open one with
    ``get_dataset(s.dataset, s.root, split, **s.options)``; ``s.splits`` gives the frames per split, ``s.frames`` the
    synthetic frames written (expected values)."""
    from largead.data.export import write_official_samples

    return write_official_samples(tmp_path_factory.mktemp("official"))


@pytest.fixture(scope="session")
def official_roots(official_samples):
    """``{key: root}`` of :func:`official_samples` (keys: the registry names, plus ``nuscenes_mini`` and
    ``daps3d_daps2``; ``nuscenes_c`` also needs ``nuscenes_root=official_roots["nuscenes"]``)."""
    return {k: s.root for k, s in official_samples.items()}


# ------------------------------------------------------------------------------------------------------------------
# Superpixel maps for the official-layout samples that have cameras (nuScenes, SemanticKITTI with cameras on, Waymo
# with its two camera sizes), written once per session / xdist worker. Never modify them in a test.

SUPERPIXEL_KINDS = ("slic", "sam", "seem", "xdecoder", "openseed")


@pytest.fixture(scope="session")
def official_superpixels(official_samples, tmp_path_factory):
    """``{key: superpixel root}`` for ``nuscenes``, ``semantickitti`` and ``waymo``: every camera image of their
    official samples (every split) has a map in ``superpixels_<kind>/`` for each kind of :data:`SUPERPIXEL_KINDS`:
    SLIC written by ``scripts/generate_superpixels.py`` (with its ``_manifest.json``), SAM / SEEM / X-Decoder /
    OpenSeeD in each official generator's layout and numbering (:mod:`largead.superpixels.export`). Pass a root as a
    config's ``data.N.superpixels.root``."""
    from largead.superpixels.export import SAMPLE_DATASETS, sample_splits, write_superpixel_samples

    out = tmp_path_factory.mktemp("superpixels")
    roots = write_superpixel_samples(official_samples, out)
    script = load_script("generate_superpixels")
    for key in SAMPLE_DATASETS:
        s = official_samples[key]
        for split in sample_splits(s.splits):
            argv = ["--source", "slic", "--dataset", s.dataset, "--root", str(s.root), "--split", split,
                    "--out", str(roots[key]), "--dataset-option", "cameras=true"]
            argv += [f"--dataset-option={k}={v}" for k, v in s.options.items() if k != "cameras"]
            rc = script.main(argv)
            assert rc == 0, f"generate_superpixels.py {' '.join(argv)} exited {rc}"
    return roots


@pytest.fixture(scope="session")
def dry_run_overrides(official_roots, official_superpixels):
    """``overrides(config) -> [key=value, ...]``: what a dry run of pretraining config ``config`` (a name or path) on
    the official-layout samples changes, and nothing else: every ``data.N.root`` and ``data.N.superpixels.root``, the
    batch size (``train.batch_size``, default 1) and ``teacher.random_init=true``."""
    from largead.training.pretrain import load_pretrain_config

    def overrides(config: str, batch_size: int = 1) -> list[str]:
        cfg = load_pretrain_config(config)
        out = []
        for i, d in enumerate(cfg.data):
            out += [f"data.{i}.root={official_roots[d.name]}",
                    f"data.{i}.superpixels.root={official_superpixels[d.name]}"]
        return [*out, f"train.batch_size={batch_size}", "teacher.random_init=true"]

    return overrides


@pytest.fixture(scope="session")
def nuscenes_scenes(official_samples, tmp_path_factory):
    """A LiDAR-only nuScenes v1.0-trainval root (lidarseg add-on, no cameras) with enough scenes for every SLidR label
    fraction: 1 % keeps every 100th training *scene* (:mod:`largead.data.splits`), so it holds the first 100 scenes of
    the devkit's official train split (in that order, which is the scene-table order the rule walks) and the first
    2 of its val split, one keyframe each (every 4th point of the official sample's frames: small and quick).

    Returns ``{"root", "nuscenes_c", "train_scenes", "val_scenes"}``; ``nuscenes_c`` is its Robo3D copy (all 8
    corruptions x 3 severities of the val keyframes, :func:`largead.data.export.write_nuscenes_c`)."""
    import dataclasses

    from nuscenes.utils.splits import create_splits_scenes

    from largead.data.export import write_nuscenes, write_nuscenes_c
    from largead.data.synthetic import export_lut

    official = create_splits_scenes()
    train, val = official["train"][:100], official["val"][:2]
    source = [f for f in official_samples["nuscenes"].frames if f.labels is not None]
    frames = []
    for s, name in enumerate([*train, *val]):
        f = source[s % len(source)]
        frames.append(dataclasses.replace(
            f, points=f.points[::4], labels=f.labels[::4],
            instances=None if f.instances is None else f.instances[::4], extra={"ring": f.extra["ring"][::4]},
            sequence=name, index=0, token="", timestamp=1.6e9 + 100.0 * s, cameras=[]))
    root = tmp_path_factory.mktemp("nuscenes-scenes")
    write_nuscenes(frames, root / "nuscenes", version="v1.0-trainval", inverse_lut=export_lut("nuscenes"))
    write_nuscenes_c(root / "nuscenes", root / "nuscenes_c")
    return {"root": root / "nuscenes", "nuscenes_c": root / "nuscenes_c", "train_scenes": train, "val_scenes": val}
