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

from .config import find_family, load_system_config, load_targets
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
    family: str | None = "auto",
    interleave: bool = False,
    only_builds: Sequence[str] | None = None,
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
    family : str or None, default="auto"
        Grids of a dataset family (``benchmark_configs/families/``, see
        :func:`~avq_plugin.bench.config.find_family`): ``"auto"`` picks the family whose
        ``match`` admits the dataset, ``"none"``/None uses the per-system size classes,
        anything else names a family or a family file.
    interleave : bool, default=False
        Build every configuration first and keep all indexes, then time the query
        settings in ``reps`` rounds over every index (each round one timing per setting,
        the best kept), so that a change of machine load during the run affects every
        system alike. Needs the memory of all indexes at once.
    only_builds : sequence of str, optional
        Run only the builds of these names (of any system); a name no grid defines is an error.

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
    fam = find_family(config_dir, family, dataset.metric, dataset.dim, dataset.n_train)
    if fam is not None:
        say(f"grids: family {fam.name} ({fam.path})")
    builds: list[BuildRun] = []
    skipped: dict[str, str] = {}
    runners = dict(runners or {})
    kept: list[tuple] = []  # (runner, BuildRun, cfg) of the builds timed after all builds (interleave)

    def sweep(runner, br, cfg, reps_now, label):
        grid = grids[id(br)]
        bar = bars.bar(f"{runner_name(br)} sweep{label}", len(grid) * len(modes), "setting")
        try:
            for i, values in enumerate(grid):
                qa = {name: v for name, v in zip(cfg.query_arg_names, values) if v is not None}  # None: left out
                for j, mode in enumerate(modes):
                    try:
                        qr = _measure_query(runner, dataset, rows, k, qa, mode, reps_now, targets["epsilon"], min_time)
                    except Exception as exc:
                        say(f"  {mode} {qa} FAILED: {type(exc).__name__}: {exc}")
                        br.error = f"{mode} {qa}: {type(exc).__name__}: {exc}"
                        continue
                    finally:
                        bar.update(1)
                    slot = i * len(modes) + j
                    prev = br_slots.setdefault(id(br), {}).get(slot)
                    if prev is None:
                        br_slots[id(br)][slot] = qr
                        br.queries.append(qr)
                    else:  # a later round of an interleaved run: keep the fastest pass
                        prev.seconds += qr.seconds
                        prev.passes += qr.passes
                        if qr.best_seconds < prev.best_seconds:
                            prev.best_seconds, prev.qps, prev.cpu_over_wall = qr.best_seconds, qr.qps, qr.cpu_over_wall
                        qr = prev
                    say(f"  {mode:6s} {_fmt_qa(qa):32s} recall={qr.recall:.4f} qps={qr.qps:9.1f}")
        finally:
            bar.close()

    def runner_name(br):
        return f"{br.system} {br.name}"

    br_slots: dict = {}
    grids: dict = {}
    if only_builds is not None:
        known = {
            b["name"]
            for system in systems
            for b in load_system_config(config_dir, system, dataset.n_train, dataset.metric, quick, family=fam).builds
        }
        if set(only_builds) - known:
            raise ValueError(f"builds {sorted(set(only_builds) - known)} are not in the grids of {list(systems)}")
    for system in systems:
        try:
            runner = runners.pop(system, None) or make_runner(system, threads)
        except SystemUnavailable as exc:
            skipped[system] = str(exc)
            say(f"note: {exc}")
            continue
        runner.threads, runner.bars = threads, bars
        cfg = load_system_config(config_dir, system, dataset.n_train, dataset.metric, quick, family=fam)
        if only_builds is not None:
            cfg.builds = [b for b in cfg.builds if b["name"] in only_builds]
            if not cfg.builds:
                continue
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
            builds.append(br)
            grids[id(br)] = build.get("query_args") or cfg.query_args
            if interleave:
                kept.append((runner, br, cfg))
                runner = make_runner(system, threads)  # a fresh runner for the next build: this one keeps its index
                runner.threads, runner.bars = threads, bars
                continue
            sweep(runner, br, cfg, reps, "")
            runner.close()
            gc.collect()
    for r in range(reps if interleave else 0):
        for runner, br, cfg in kept:
            say(f"[{br.system}] {br.name}: round {r + 1}/{reps}")
            sweep(runner, br, cfg, 1, f" round {r + 1}/{reps}")
    for runner, _, _ in kept:
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
        "environment": _environment(config_dir),
        "settings": {
            "reps": reps,
            "min_time": min_time,
            "quick": quick,
            "modes": list(modes),
            "threads": threads,
            "config_dir": str(config_dir),
            "systems": list(systems),
            "family": None if fam is None else fam.name,
            "interleave": bool(interleave),
        },
        "targets": targets,
        "skipped": skipped,
        "builds": [asdict(b) for b in builds],
    }


def _environment(config_dir: Path | None = None) -> dict:
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
    if avq is not None:
        env["avq_plugin_version"] = getattr(avq, "__version__", "?")
        env["avq_plugin_path"] = os.path.dirname(getattr(avq, "__file__", "") or "")
    env.update(_git_commit(str(config_dir) if config_dir is not None else None))
    if avq is not None and hasattr(avq, "build_info"):
        try:
            env["avq_plugin_build_info"] = avq.build_info()
        except Exception:
            pass
    return env


def _git_commit(cwd: str | None = None) -> dict:
    """``git_commit`` (and ``git_dirty``) of the checkout holding ``cwd`` (the benchmark configs'
    directory; the working directory when None), if it is one.

    The configs come from the repository whose sources are benchmarked (``--configs`` or the
    working directory's ``benchmark_configs/``), so this names the sources the installed package
    was built from when the two agree, wherever avq-bench is started.
    """
    import subprocess

    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": head, "git_dirty": bool(dirty)}
