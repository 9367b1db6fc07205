"""Learning-rate sweeps as in Chung et al. (2014), and ``minigrad sweep``.

Chung et al. chose the learning rate of each model among 10 candidates drawn
log-uniformly, by validation NLL, for three cells of about 20k parameters
(GRU 46 units, LSTM 36, tanh-RNN 100 on 88-key inputs). A sweep here runs
one **trial** per (cell, learning rate, seed): a ``models.train.train`` run
in its own run directory ``OUT/<cell>-lr<lr>-s<seed>/`` (``metrics.json``,
``model.npz``, ``checkpoint.npz``, ``curves.svg``), and then writes
``OUT/results.json``, ``OUT/results.csv`` (one row per cell) and
``OUT/trials.csv`` (one row per trial).

**Learning rates.** ``learning_rates`` draws ``n`` candidates log-uniformly
over ``[lo, hi]`` with ``numpy.random.default_rng(sweep_seed)``, sorts them and
rounds them to 4 significant digits (the paper drew at random too; the draws
are the same for the same sweep seed, on every machine). With ``grid=True``
they are ``n`` log-spaced values from ``lo`` to ``hi`` instead. Every cell
gets the same candidates, and every trial of a cell the same hidden size.

**Choice.** For each cell the learning rate with the lowest validation NLL
(mean over the seeds) is chosen, among the learning rates whose every seed
finished; the train and test NLL are only reported, never used to choose.
Each NLL is that of the run's best epoch (early stopping on the validation
set), in nats per time step.

**Executors.** Trials are submitted to a ``concurrent.futures.Executor``:

* ``local`` or ``local:N``: a ``ProcessPoolExecutor`` of N worker processes
  (default 2), started with the ``spawn`` method;
* ``dask://HOST:PORT``: ``distributed.Client("tcp://HOST:PORT").get_executor()``,
  a Dask cluster (the optional extra ``pip install "minigrad[dask]"``). The
  workers must have minigrad installed and see the dataset file and the
  output directory at the same absolute paths (a shared file system).

BLAS is limited to one thread per worker: ``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are set to 1 in this process's
environment while the sweep runs (spawned workers inherit it before numpy
loads) and again by the worker initializer (``client.run`` on Dask workers).

**Failures.** A trial that raises (a diverging learning rate raises
``NonFiniteError``) is reported as failed and the sweep goes on. When a
worker process dies (killed, or crashed), the local pool breaks and every
trial it was running fails with ``BrokenProcessPool``: the pool is recreated,
and those trials are run again one at a time, so that the trial that kills
its worker when running alone is the one reported as failed and the others
complete (each resumes from its last epoch's checkpoint). On Dask, the
scheduler retries a task whose worker died and finally raises
``KilledWorker``, which is reported the same way.

**Re-running** the same command skips every trial whose run directory holds a
finished ``metrics.json`` with the same options, and resumes a trial that
left a checkpoint but no finished metrics (``train --resume``, which gives
exactly the numbers of an uninterrupted run); failed trials are tried again.

"""

from __future__ import annotations

from models.sweep.config import (
    BLAS_ENV,
    PAPER_HIDDEN,
    RESULTS_CSV,
    RESULTS_JSON,
    TRIALS_CSV,
    SweepConfig,
    Trial,
    TrialFailed,
    learning_rates,
    parse_cells,
    parse_executor,
    parse_hidden,
    parse_lr_range,
    trial_name,
)
from models.sweep.report import SweepResult, format_table
from models.sweep.run import run_sweep
from models.sweep.trial import limit_blas_threads, run_trial

__all__ = [
    "BLAS_ENV",
    "PAPER_HIDDEN",
    "RESULTS_CSV",
    "RESULTS_JSON",
    "TRIALS_CSV",
    "SweepConfig",
    "SweepResult",
    "Trial",
    "TrialFailed",
    "format_table",
    "learning_rates",
    "limit_blas_threads",
    "parse_cells",
    "parse_executor",
    "parse_hidden",
    "parse_lr_range",
    "run_sweep",
    "run_trial",
    "trial_name",
]
