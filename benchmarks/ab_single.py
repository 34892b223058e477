"""Interleaved A/B timing of AVQIndex variants: single query per call, one thread.

Builds every variant on the same ann-benchmarks HDF5 file, then, for a grid of
(leaves_to_search, reorder_k), times one pass over the queries per variant per
round, the variants interleaved (order reversed every round) so that load from
other processes hits all alike; each point keeps its fastest pass. Passes are
timed in CPU seconds of this process (--clock cpu, the default: robust when other
processes share the cores; the search runs on the calling thread) or wall
seconds (--clock wall). Prints, per
recall target, the best QPS of each variant (the fastest grid point reaching the
target) and the ratios to the first variant.

    flock /tmp/avq-bench.lock python benchmarks/ab_single.py DATA.hdf5 \\
        --variant base='{"num_leaves": 436}' \\
        --variant soar='{"num_leaves": 436, "spill": "soar"}' \\
        --leaves 4 6 8 12 16 24 32 48 --reorder 20 40 80 160 320

Variant arguments go to AVQIndex (metric comes from the file). hnswlib can be
timed beside them with --hnsw M,efC (ef swept with --ef).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import h5py
import numpy as np

import avq_plugin

TARGETS = (0.90, 0.95, 0.99)


def recall_at(ids, gt, k):
    return float(np.mean([len(set(a[:k].tolist()) & set(b[:k].tolist())) / k for a, b in zip(ids, gt)]))


def best_at(points, target):
    ok = [p["qps"] for p in points if p["recall"] >= target]
    return max(ok) if ok else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--variant", action="append", required=True, help="name=JSON constructor args")
    ap.add_argument("--leaves", type=int, nargs="+", required=True)
    ap.add_argument("--reorder", type=int, nargs="+", required=True)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--hnsw", default=None, help="M,ef_construction: time hnswlib too")
    ap.add_argument("--ef", type=int, nargs="*", default=[10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384])
    ap.add_argument("--json", default=None)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    a = ap.parse_args(argv)

    with h5py.File(a.data, "r") as f:
        X = np.ascontiguousarray(f["train"][:], dtype=np.float32)
        Q = np.ascontiguousarray(f["test"][: a.nq], dtype=np.float32)
        gt = f["neighbors"][: a.nq, : a.k]
        metric = {"angular": "cosine", "euclidean": "l2", "dot": "dot"}[f.attrs["distance"]]
    print(f"{a.data}: n={X.shape[0]} d={X.shape[1]} metric={metric} nq={len(Q)}", flush=True)

    systems = {}  # name -> (search fn factory, grid)
    for spec in a.variant:
        name, args = spec.split("=", 1)
        args = json.loads(args)
        t0 = time.perf_counter()
        idx = avq_plugin.AVQIndex(metric=metric, num_threads=a.build_threads, **args).fit(X)
        bt = time.perf_counter() - t0
        print(f"  built {name} {args}: {bt:.1f} s, {idx.memory_usage() / 2**20:.1f} MiB", flush=True)

        def make(idx=idx):
            def fn(qa):
                nl, rk = qa
                s = idx.search
                return lambda q: s(q, k=a.k, leaves_to_search=nl, reorder_k=rk, num_threads=1)[1][0]

            return fn

        grid = [(nl, rk) for nl in a.leaves for rk in a.reorder if rk >= a.k]
        systems[name] = (make(), grid, {"build_s": bt, "memory": idx.memory_usage()})
    if a.hnsw:
        import hnswlib

        M, efc = (int(v) for v in a.hnsw.split(","))
        space = {"cosine": "cosine", "l2": "l2", "dot": "ip"}[metric]
        h = hnswlib.Index(space=space, dim=X.shape[1])
        t0 = time.perf_counter()
        h.init_index(max_elements=X.shape[0], M=M, ef_construction=efc, random_seed=0)
        h.add_items(X, num_threads=a.build_threads)
        bt = time.perf_counter() - t0
        h.set_num_threads(1)
        print(f"  built hnswlib M={M} efC={efc}: {bt:.1f} s", flush=True)

        def hfn(qa, h=h):
            (ef,) = qa

            def run(q):
                h.set_ef(max(ef, a.k))
                return h.knn_query(q, k=a.k)[0][0]

            return run

        systems[f"hnsw{M}"] = (hfn, [(ef,) for ef in a.ef], {"build_s": bt})

    rows = [Q[i : i + 1] for i in range(len(Q))]
    best = {(n, qa): float("inf") for n, (_, g, _) in systems.items() for qa in g}
    recall = {}
    names = list(systems)
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    for r in range(a.rounds):
        order = names if r % 2 == 0 else names[::-1]
        npts = max(len(systems[n][1]) for n in names)
        for i in range(npts):
            for n in order:
                fnf, grid, _ = systems[n]
                if i >= len(grid):
                    continue
                qa = grid[i]
                fn = fnf(qa)
                t0 = clock()
                out = [fn(q) for q in rows]
                dt = clock() - t0
                best[(n, qa)] = min(best[(n, qa)], dt)
                if (n, qa) not in recall:
                    recall[(n, qa)] = recall_at(np.array(out), gt, a.k)
        print(f"  round {r + 1}/{a.rounds} done", flush=True)

    result = {"data": a.data, "nq": len(Q), "clock": a.clock, "systems": {}}
    for n in names:
        pts = [{"qa": list(qa), "recall": recall[(n, qa)], "qps": len(Q) / best[(n, qa)]} for qa in systems[n][1]]
        result["systems"][n] = {"points": pts, **systems[n][2], "at": {str(t): best_at(pts, t) for t in TARGETS}}
    base = names[0]
    print(f"\nQPS ({a.clock} time) at recall (fastest grid point reaching it); ratio to {base}")
    print("system".ljust(14) + "".join(f"@{t:.2f}".rjust(18) for t in TARGETS))
    for n in names:
        cells = []
        for t in TARGETS:
            v, b = result["systems"][n]["at"][str(t)], result["systems"][base]["at"][str(t)]
            cells.append(f"{v:8.0f} ({v / b:4.2f}x)".rjust(18))
        print(n.ljust(14) + "".join(cells))
    for n in names:
        print(f"\n{n} frontier:")
        pts = sorted(result["systems"][n]["points"], key=lambda p: -p["qps"])
        top = -1.0
        for p in pts:
            if p["recall"] > top:
                top = p["recall"]
                print(f"    {p['qa']}: recall {p['recall']:.4f}  {p['qps']:8.0f} QPS")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
