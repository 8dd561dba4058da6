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


def pytest_configure(config) -> None:
    threads = os.environ.get("LARGEAD_TEST_THREADS", "1")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    import torch

    torch.set_num_threads(int(threads))


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
