"""The ``avq-bench`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._common import SYSTEMS
from .config import find_config_dir, load_targets
from .ground_truth import ensure_ground_truth
from .progress import Bars
from .report import _json_default, format_summary, summarize, write_outputs
from .run import run_benchmark
from .runners import make_runner
from .runners.base import SystemUnavailable

# --------------------------------------------------------------------------- CLI


class CommandLineError(Exception):
    """A user error: reported as one line on stderr with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise CommandLineError(message)


def _parse_args(argv):
    p = _Parser(
        prog="avq-bench",
        description="Recall@k vs queries per second of avq_plugin against ScaNN, Faiss, hnswlib and exact "
        "search, on the shipped GloVe subset or your own data. Writes results.json, results.csv, "
        "report.txt and recall_vs_qps.png to --out and prints the best QPS at each recall target.",
    )
    p.add_argument(
        "data",
        nargs="*",
        metavar="DATA",
        help="DATASET.hdf5 (ann-benchmarks layout) or X.npy Q.npy (database, queries); "
        "default: the shipped 20k GloVe subset",
    )
    p.add_argument("--dataset", metavar="PATH.hdf5", help=argparse.SUPPRESS)  # old spelling of DATA
    p.add_argument(
        "--metric", help="angular (or cosine) / euclidean (or l2); default: the HDF5 file's (required for .npy input)"
    )
    p.add_argument("--k", type=int, default=None, help="neighbours per query and recall depth (default 10)")
    p.add_argument(
        "--algorithms",
        "--systems",
        dest="algorithms",
        metavar="LIST",
        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all installed; a library "
        "named here that is not installed is an error)",
    )
    p.add_argument("--threads", type=int, default=1, help="threads for building and searching (default 1)")
    p.add_argument("--batch", action="store_true", help="time all queries in one call instead of one call per query")
    p.add_argument("--modes", default=None, help="comma-separated subset of single,batch (overrides --batch)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: avq-bench-results/<dataset>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.add_argument(
        "--ground-truth",
        choices=("auto", "file", "compute"),
        default="auto",
        help="auto: the file's ground truth if it has one, else computed exactly and cached; "
        "file: require the file's; compute: always compute (default auto)",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where computed ground truth is cached (default $AVQ_BENCH_CACHE or ~/.cache/avq-bench)",
    )
    p.add_argument("--max-queries", type=int, metavar="N", help="use only the first N queries")
    p.add_argument(
        "--configs",
        metavar="DIR",
        help="directory with the YAML grids (default: ./benchmark_configs, else the one in the package's repository)",
    )
    p.add_argument("--reps", type=int, default=3, help="timings per setting; the best is kept (default 3)")
    p.add_argument(
        "--min-time",
        type=float,
        default=0.1,
        metavar="SEC",
        help="each timing repeats passes over the queries for at least SEC seconds "
        "and reports the time per pass (default 0.1)",
    )
    p.add_argument("--quick", action="store_true", help="reduced grids")
    p.add_argument("--json", metavar="FILE", help="also write the raw results to FILE")
    args = p.parse_args(argv)

    args.algorithms_given = args.algorithms is not None
    names = [s.strip() for s in (args.algorithms or ",".join(SYSTEMS)).split(",") if s.strip()]
    bad = [s for s in names if s not in SYSTEMS]
    if bad:
        raise CommandLineError(
            f"unknown algorithm{'s' if len(bad) > 1 else ''} {', '.join(bad)}; choose from {','.join(SYSTEMS)}"
        )
    if not names:
        raise CommandLineError("--algorithms is empty")
    args.algorithms = list(dict.fromkeys(names))
    if args.modes is None:
        args.modes = ["batch"] if args.batch else ["single"]
    else:
        args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if not args.modes or any(m not in ("single", "batch") for m in args.modes):
            raise CommandLineError("--modes must be a comma-separated subset of single,batch")
    if args.dataset:
        if args.data:
            raise CommandLineError("give the dataset either as DATA or with --dataset, not both")
        args.data = [args.dataset]
    if len(args.data) > 2:
        raise CommandLineError(f"expected DATASET.hdf5 or X.npy Q.npy, got {len(args.data)} paths")
    if len(args.data) == 1 and args.data[0].endswith(".npy"):
        raise CommandLineError(f"{args.data[0]}: a .npy database needs its queries too: avq-bench X.npy Q.npy")
    if len(args.data) == 2 and not all(x.endswith(".npy") for x in args.data):
        raise CommandLineError("two paths must be X.npy Q.npy (database and queries)")
    if args.k is not None and args.k < 1:
        raise CommandLineError(f"--k must be >= 1, got {args.k}")
    if args.threads < 1:
        raise CommandLineError(f"--threads must be >= 1, got {args.threads}")
    if args.min_time < 0:
        raise CommandLineError("--min-time must be >= 0")
    if args.reps < 1:
        raise CommandLineError("--reps must be >= 1")
    if args.max_queries is not None and args.max_queries < 1:
        raise CommandLineError("--max-queries must be >= 1")
    return args


