"""The number of BLAS threads minigrad runs with.

The matrix products of one recurrent step are small ((B, D) @ (D, H) with B
about 8 and H about 50): a second BLAS thread costs more in synchronisation
than it gains, and made a training epoch about three times slower on a
two-core machine. ``blas_threads(n)`` limits the BLAS libraries loaded in
this process (OpenBLAS, MKL, BLIS) to ``n`` threads inside a ``with`` block
and restores them after, through ``threadpoolctl``, the standard tool for
this (a small pure-Python dependency of minigrad). It works whenever it is
called, even after numpy was imported, unlike the environment variables
``OPENBLAS_NUM_THREADS`` and friends, which are read only when numpy loads.

``models.train.train`` runs under ``blas_threads(DEFAULT_BLAS_THREADS)``
unless told otherwise (``TrainConfig.blas_threads``, ``minigrad train
--blas-threads N``; 0 leaves BLAS as it is).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from threadpoolctl import threadpool_info, threadpool_limits

__all__ = ["DEFAULT_BLAS_THREADS", "blas_thread_counts", "blas_threads"]

DEFAULT_BLAS_THREADS = 1
"""The BLAS thread count minigrad trains with by default."""


@contextlib.contextmanager
def blas_threads(n: int | None = DEFAULT_BLAS_THREADS) -> Iterator[None]:
    """Limit every loaded BLAS library to ``n`` threads inside the block.

    Args:
        n: the number of threads, >= 1; 0 or None leaves BLAS as it is.

    Raises:
        ValueError: a negative ``n``.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"the number of BLAS threads must be an int >= 0, got {n!r}")
    if not n:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def blas_thread_counts() -> dict[str, int]:
    """The thread count of each BLAS library loaded in this process (``{"openblas": 2}``)."""
    return {
        str(info["internal_api"]): int(info["num_threads"])
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    }
