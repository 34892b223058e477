"""Export of an IndexAVQ's codebooks and codes into real Faiss indexes, and import from them.

Only these functions need the optional ``faiss`` extra (``pip install "avq-plugin[faiss]"``);
they are reached through :meth:`IndexAVQ.to_faiss` and :meth:`IndexAVQ.from_faiss`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _validation as V
from .index import _MAX_DSUB, METRIC_INNER_PRODUCT, METRIC_L2, IndexAVQ

__all__ = ["to_faiss", "from_faiss"]


def _import_faiss() -> ModuleType:
    try:
        import faiss
    except ImportError as exc:
        raise ImportError('this needs faiss: pip install "avq-plugin[faiss]" (faiss-cpu >= 1.8)') from exc
    return faiss


def _pack_codes(codes: npt.NDArray[np.uint8], code_size: int) -> npt.NDArray[np.uint8]:
    """(n, M) 4-bit codes -> (n, code_size) bytes, two per byte, low nibble first (Faiss's layout)."""
    n, M = codes.shape
    padded = np.zeros((n, code_size * 2), np.uint8)
    padded[:, :M] = codes
    return np.ascontiguousarray(padded[:, 0::2] | (padded[:, 1::2] << 4))


def _unpack_codes(packed: npt.ArrayLike, M: int) -> npt.NDArray[np.uint8]:
    """Inverse of _pack_codes: (n, ceil(M/2)) bytes -> (n, M) codes."""
    b = np.asarray(packed, np.uint8)
    out = np.empty((b.shape[0], b.shape[1] * 2), np.uint8)
    out[:, 0::2] = b & 0x0F
    out[:, 1::2] = b >> 4
    return np.ascontiguousarray(out[:, :M])


def _leaf_contents(index: IndexAVQ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """(ids, leaves, codes) of every stored vector, in storage order."""
    avq = index._avq
    ids = avq.get_ids()
    if ids.size == 0:
        return ids, np.zeros(0, np.int64), np.zeros((0, index.M), np.uint8)
    return ids, avq._get_leaves(ids), avq.get_codes(ids)


def to_faiss(index: IndexAVQ, fast_scan: bool = False, bbs: int = 32) -> Any:
    """A real Faiss index carrying the codebooks and codes of ``index`` (needs the ``faiss`` extra).

    Parameters
    ----------
    index : IndexAVQ
        A trained index.
    fast_scan : bool
        Return the FastScan variant (``IndexPQFastScan`` / ``IndexIVFPQFastScan``), built by
        Faiss from the plain one.
    bbs : int
        FastScan block size (a multiple of 32).

    Returns
    -------
    faiss.Index
        Exhaustive: ``faiss.IndexPQ`` whose centroids are our codewords plus the leaf centre,
        wrapped in ``faiss.IndexIDMap`` unless the ids are exactly 0 .. ntotal - 1. IVF:
        ``faiss.IndexIVFPQ`` (``by_residual=True``) whose flat coarse quantizer holds our
        leaf centres, with our ids; ``nprobe`` is copied. Faiss searches it with float
        lookup tables; the stored float32 vectors (``reorder_k``) are not exported.
    """
    faiss = _import_faiss()
    index._require_trained()
    fast_scan = bool(fast_scan)
    bbs = V.check_int("bbs", bbs, minimum=32)
    if bbs % 32:
        raise ValueError(f"bbs must be a multiple of 32, got {bbs}")
    L = index._avq.num_leaves_
    centres, codebooks = index._quantizer_arrays()
    ids, leaves, codes = _leaf_contents(index)
    packed = _pack_codes(codes, index.code_size)
    metric = index.metric_type
    if L == 1:
        folded = codebooks + centres[0].reshape(index.M, 1, index.dsub)
        pq_index = faiss.IndexPQ(index.d, index.M, 4, metric)
        faiss.copy_array_to_vector(np.ascontiguousarray(folded, np.float32).ravel(), pq_index.pq.centroids)
        pq_index.is_trained = True
        sequential = np.array_equal(np.sort(ids), np.arange(ids.size))
        if ids.size:
            order = np.argsort(ids, kind="stable") if sequential else np.arange(ids.size)
            faiss.copy_array_to_vector(np.ascontiguousarray(packed[order]).ravel(), pq_index.codes)
            pq_index.ntotal = int(ids.size)
        out = faiss.IndexPQFastScan(pq_index, bbs) if fast_scan else pq_index
        if not sequential:
            # IndexIDMap only wraps an empty index: wrap an empty placeholder, then point it
            # at the filled one (kept alive through referenced_objects, as faiss's wrappers do).
            wrapped = faiss.IndexIDMap(faiss.IndexPQ(index.d, index.M, 4, metric))
            wrapped.index = out
            wrapped.referenced_objects = [out]
            faiss.copy_array_to_vector(np.ascontiguousarray(ids[order], np.int64), wrapped.id_map)
            wrapped.ntotal = int(ids.size)
            out = wrapped
        return out
    quantizer = faiss.IndexFlatIP(index.d) if metric == METRIC_INNER_PRODUCT else faiss.IndexFlatL2(index.d)
    quantizer.add(np.ascontiguousarray(centres, np.float32))
    ivf = faiss.IndexIVFPQ(quantizer, index.d, L, index.M, 4, metric)
    ivf.by_residual = True
    faiss.copy_array_to_vector(np.ascontiguousarray(codebooks, np.float32).ravel(), ivf.pq.centroids)
    ivf.is_trained = True
    order = np.argsort(leaves, kind="stable")
    bounds = np.searchsorted(leaves[order], np.arange(L + 1))
    for leaf in range(L):
        sel = order[bounds[leaf] : bounds[leaf + 1]]
        if sel.size == 0:
            continue
        lid = np.ascontiguousarray(ids[sel], np.int64)
        lcodes = np.ascontiguousarray(packed[sel])
        ivf.invlists.add_entries(leaf, sel.size, faiss.swig_ptr(lid), faiss.swig_ptr(lcodes))
    ivf.ntotal = int(ids.size)
    ivf.precompute_table()
    ivf.nprobe = min(index.nprobe, L)
    if fast_scan:
        fs = faiss.IndexIVFPQFastScan(ivf, bbs)
        fs.nprobe = ivf.nprobe
        return fs
    return ivf


def from_faiss(
    index: Any,
    *,
    anisotropic_threshold: float | None = None,
    nprobe: int | None = None,
    num_threads: int | None = None,
    seed: int = 0,
) -> IndexAVQ:
    """An IndexAVQ that starts from a trained Faiss ``index`` (needs the ``faiss`` extra).

    Supported: ``faiss.IndexPQ`` (4-bit, ``d / M <= 8``), ``faiss.IndexIVFPQ`` with
    ``by_residual=True`` and a flat coarse quantizer, and either wrapped in
    ``faiss.IndexIDMap``. The Faiss codebooks (and coarse centroids) are taken as they are;
    the vectors already in the Faiss index keep Faiss's codes and ids (the raw vectors are
    not available to re-encode them). Vectors added afterwards are encoded with the
    anisotropic loss when ``anisotropic_threshold`` is a number T (ScaNN's recipe: k-means
    codebooks, anisotropic encoding; T = 0.2 * mean ||x|| is a good start for inner
    product), or by nearest codeword when it is None (Faiss's encoding).

    The result stores codes only (``reorder_k=None``).
    """
    faiss = _import_faiss()
    if not isinstance(index, faiss.Index):
        raise TypeError(f"from_faiss expects a faiss.Index, got {type(index).__name__}")
    # downcast_index returns a second proxy that does not own the object: keep the caller's
    # proxy (which owns it, and its quantizer) alive until we are done.
    owner = index  # noqa: F841
    index = faiss.downcast_index(index)
    id_map = None
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        id_map = faiss.vector_to_array(index.id_map).astype(np.int64)
        index = faiss.downcast_index(index.index)
    if anisotropic_threshold is not None:
        anisotropic_threshold = V.check_float("anisotropic_threshold", anisotropic_threshold, minimum=0.0)
    if isinstance(index, faiss.IndexIVFPQ) and not isinstance(index, faiss.IndexIVFPQFastScan):
        nlist = int(index.nlist)
    elif isinstance(index, faiss.IndexPQ):
        nlist = None
    else:
        raise TypeError(
            f"from_faiss supports faiss.IndexPQ and faiss.IndexIVFPQ (optionally in IndexIDMap), "
            f"got {type(index).__name__}"
        )
    pq = index.pq
    d, M, nbits = int(index.d), int(pq.M), int(pq.nbits)
    if nbits != 4:
        raise ValueError(f"the Faiss index uses {nbits}-bit codes; IndexAVQ supports 4-bit codes only")
    if d // M > _MAX_DSUB:
        raise ValueError(f"the Faiss index has d / M = {d // M} dimensions per sub-quantizer (at most {_MAX_DSUB})")
    if not index.is_trained:
        raise ValueError("the Faiss index is not trained")
    metric = int(index.metric_type)
    if metric not in (METRIC_INNER_PRODUCT, METRIC_L2):
        raise ValueError(f"unsupported Faiss metric {metric}: only inner product (0) and L2 (1)")
    obj = IndexAVQ(
        d,
        M,
        4,
        metric,
        nlist=nlist,
        nprobe=int(nprobe if nprobe is not None else getattr(index, "nprobe", 1)),
        anisotropic_threshold=anisotropic_threshold,
        reorder_k=None,
        num_threads=num_threads,
        seed=seed,
    )
    codebooks = faiss.vector_to_array(pq.centroids).astype(np.float32)
    if nlist is None:
        centres = np.zeros((1, d), np.float32)
        ntotal = int(index.ntotal)
        packed = faiss.vector_to_array(index.codes).reshape(ntotal, -1) if ntotal else np.zeros((0, 1), np.uint8)
        codes = _unpack_codes(packed, M)
        leaves = np.zeros(ntotal, np.int64)
        ids = np.arange(ntotal, dtype=np.int64)
    else:
        if not index.by_residual:
            raise ValueError("IndexIVFPQ with by_residual=False cannot be represented: AVQ leaves encode residuals")
        centres = np.ascontiguousarray(index.quantizer.reconstruct_n(0, nlist), np.float32)
        invlists = index.invlists
        cs = int(invlists.code_size)
        all_ids, all_codes, all_leaves = [], [], []
        for leaf in range(nlist):
            size = int(invlists.list_size(leaf))
            if size == 0:
                continue
            lid = faiss.rev_swig_ptr(invlists.get_ids(leaf), size).copy()
            lcodes = faiss.rev_swig_ptr(invlists.get_codes(leaf), size * cs).copy().reshape(size, cs)
            all_ids.append(lid.astype(np.int64))
            all_codes.append(lcodes)
            all_leaves.append(np.full(size, leaf, np.int64))
        ids = np.concatenate(all_ids) if all_ids else np.zeros(0, np.int64)
        codes = _unpack_codes(np.concatenate(all_codes), M) if all_codes else np.zeros((0, M), np.uint8)
        leaves = np.concatenate(all_leaves) if all_leaves else np.zeros(0, np.int64)
    if id_map is not None:
        if id_map.size != ids.size:
            raise ValueError("corrupted IndexIDMap: id_map and the index disagree on ntotal")
        ids = id_map[ids]
    avq = obj._avq
    # Codes only: L2 distances from the decoded vectors, as Faiss computes them.
    avq._init_from_quantizer(d, centres, codebooks)
    if ids.size:
        norms2 = None
        if metric == METRIC_L2:
            cb = codebooks.reshape(M, 16, d // M)
            dec = centres[leaves] + cb[np.arange(M)[None, :], codes].reshape(ids.size, d)
            norms2 = np.einsum("ij,ij->i", dec, dec).astype(np.float32)
        avq._add_codes(codes, leaves, ids, norms2)
    return obj
