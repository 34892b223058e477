"""Writes the version-1 index files of tests/data/params_v1 with avq-plugin at main 417b657
(before the format bump), and the results they gave then. Kept for the record; it needs that
version to run."""

import os
import sys

import numpy as np

import avq_plugin
from avq_plugin.faiss import IndexAVQ, write_index

out = sys.argv[1]
assert avq_plugin._native.build_info()["format_version"] == 1
z = np.load(os.path.join(os.path.dirname(avq_plugin.__file__), "data", "glove50_20k.npz"))
X = z["train"][:1200, :16].astype(np.float32)
Q = z["test"][:20, :16].astype(np.float32)
cases = {
    # threshold "auto", num_leaves and the search budget left to the defaults (0 in the file)
    "cosine_auto": dict(metric="cosine"),
    "l2_none": dict(metric="l2", num_leaves=30, reorder="none", anisotropic_threshold=None),
    "dot_fixed": dict(metric="dot", num_leaves=20, anisotropic_threshold=1.5, leaves_to_search=7, reorder_k=40),
}
arrays = {"queries": Q}
for name, kw in cases.items():
    idx = avq_plugin.AVQIndex(seed=0, num_threads=1, **kw).fit(X)
    idx.save(f"{out}/{name}.avq")
    lts, rk = idx.default_search_params()
    D, I = idx.search(Q, k=10, leaves_to_search=lts, reorder_k=rk)
    arrays[f"{name}_D"], arrays[f"{name}_I"] = D, I
    arrays[f"{name}_budget"] = np.array([idx.num_leaves_, lts, rk])
    print(name, idx.num_leaves_, (lts, rk), idx._native_params()["threshold_mode"])
# IndexAVQ, L2 codes only (l2_decoded_norms), nprobe 3 of 10 leaves.
fx = IndexAVQ(16, 8, 4, 1, nlist=10, nprobe=3, seed=0)
fx.train(X)
fx.add(X)
write_index(fx, f"{out}/faiss_l2_ivf.avq")
arrays["faiss_l2_ivf_D"], arrays["faiss_l2_ivf_I"] = fx.search(Q, 10)
np.savez_compressed(f"{out}/expected.npz", **arrays)
