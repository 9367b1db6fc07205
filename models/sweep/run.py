"""Running a sweep: submitting trials, recovering from dead workers, writing results."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TextIO

from models.data.dataset import one_line
from models.data.load import load_dataset
from models.generate.midi import import_extra
from models.io import ProgressStream, RunLock, atomic_write_text, read_text_capped
from models.sweep.config import (
    RESULTS_CSV,
    RESULTS_JSON,
    SWEEP_FILES,
    TRIALS_CSV,
    SweepConfig,
    Trial,
    TrialFailed,
    parse_executor,
    training_options,
)
from models.sweep.report import (
    CELL_COLUMNS,
    TRIAL_COLUMNS,
    CorruptTrial,
    ForeignTrial,
    SweepResult,
    csv_text,
    json_safe,
    read_finished,
    summarise,
)
from models.sweep.trial import blas_env, init_worker, limit_blas_threads, run_trial
from models.train.config import CHECKPOINT_FILE, TrainConfig, stored_options

# --------------------------------------------------------------------------- the sweep


class Executors:
    """Creates (and re-creates) the sweep's executor from its spec."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.kind, where = parse_executor(spec)
        self.workers = int(where) if self.kind == "local" else 0
        self.address = str(where) if self.kind == "dask" else ""
        self._client: Any = None
        self._distributed: Any = None
        if self.kind == "dask":
            self._distributed = import_extra("distributed", "dask", f"--executor {spec}")
        self.executor: Executor | None = None

    @property
    def window(self) -> int:
        """How many trials are submitted at once."""
        return self.workers if self.kind == "local" else 1 << 30

    def start(self) -> Executor:
        if self.kind == "local":
            self.executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker,
                initargs=(os.getpid(),),
            )
            return self.executor
        self.connect()
        self.executor = self._client.get_executor(pure=False)
        return self.executor

    def connect(self) -> None:
        """Connect to the Dask scheduler (once) and limit its workers' BLAS threads."""
        if self.kind != "dask" or self._client is not None:
            return
        try:
            self._client = self._distributed.Client(self.address, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ValueError(
                f"--executor {self.spec}: cannot reach the Dask scheduler at "
                f"{self.address}: {one_line(exc)}"
            ) from None
        self._client.run(limit_blas_threads)

    def stop(self, *, wait: bool = True, kill: bool = False) -> None:
        ex, self.executor = self.executor, None
        if ex is not None:
            if kill and isinstance(ex, ProcessPoolExecutor):
                # No public way before Python 3.14 to stop running workers.
                for proc in list(getattr(ex, "_processes", {}).values()):
                    with contextlib.suppress(Exception):
                        proc.terminate()
            if isinstance(ex, ProcessPoolExecutor):
                ex.shutdown(wait=wait, cancel_futures=True)
            else:  # a Dask ClientExecutor cancels its futures itself
                with contextlib.suppress(Exception):
                    ex.shutdown(wait=wait)

    def close(self, *, kill: bool = False) -> None:
        self.stop(wait=not kill, kill=kill)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


TrialRunner = Callable[[Mapping[str, Any]], dict[str, Any]]
"""Runs one trial in a worker: ``TrainConfig.to_dict()`` -> the trial's record."""


def run_sweep(
    config: SweepConfig,
    *,
    executor: str = "local",
    log: TextIO | None = None,
    trial_runner: TrialRunner = run_trial,
    overwrite: bool = False,
) -> SweepResult:
    """Run every trial of a sweep that has not finished yet, and write the results.

    The sweep folder is locked while the sweep runs, and its ``results.json``
    records the sweep's options: a sweep with other options is refused there
    unless ``overwrite``, which also trains every trial again from scratch.

    Args:
        config: the sweep.
        executor: ``local``, ``local:N`` or ``dask://HOST:PORT`` (``parse_executor``).
        log: where progress lines go (default ``sys.stderr``).
        trial_runner: the function each worker runs for one trial (default
            ``run_trial``); it must pickle by reference (a module-level
            function, or a ``functools.partial`` of one) for process and
            Dask workers. It raises ``TrialFailed`` for a failed trial.

    Returns:
        The results, also written to ``OUT/results.json``, ``OUT/results.csv``
        and ``OUT/trials.csv`` (updated as trials finish, completed at the end).

    Raises:
        ValueError: an invalid setting or executor, an unreachable Dask scheduler.
        models.data.DataError: the dataset cannot be loaded.
        models.generate.midi.MissingExtraError: ``dask://`` without ``distributed``.
        KeyboardInterrupt: Ctrl-C; the results so far are written (status
            ``"interrupted"``) and a re-run continues.
    """
    t_start = time.perf_counter()
    trials = config.trials()
    executors = Executors(executor)  # checks the spec before anything runs
    dataset = load_dataset(config.dataset)
    del dataset  # loaded once here only to fail early with a clear message
    root = Path(config.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    settings = config.to_dict()
    lock = RunLock(root, "sweep folder").acquire()
    accepted: list[bool] = []  # set once the folder is checked and the sweep may write
    try:
        listed = check_sweep_options(root / RESULTS_JSON, settings, overwrite=overwrite)
        if overwrite:
            trials = [replace(t, config=replace(t.config, overwrite=True)) for t in trials]
        return _run_locked(
            config,
            trials,
            executors,
            root,
            settings,
            executor,
            log,
            trial_runner,
            t_start,
            listed,
            lambda: accepted.append(True),
        )
    finally:
        # a refused sweep leaves the folder as it found it: no lock file of its own
        lock.release(discard=not accepted)


_TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))
"""The options of a trial's training, as a sweep records them under ``"training"``."""


