"""Smoke test of the installed avq_plugin on another (emulated) CPU: fit, search, save/load, every metric.

.ci/run runs it twice: natively with --write, then under qemu-user with an older CPU model with
--compare, which checks that the dispatcher picked the expected SIMD level and that every result
is bit-identical to the native run's (the kernels are, by construction: -ffp-contract=off).

    python tools/cpu_smoke.py --write /tmp/native.json
    qemu-x86_64 -cpu Nehalem $(command -v python) tools/cpu_smoke.py --compare /tmp/native.json --expect-level scalar

A stray AVX instruction outside the kernels dies here with SIGILL, which objdump alone can miss.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

import numpy as np

import avq_plugin

METRICS = ("dot", "cosine", "l2")


def run():
    """Every metric x (AVQIndex with each reorder mode, ExactIndex): digests of results and files."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((1500, 24)).astype(np.float32)
    Q = rng.standard_normal((20, 24)).astype(np.float32)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for metric in METRICS:
            for reorder in ("float32", "int8", "none"):
                # Explicit eta: the "auto" threshold is a numpy mean, whose summation order may
                # follow the CPU's SIMD width; everything else is the extension's own arithmetic.
                eta = None if metric == "l2" else 4.0
                index = avq_plugin.AVQIndex(metric, num_leaves=12, reorder=reorder, eta=eta, num_threads=2, seed=1)
                index.fit(X)
                path = os.path.join(tmp, "i.avq")
                index.save(path)
                results = [index.search(Q, k=10), index.search(Q, k=5, leaves_to_search=12, reorder_k=60)]
                for mmap in (False, True):
                    loaded = avq_plugin.AVQIndex.load(path, mmap=mmap)
                    for (D, I), (D2, I2) in zip(
                        results, [loaded.search(Q, k=10), loaded.search(Q, k=5, leaves_to_search=12, reorder_k=60)]
                    ):
                        assert np.array_equal(I, I2) and np.array_equal(D, D2), (
                            f"{metric}/{reorder}: load changed results"
                        )
                out[f"avq/{metric}/{reorder}"] = dict(
                    file=hashlib.sha256(open(path, "rb").read()).hexdigest(),
                    results=[hashlib.sha256(D.tobytes() + I.tobytes()).hexdigest() for D, I in results],
                    recall_ids=results[1][1][:3].tolist(),
                )
            exact = avq_plugin.ExactIndex(metric, num_threads=2).fit(X)
            D, I = exact.search(Q, k=10)
            again = avq_plugin.ExactIndex.from_bytes(exact.to_bytes()).search(Q, k=10)
            assert np.array_equal(again[1], I) and np.array_equal(again[0], D)
            out[f"exact/{metric}"] = dict(results=[hashlib.sha256(D.tobytes() + I.tobytes()).hexdigest()])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", help="record this run's results (native run)")
    g.add_argument("--compare", help="compare with a recorded run")
    p.add_argument("--expect-level", help="the SIMD level the dispatcher must pick by default")
    args = p.parse_args(argv)
    info = avq_plugin.build_info()
    print(f"cpu_smoke: simd_level {info['simd_level']}, supported {info['supported_simd_levels']}", flush=True)
    if args.expect_level and info["simd_level"] != args.expect_level:
        sys.exit(f"dispatcher picked {info['simd_level']!r}, expected {args.expect_level!r} ({info})")
    got = run()
    if args.write:
        with open(args.write, "w") as f:
            json.dump(got, f, indent=1)
        print(f"cpu_smoke: {len(got)} configurations recorded")
        return 0
    with open(args.compare) as f:
        want = json.load(f)
    bad = [k for k in want if want[k] != got.get(k)]
    if bad or set(got) != set(want):
        sys.exit(f"results differ from the native run for {bad or sorted(set(got) ^ set(want))}")
    print(f"cpu_smoke: {len(got)} configurations identical to the native run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
