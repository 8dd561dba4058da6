"""Suite-wide test settings (kept minimal).

Tests run single-threaded unless LARGEAD_TEST_THREADS says otherwise: under ``pytest -n 2`` on a 2-core CI machine (or
any busy machine) two OpenMP threads per worker oversubscribe the cores and small sparse ops become 10-50x slower
(measured: MinkUNet-14 on 80 voxels 0.07 s with 1 thread, 0.1-1.3 s with 2 on a loaded host). torch's own thread pool
is set directly; the environment variables reach libraries loaded later that bring their own OpenMP/BLAS runtime
(MinkowskiEngine links the system libgomp and OpenBLAS).
"""

from __future__ import annotations

import os


def pytest_configure(config) -> None:
    threads = os.environ.get("LARGEAD_TEST_THREADS", "1")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    import torch

    torch.set_num_threads(int(threads))
