"""One benchmark run: every system and configuration on one dataset, into a results dict."""

from __future__ import annotations

import gc
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .config import load_system_config, load_targets
from .measure import BuildRun, _measure_build, _measure_query, _warm_up
from .progress import Bars
from .report import _fmt_qa, _mb
from .runners import make_runner
from .runners.base import SystemUnavailable


def run_benchmark(
    dataset,
    config_dir: Path,
    systems: Sequence[str],
    reps: int = 3,
    quick: bool = False,
    modes: Sequence[str] = ("single", "batch"),
    min_time: float = 0.1,
    log=sys.stderr,
    k: int | None = None,
    threads: int = 1,
    bars: Bars | None = None,
    runners: dict | None = None,
) -> dict:
    """Build and query every configured system on ``dataset``.

    Parameters
    ----------
    dataset : avq_plugin.datasets.Dataset
        Data and ground truth (ann-benchmarks conventions), at least ``k``
        columns of it (see :func:`ensure_ground_truth`).
    config_dir : pathlib.Path
        Directory with ``targets.yaml`` and ``<system>.yaml``.
    systems : sequence of str
        Subset of :data:`SYSTEMS`; a system whose library is missing is skipped
        with a note (pass ``runners`` to decide that beforehand).
    reps : int, default=3
        Timings per (setting, mode); the fastest is kept.
    min_time : float, default=0.1
        Each timing repeats whole passes over the queries until this many
        seconds have passed, and reports the time per pass; this steadies
        timings of small query sets without slowing down large ones.
    quick : bool, default=False
        Use the reduced grids.
    modes : sequence of str, default=("single", "batch")
        Query modes to time.
    log : file-like or None, default=sys.stderr
        Where progress lines go (None: nowhere).
    k : int, optional
        Neighbours per query and recall depth; default: ``k`` of ``targets.yaml``.
    threads : int, default=1
        Threads every system may use to build and search.
    bars : Bars, optional
        Progress bars for builds and sweeps (default: none).
    runners : dict, optional
        Already created runners by system name (see :func:`make_runner`).

    Returns
    -------
    dict
        JSON-serialisable record: ``dataset``, ``environment``, ``settings``,
        ``targets``, ``skipped`` (system -> reason) and ``builds`` (list of
        :class:`BuildRun` as dicts).
    """
    bars = bars or Bars(False)

    def say(msg: str) -> None:
        if log is not None:
            bars.write(msg, file=log)

    targets = load_targets(config_dir)
    if k is not None:
        targets["k"] = int(k)
    k = targets["k"]
    if not dataset.has_ground_truth:
        raise ValueError(f"dataset {dataset.name} has no ground truth (see ensure_ground_truth)")
    if dataset.distances.shape[1] < k:
        raise ValueError(f"ground truth has {dataset.distances.shape[1]} columns < k={k}")
    rows = list(dataset.test)  # 1-D float32 views, shared by every system
    builds: list[BuildRun] = []
    skipped: dict[str, str] = {}
    runners = dict(runners or {})
    for system in systems:
        try:
            runner = runners.pop(system, None) or make_runner(system, threads)
        except SystemUnavailable as exc:
            skipped[system] = str(exc)
            say(f"note: {exc}")
            continue
        runner.threads, runner.bars = threads, bars
        cfg = load_system_config(config_dir, system, dataset.n_train, dataset.metric, quick)
        _warm_up(runner, cfg, dataset, say)
        for build in cfg.builds:
            say(f"[{system}] build {build['name']} {build['args']}")
            try:
                br = _measure_build(runner, system, build, dataset)
            except SystemUnavailable as exc:
                say(f"  skipped: {exc}")
                skipped[f"{system}:{build['name']}"] = str(exc)
                continue
            except Exception as exc:
                say(f"  build FAILED: {type(exc).__name__}: {exc}")
                builds.append(
                    BuildRun(system, build["name"], build["args"], runner.version, error=f"{type(exc).__name__}: {exc}")
                )
                runner.close()
                continue
            say(f"  built in {br.build_seconds:.2f} s, RSS +{_mb(br.rss_delta_bytes)} MB, index {_mb(br.own_bytes)} MB")
            sweep = bars.bar(f"{system} {build['name']} sweep", len(cfg.query_args) * len(modes), "setting")
            try:
                for values in cfg.query_args:
                    qa = dict(zip(cfg.query_arg_names, values))
                    for mode in modes:
                        try:
                            qr = _measure_query(runner, dataset, rows, k, qa, mode, reps, targets["epsilon"], min_time)
                        except Exception as exc:
                            say(f"  {mode} {qa} FAILED: {type(exc).__name__}: {exc}")
                            br.error = f"{mode} {qa}: {type(exc).__name__}: {exc}"
                            continue
                        finally:
                            sweep.update(1)
                        br.queries.append(qr)
                        say(f"  {mode:6s} {_fmt_qa(qa):32s} recall={qr.recall:.4f} qps={qr.qps:9.1f}")
            finally:
                sweep.close()
            builds.append(br)
            runner.close()
            gc.collect()
    return {
        "dataset": {
            "name": dataset.name,
            "metric": dataset.metric,
            "n_train": dataset.n_train,
            "n_test": dataset.n_test,
            "dim": dataset.dim,
        },
        "environment": _environment(),
        "settings": {
            "reps": reps,
            "min_time": min_time,
            "quick": quick,
            "modes": list(modes),
            "threads": threads,
            "config_dir": str(config_dir),
            "systems": list(systems),
        },
        "targets": targets,
        "skipped": skipped,
        "builds": [asdict(b) for b in builds],
    }


def _environment() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    avq = sys.modules.get("avq_plugin")
    if avq is not None and hasattr(avq, "build_info"):
        try:
            env["avq_plugin_build_info"] = avq.build_info()
        except Exception:
            pass
    return env