def _load_dataset(args):
    from avq_plugin import datasets

    if not args.data:
        ds = datasets.load_glove_subset()
        if args.metric is not None and datasets.normalize_metric(args.metric) != ds.metric:
            ds = datasets.Dataset(ds.name, datasets.normalize_metric(args.metric), ds.train, ds.test, None, None)
        return ds
    if len(args.data) == 1:
        return datasets.load_hdf5(args.data[0], metric=args.metric)
    if args.metric is None:
        raise CommandLineError("X.npy Q.npy input needs --metric angular or --metric euclidean")
    return datasets.load_npy(args.data[0], args.data[1], args.metric)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``avq-bench`` (also ``python -m avq_plugin.bench``).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 on success, 1 when no system produced a result, 2 for a
        user error (reported as one ``avq-bench: error: ...`` line on stderr),
        130 when interrupted.
    """
    try:
        return _main(argv)
    except CommandLineError as exc:
        print(f"avq-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("avq-bench: interrupted", file=sys.stderr)
        return 130


def _main(argv) -> int:
    args = _parse_args(argv)
    # BLAS/OpenMP pools of libraries imported from here on get --threads threads.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    bars = Bars(not args.quiet and sys.stderr.isatty())
    log = None if args.quiet else sys.stderr

    def say(msg: str) -> None:
        if log is not None:
            bars.write(msg)

    try:
        config_dir = find_config_dir(args.configs)
        targets = load_targets(config_dir)  # fail early on a missing or unreadable targets.yaml
        k = args.k or targets["k"]
        t0 = time.perf_counter()
        dataset = _load_dataset(args).subsample_queries(args.max_queries)
        if k > dataset.n_train:
            raise CommandLineError(f"--k {k} exceeds the number of database vectors ({dataset.n_train})")
        # Runners first: an algorithm named on the command line must be installed.
        runners, skipped_notes = {}, []
        for system in args.algorithms:
            try:
                runners[system] = make_runner(system, args.threads)
            except SystemUnavailable as exc:
                if args.algorithms_given:
                    raise CommandLineError(f"{system} was requested but is not available: {exc}") from None
                skipped_notes.append(str(exc))
        if args.ground_truth == "file":
            dataset = ensure_ground_truth(dataset, k, "file")  # its errors come before any output
        say(f"loaded {dataset!r} in {time.perf_counter() - t0:.1f} s; configs from {config_dir}")
        dataset = ensure_ground_truth(dataset, k, args.ground_truth, args.cache_dir, say=say)
    except (FileNotFoundError, ImportError, ValueError, OSError) as exc:
        raise CommandLineError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    for note in skipped_notes:
        say(f"note: {note}")
    systems = [s for s in args.algorithms if s in runners]
    results = run_benchmark(
        dataset,
        config_dir,
        systems,
        reps=args.reps,
        quick=args.quick,
        modes=args.modes,
        min_time=args.min_time,
        log=log,
        k=k,
        threads=args.threads,
        bars=bars,
        runners=runners,
    )
    for note in skipped_notes:
        results["skipped"].setdefault(note.split(" ", 1)[0], note)
    out_dir = Path(args.out) if args.out else Path("avq-bench-results") / dataset.name
    paths = write_outputs(results, out_dir, say)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**results, "summary": summarize(results)}, f, indent=1, default=_json_default)
        paths["json (copy)"] = args.json
    print(format_summary(results))
    print("\nwritten: " + ", ".join(paths.values()))
    if not any(b["queries"] for b in results["builds"]):
        print("avq-bench: error: no system produced a result", file=sys.stderr)
        return 1
    return 0
