"""Build time of AVQIndex against ScaNN at the same leaf count, one thread, interleaved.

Both systems are built through avq-bench's own runners (avq_plugin.bench.runners), so their
configurations are the ones the benchmarks use: ScaNN as in ann-benchmarks (spherical tree
trained on all rows, int8 centroids, AH with 2 dims per block and T = 0.2, float32 re-ranking),
avq with its defaults for the partition sample and 2 dims per block, T = 0.2. Every (system,
leaves) build runs --reps times, the systems alternating (order reversed every round); each keeps
its fastest CPU time (process time: robust when other processes share the machine) and wall time.

    flock /tmp/avq-bench.lock python benchmarks/build_time.py DATA.hdf5 --leaves 1000 1500 2000
"""

from __future__ import annotations

import argparse
import time

import h5py
import numpy as np

from avq_plugin.bench.runners import make_runner

ARGS = {
    "avq": {"dims_per_block": 2, "anisotropic_threshold": 0.2, "reorder": "float32", "seed": 0, "spill": "none"},
    "scann": {
        "spherical": True,
        "quantize_centroids": True,
        "training_sample_size": "all",
        "dims_per_block": 2,
        "anisotropic_quantization_threshold": 0.2,
        "reorder_quantize": "float32",
    },
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="ann-benchmarks HDF5 file")
    ap.add_argument("--leaves", type=int, nargs="+", default=[1000, 1500, 2000])
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args(argv)
    with h5py.File(a.data, "r") as f:
        train = np.asarray(f["train"], dtype=np.float32)
        metric = f.attrs.get("distance", "angular")
    metric = "angular" if metric in ("angular", "cosine") else "euclidean"
    best = {}
    systems = ["avq", "scann"]
    for rep in range(a.reps):
        for leaves in a.leaves:
            for system in systems if rep % 2 == 0 else systems[::-1]:
                runner = make_runner(system, threads=1)
                runner.bars = None
                t_cpu, t_wall = time.process_time(), time.perf_counter()
                runner.build(train, metric, {**ARGS[system], "num_leaves": leaves})
                cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
                key = (system, leaves)
                old = best.get(key, (float("inf"), float("inf")))
                best[key] = (min(old[0], cpu), min(old[1], wall))
                print(
                    f"round {rep + 1}: {system:5s} {leaves:5d} leaves  cpu {cpu:6.2f} s  wall {wall:6.2f} s", flush=True
                )
                del runner
    print(f"\n{train.shape[0]} x {train.shape[1]} {metric}, one thread, best of {a.reps}")
    print("| leaves | avq CPU s | ScaNN CPU s | avq / ScaNN (CPU) | avq wall s | ScaNN wall s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for leaves in a.leaves:
        (ac, aw), (sc, sw) = best[("avq", leaves)], best[("scann", leaves)]
        print(f"| {leaves} | {ac:.2f} | {sc:.2f} | {ac / sc:.2f}x | {aw:.2f} | {sw:.2f} |")


if __name__ == "__main__":
    main()
