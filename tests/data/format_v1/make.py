"""Write the golden index files of format version 1 and their expected search results.

These files are frozen: tests/test_golden.py loads every one and checks that searching it gives
exactly the results recorded in expected.json, so a later change to the loader or the search code
that alters what an old file means is caught. Do not regenerate them for a new format version:
make a format_v2/ directory next to this one (copy this script) and keep format_v1/ as it is.

    python tests/data/format_v1/make.py            # refuses to overwrite existing files
    python tests/data/format_v1/make.py --force    # only while format 1 is still unreleased
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

import avq_plugin

HERE = Path(__file__).resolve().parent
METRICS = ("dot", "cosine", "l2")
REORDERS = ("none", "int8", "float32")
N, D, NQ, K = 240, 12, 6, 8
# Stored default budget (kept in the file) and an explicit full budget.
DEFAULT_LEAVES, DEFAULT_REORDER_K = 3, 30
NUM_LEAVES = 8


def data():
    """Clustered float32 data with distinct norms, ids with gaps, and queries."""
    rng = np.random.default_rng(20261127)
    centers = rng.standard_normal((10, D)) * rng.uniform(0.5, 2.0, (10, 1))
    X = centers[rng.integers(0, 10, N)] + 0.3 * rng.standard_normal((N, D))
    Q = centers[rng.integers(0, 10, NQ)] + 0.3 * rng.standard_normal((NQ, D))
    ids = 1000 + 7 * np.arange(N, dtype=np.int64)
    return X.astype(np.float32), Q.astype(np.float32), ids


def build():
    """{file name: index} for every metric x reorder mode, plus ExactIndex per metric."""
    X, _, ids = data()
    removed = ids[::17]  # holes in the id space and in the leaves
    out = {}
    for metric in METRICS:
        for reorder in REORDERS:
            index = avq_plugin.AVQIndex(
                metric=metric,
                num_leaves=NUM_LEAVES,
                dims_per_block=2 if reorder != "int8" else 3,
                reorder=reorder,
                leaves_to_search=DEFAULT_LEAVES,
                reorder_k=DEFAULT_REORDER_K,
                num_threads=1,
                seed=3,
            ).fit(X, ids)
            index.remove(removed)
            out[f"avq_{metric}_{reorder}.avq"] = index
        exact = avq_plugin.ExactIndex(metric, num_threads=1).fit(X, ids)
        exact.remove(removed)
        out[f"exact_{metric}.avq"] = exact
    return out


def searches(index, Q):
    """The searches recorded per file: the stored default budget and a full one."""
    budgets = [None, dict(leaves_to_search=NUM_LEAVES, reorder_k=N)]
    if isinstance(index, avq_plugin.ExactIndex):
        budgets = [None]
    out = []
    for budget in budgets:
        D, I = index.search(Q, k=K, num_threads=1, **(budget or {}))
        out.append(
            dict(budget=budget, ids=I.tolist(), distances=[[float(v) for v in row] for row in D.astype(np.float32)])
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="overwrite existing golden files")
    args = parser.parse_args(argv)
    expected_path = HERE / "expected.json"
    if expected_path.exists() and not args.force:
        sys.exit(f"{expected_path} exists; golden files are frozen (see the docstring)")
    _, Q, _ = data()
    expected = dict(
        format_version=1,
        written_by=avq_plugin.__version__,
        k=K,
        queries=[[float(v) for v in row] for row in Q],
        files={},
    )
    for name, index in build().items():
        blob = index.to_bytes()
        (HERE / name).write_bytes(blob)
        kind = "exact" if isinstance(index, avq_plugin.ExactIndex) else "avq"
        entry = dict(kind=kind, metric=index.metric, ntotal=index.ntotal, d=index.d)
        entry["sha256"] = hashlib.sha256(blob).hexdigest()
        entry["ids"] = sorted(int(i) for i in index.get_ids())
        if kind == "avq":
            entry.update(reorder=index.reorder, default_search_params=list(index.default_search_params()))
        entry["searches"] = searches(index, Q)
        expected["files"][name] = entry
    expected_path.write_text(json.dumps(expected, indent=1) + "\n")
    total = sum(p.stat().st_size for p in HERE.iterdir())
    print(f"wrote {len(expected['files'])} files to {HERE} ({total / 1024:.0f} KiB in all)")


if __name__ == "__main__":
    main()