def _flat_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A sweep's settings with its full training options (``"training"``) in place of
    the options given (``"train_options"``): the two name no setting alike."""
    flat = {k: v for k, v in settings.items() if k not in ("train_options", "training")}
    training = settings.get("training")
    if isinstance(training, dict):
        flat.update(training)
    else:
        flat["train_options"] = settings.get("train_options")
    return flat


def check_sweep_options(
    path: Path, settings: Mapping[str, Any], *, overwrite: bool
) -> frozenset[str]:
    """Refuse to continue a sweep folder whose ``results.json`` records other options.

    A folder without ``results.json`` holds no sweep: files there that the sweep
    would replace (``results.csv``, ``trials.csv``) are someone else's, and the
    sweep refuses the folder unless ``overwrite``.

    Returns:
        The names of the trials the folder's ``results.json`` records (this
        sweep's own trial folders); empty without one, or with ``overwrite``.

    Raises:
        ValueError: naming the first option that differs (unless ``overwrite``),
            the unreadable file, or the files a sweep would replace.
    """
    if overwrite:
        return frozenset()
    if not os.path.lexists(path):
        theirs = [name for name in SWEEP_FILES if os.path.lexists(path.parent / name)]
        if theirs:
            raise ValueError(
                f"--out {path.parent}: holds {', '.join(theirs)} but no sweep (no {path.name}); "
                "the sweep would replace them: choose another --out, or pass --overwrite"
            )
        return frozenset()
    try:
        doc = json.loads(read_text_capped(path, "results.json", 64 << 20))
        recorded = doc["sweep"]
        if not isinstance(recorded, dict):
            raise TypeError("'sweep' is not an object")
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ValueError(
            f"{path}: unreadable ({type(exc).__name__}: {one_line(exc)}); pass --overwrite "
            "to start this sweep folder again"
        ) from None
    # compared option by option on the recipe the trials train with (given or by
    # default); a sweep recorded before "training" existed gave "train_options" only,
    # and a recorded recipe lacks the options added since: both are read as
    # models.train.config.stored_options says
    mine = _flat_settings(json_safe(dict(settings)))
    training = recorded.get("training")
    if isinstance(training, dict):
        recorded = {**recorded, "training": stored_options(training)}
    else:
        given = recorded.get("train_options")
        given = stored_options(given if isinstance(given, dict) else {})
        with contextlib.suppress(ValueError):  # an option this version does not know
            recorded = {**recorded, "training": training_options(given)}
    recorded = _flat_settings(recorded)
    for key in sorted((set(mine) | set(recorded)) - {"out"}):  # a moved folder is fine
        if mine.get(key) != recorded.get(key):
            value = recorded.get(key)
            same = "run it with the same options"
            flag_value = isinstance(value, int | float | str) and not isinstance(value, bool)
            if key in _TRAIN_FIELDS and flag_value:  # the flag that continues the folder
                same += f" (--{key.replace('_', '-')} {value})"
            raise ValueError(
                f"{path.parent} holds a sweep with other options ({key}: "
                f"{value!r}, now {mine.get(key)!r}); {same}, "
                "choose another --out, or pass --overwrite"
            )
    rows = doc.get("trials")
    return frozenset(
        r["name"]
        for r in (rows if isinstance(rows, list) else [])
        if isinstance(r, dict) and isinstance(r.get("name"), str)
    )


def _run_locked(
    config: SweepConfig,
    trials: list[Trial],
    executors: Executors,
    root: Path,
    settings: dict[str, Any],
    executor: str,
    log: TextIO | None,
    trial_runner: TrialRunner,
    t_start: float,
    listed: frozenset[str],
    accept: Callable[[], None],
) -> SweepResult:
    """The body of :func:`run_sweep`, with the sweep folder locked.

    ``listed`` names the trials the folder's ``results.json`` records (a corrupt
    ``metrics.json`` of one of them is run again; anywhere else it is someone
    else's file, and refused). ``accept`` is called once the trial folders are
    checked, before the sweep writes anything."""
    # the sweep's results are files: a closed or full stderr ends its messages only
    stream = ProgressStream(sys.stderr if log is None else log)

    def say(text: str) -> None:
        stream.write(f"sweep: {text}\n")
        stream.flush()

    records: dict[str, dict[str, Any]] = {}

    def base(t: Trial) -> dict[str, Any]:
        return {
            "name": t.name,
            "cell": t.cell,
            "hidden": t.hidden,
            "lr": t.lr,
            "seed": t.seed,
            "run_dir": str(t.out),
            "reused": False,
            "resumed": False,
            "error": None,
        }

    def finish(t: Trial, status: str, **kw: Any) -> None:
        records[t.name] = {**base(t), "status": status, **kw}

    def document(status: str) -> dict[str, Any]:
        rows = [records.get(t.name, {**base(t), "status": "pending"}) for t in trials]
        doc: dict[str, Any] = json_safe(
            {
                "status": status,
                "sweep": settings,
                "executor": executor,
                "wall_seconds": time.perf_counter() - t_start,
                "cells": summarise(trials, records, config.cells),
                "trials": rows,
            }
        )
        return doc

    files = {
        "json": root / RESULTS_JSON,
        "csv": root / RESULTS_CSV,
        "trials_csv": root / TRIALS_CSV,
    }

    def write(status: str) -> dict[str, Any]:
        doc = document(status)
        atomic_write_text(files["json"], json.dumps(doc, indent=2, allow_nan=False) + "\n")
        atomic_write_text(files["csv"], csv_text(doc["cells"], CELL_COLUMNS))
        atomic_write_text(files["trials_csv"], csv_text(doc["trials"], TRIAL_COLUMNS))
        return doc

    todo: deque[Trial] = deque()
    foreign: list[str] = []
    for t in trials:
        try:
            record, error = read_finished(t) if not t.config.overwrite else (None, None)
        except ForeignTrial as exc:
            foreign.append(str(exc))
            continue
        except CorruptTrial as exc:
            if t.name not in listed:  # not known to be this sweep's: someone else's file
                foreign.append(f"{exc}, and this sweep has no record of trial {t.name}")
                continue
            say(f"{exc}; running {t.name} again")
            record, error = None, None
        if record is not None:
            finish(t, "ok", reused=True, **record)
        elif error is not None:
            finish(t, "failed", error=error)
        else:
            todo.append(t)
    if foreign:
        more = f" (and {len(foreign) - 1} more trial folder(s))" if len(foreign) > 1 else ""
        raise ValueError(
            f"{foreign[0]}{more}; the sweep would replace it: move it away, choose another "
            "--out, or pass --overwrite"
        )
    accept()
    n_lrs = len(config.learning_rates())
    n_resume = sum(1 for t in todo if (t.out / CHECKPOINT_FILE).is_file())
    resuming = f" ({n_resume} resuming from a checkpoint)" if n_resume else ""
    def count(n: int, what: str) -> str:
        return f"{n} {what}" if n == 1 else f"{n} {what}s"

    kind, where = parse_executor(executor)
    runs_on = f"{where} local processes" if kind == "local" else f"the Dask cluster at {where}"
    say(
        f"{count(len(trials), 'trial')} ({count(len(config.cells), 'cell')} x "
        f"{count(n_lrs, 'learning rate')} x {count(config.seeds, 'seed')}) in {root}; "
        f"{len(trials) - len(todo)} already done, {len(todo)} to run{resuming} on {runs_on}"
    )
    done_count = len(trials) - len(todo)

    def report(t: Trial) -> None:
        nonlocal done_count
        done_count += 1
        r = records[t.name]
        if r["status"] == "ok":
            how = " (resumed)" if r.get("resumed") else ""
            say(
                f"[{done_count}/{len(trials)}] {t.name}: valid {r['valid_nll']:.4f}, test "
                f"{r['test_nll']:.4f}, {r['epochs_run']} epochs, {r['wall_seconds']:.1f} s{how}"
            )
        else:
            say(f"[{done_count}/{len(trials)}] {t.name}: FAILED: {r['error']}")
        write("running")

    def collect(t: Trial, fut: Future[dict[str, Any]]) -> None:
        exc = fut.exception()
        if exc is None:
            finish(t, "ok", **fut.result())
        elif isinstance(exc, TrialFailed):
            finish(t, "failed", error=str(exc))
        elif isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt(str(exc))
        else:
            finish(t, "failed", error=f"{type(exc).__name__}: {one_line(exc)}")
        report(t)

    if todo:
        executors.connect()
    write("running")
    suspects: set[str] = set()
    in_flight: dict[Future[dict[str, Any]], Trial] = {}
    status = "finished"
    with blas_env():
        try:
            ex = executors.start() if todo else None
            while todo or in_flight:
                assert ex is not None
                broken: list[Trial] = []
                pool_broken = False
                # Fill the window; a suspect of a broken pool runs alone.
                while todo and len(in_flight) < executors.window:
                    if any(t.name in suspects for t in in_flight.values()):
                        break
                    if todo[0].name in suspects and in_flight:
                        break
                    t = todo[0]
                    try:
                        fut = ex.submit(trial_runner, t.config.to_dict())
                    except BrokenProcessPool:  # broken by a trial in flight; t never ran
                        pool_broken = True
                        break
                    todo.popleft()
                    in_flight[fut] = t
                    if t.name in suspects:
                        break
                if not pool_broken:
                    done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                    for fut in done:
                        t = in_flight.pop(fut)
                        if isinstance(fut.exception(), BrokenProcessPool):
                            broken.append(t)
                            pool_broken = True
                            continue
                        collect(t, fut)
                if pool_broken:
                    executors.stop(wait=True)  # every future still in flight is done now
                    for fut, t in in_flight.items():
                        if not fut.done() or isinstance(fut.exception(), BrokenProcessPool):
                            broken.append(t)
                        else:
                            collect(t, fut)
                    in_flight.clear()
                    if len(broken) == 1:
                        t = broken[0]
                        finish(
                            t,
                            "failed",
                            error="BrokenProcessPool: the worker process running this trial "
                            "died (killed, or it exited)",
                        )
                        report(t)
                    elif broken:
                        say(
                            f"a worker process died; running the {len(broken)} trials it "
                            "interrupted again, one at a time, to find the one at fault"
                        )
                        order = {t.name: i for i, t in enumerate(trials)}
                        for t in sorted(broken, key=lambda x: order[x.name], reverse=True):
                            suspects.add(t.name)
                            todo.appendleft(t)
                    if todo:
                        ex = executors.start()
        except KeyboardInterrupt:
            status = "interrupted"
            executors.close(kill=True)
            write(status)
            raise
        finally:
            if status != "interrupted":
                executors.close()
    doc = write(status)
    return SweepResult(doc, files)
