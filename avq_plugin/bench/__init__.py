"""Recall-vs-throughput benchmark of avq_plugin against ScaNN, Faiss, hnswlib and exact search.

Run it as ``avq-bench`` or ``python -m avq_plugin.bench``::

    avq-bench                                        # shipped 20k GloVe subset, every installed system
    avq-bench glove-100-angular.hdf5 --batch         # any ann-benchmarks HDF5 file, batched queries
    avq-bench X.npy Q.npy --metric euclidean --k 20  # your own data; exact ground truth computed, cached
    avq-bench --algorithms avq,scann --quick --out results/

It prints the best QPS at each recall target (``targets.yaml``: 0.8, 0.9, 0.95,
0.99) per system with build time and index size, and the ratios AVQ / each
peer; it writes ``results.json``, ``results.csv``, ``report.txt`` and
``recall_vs_qps.png`` to ``--out`` (see :func:`write_outputs`).

What is measured, for every system and build configuration, in one process on
the same float32 data with ``--threads`` threads (default 1):

- **build**: wall time of the whole build (including the L2 normalisation that
  ScaNN and Faiss need for angular data), the resident-set growth around it
  (``/proc/self/statm`` after ``gc.collect()`` and glibc ``malloc_trim``), the
  peak resident-set growth during it (``VmHWM`` after a ``clear_refs`` reset,
  where the kernel allows it), and the index's own size figure
  (``memory_usage()`` for avq_plugin, ``index_file_size()`` for hnswlib, the
  serialised size for ScaNN and Faiss). Each system first makes one unmeasured
  build on 5,000 rows, so one-time library set-up is not charged to its first
  measured build;
- **search**, for each query setting, in *single* mode (one call per query with
  a 1-D vector, the ann-benchmarks mode; the whole loop is timed and QPS =
  queries / seconds) and/or *batch* mode (all queries in one call). Each timing
  is repeated ``--reps`` times and the best is kept;
- **recall@k** with ann-benchmarks' rule (:func:`knn_recall`).

The parameter sweeps live in YAML files (``avq.yaml``, ``scann.yaml``,
``faiss.yaml``, ``hnswlib.yaml``, ``exact.yaml`` and ``targets.yaml``) in a
``benchmark_configs/`` directory; see :func:`find_config_dir` and
:func:`load_system_config`.

Only NumPy is needed to import this module. PyYAML (and h5py for HDF5 input,
matplotlib for the plot, tqdm for progress bars) come with the ``bench`` extra;
ScaNN, Faiss and hnswlib are optional and skipped with a note when missing,
unless named in ``--algorithms``. avq_plugin's compiled index is imported only
when it runs.

The package, by job: :mod:`.cli` (the command line), :mod:`.run` (one benchmark run),
:mod:`.runners` (one module per system: avq, scann, faiss, hnswlib, exact), :mod:`.measure`
(timing, recall, memory), :mod:`.config` (the YAML sweeps), :mod:`.ground_truth` (exact
neighbours, cached), :mod:`.report` (tables, summary, CSV, plot, output files) and
:mod:`.progress` (progress bars).
"""

from __future__ import annotations

from ._common import INSTALL_HINT, SYSTEMS
from .cli import main
from .config import find_config_dir, load_system_config, load_targets, resolve_num_leaves
from .ground_truth import compute_ground_truth, ensure_ground_truth
from .measure import ANN_BENCHMARKS_EPSILON, knn_recall, true_distances
from .report import (
    CSV_COLUMNS,
    format_markdown,
    format_report,
    format_summary,
    plot_results,
    summarize,
    write_csv,
    write_outputs,
)
from .run import run_benchmark
from .runners import RUNNERS, Runner, SystemUnavailable, make_runner

__all__ = [
    "knn_recall",
    "true_distances",
    "find_config_dir",
    "load_targets",
    "load_system_config",
    "resolve_num_leaves",
    "run_benchmark",
    "ensure_ground_truth",
    "compute_ground_truth",
    "summarize",
    "format_summary",
    "format_report",
    "format_markdown",
    "write_outputs",
    "plot_results",
    "main",
    # also re-exported for tests and extensions
    "ANN_BENCHMARKS_EPSILON",
    "CSV_COLUMNS",
    "INSTALL_HINT",
    "RUNNERS",
    "SYSTEMS",
    "Runner",
    "SystemUnavailable",
    "make_runner",
    "write_csv",
]
