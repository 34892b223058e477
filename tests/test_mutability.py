"""add / remove / reset semantics, user ids, and padding when fewer than k results exist,
for AVQIndex and (same contract) ExactIndex."""

from __future__ import annotations

import numpy as np
import pytest

import avq_plugin

METRICS = ("dot", "cosine", "l2")
FLT_MAX = float(np.finfo(np.float32).max)


def pad(metric):
    return FLT_MAX if metric == "l2" else -FLT_MAX


def make(kind, metric, **kw):
    if kind == "exact":
        return avq_plugin.ExactIndex(metric)
    kw.setdefault("num_leaves", 16)
    if metric != "l2":
        kw.setdefault("eta", 4.0)
    return avq_plugin.AVQIndex(metric=metric, seed=0, **kw)


def full_budget(index):
    if isinstance(index, avq_plugin.ExactIndex):
        return {}
    return dict(leaves_to_search=index.num_leaves_, reorder_k=max(200, index.ntotal))


def value_of(metric, q, x):
    q = q.astype(np.float64)
    x = x.astype(np.float64)
    if metric == "cosine":
        return q @ x / np.linalg.norm(q) / np.linalg.norm(x)
    if metric == "l2":
        return np.sum((q - x) ** 2)
    return q @ x


@pytest.fixture(scope="module")
def data(synthetic):
    X, Q = synthetic
    return X[:2000].copy(), X[2000:2600].copy(), Q[:40].copy()


KINDS = ["avq", "exact"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("metric", METRICS)
def test_add_then_remove(kind, metric, data):
    X, extra, Q = data
    ids = np.arange(len(X), dtype=np.int64) * 2 + 1  # odd ids
    index = make(kind, metric).fit(X, ids=ids)
    vec = dict(zip(ids.tolist(), X))
    extra_ids = np.arange(len(extra), dtype=np.int64) * 2 + 10_000  # even ids
    index.add(extra, ids=extra_ids)
    vec.update(zip(extra_ids.tolist(), extra))
    assert index.ntotal == len(X) + len(extra)

    removed = np.concatenate([ids[::3], extra_ids[::4]])
    assert index.remove(removed) == len(removed)
    for i in removed.tolist():
        del vec[i]
    assert index.ntotal == len(vec)
    assert set(index.get_ids().tolist()) == set(vec)
    assert index.remove(removed) == 0  # already gone
    assert index.remove(np.array([removed[0], removed[0], 123456789])) == 0

    # Removed ids are never returned, even when searching with the removed vectors themselves
    # at an exhaustive budget.
    Qr = np.concatenate([X[::3][:40], extra[::4][:40], Q])
    D, I = index.search(Qr, k=30, **full_budget(index))
    assert not np.isin(I, removed).any()
    assert (I >= 0).all()
    # Every other id keeps its vector: each returned value matches the vector behind the id.
    for qi in range(0, len(Qr), 7):
        for j in range(0, 30, 6):
            want = value_of(metric, Qr[qi], vec[int(I[qi, j])])
            assert D[qi, j] == pytest.approx(want, rel=1e-4, abs=1e-5)
    # Self-retrieval of kept vectors (l2 distance 0 / cosine 1 puts the vector itself first).
    if metric in ("l2", "cosine"):
        kept = [i for i in ids[1:200:3].tolist() if i in vec]
        D, I = index.search(np.stack([vec[i] for i in kept]), k=1, **full_budget(index))
        assert (I[:, 0] == np.asarray(kept)).mean() >= 0.99
    if kind == "avq":
        remaining = np.asarray(sorted(vec))
        codes = index.get_codes(remaining)
        assert codes.shape == (len(remaining), index.num_blocks)
        with pytest.raises(ValueError, match="unknown id"):
            index.get_codes(removed[:1])


def test_kept_codes_unchanged_by_remove(data):
    X, _, _ = data
    index = make("avq", "dot").fit(X)
    ids = np.arange(len(X))
    before = index.get_codes(ids)
    gone = ids[::5]
    index.remove(gone)
    kept = np.setdiff1d(ids, gone)
    np.testing.assert_array_equal(index.get_codes(kept), before[kept])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("metric", METRICS)
def test_readd_removed_id(kind, metric, data):
    X, extra, _ = data
    index = make(kind, metric).fit(X)
    assert index.remove([5]) == 1
    index.add(extra[:1], ids=[5])  # a new vector under the old id
    assert 5 in set(index.get_ids().tolist())
    D, I = index.search(extra[:1], k=3, **full_budget(index))
    if metric != "dot":
        assert I[0, 0] == 5
    hit = I[0] == 5
    assert hit.any()
    assert D[0][hit][0] == pytest.approx(value_of(metric, extra[0], extra[0]), rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="already in the index"):
        index.add(extra[1:2], ids=[5])


@pytest.mark.parametrize("kind", KINDS)
def test_default_ids_continue_after_max(kind, data):
    X, extra, _ = data
    first = np.arange(100) * 10 + 7  # max id 997
    index = make(kind, "l2").fit(X[:100], ids=first)
    index.add(extra[:3])
    assert set(index.get_ids().tolist()) - set(first.tolist()) == {998, 999, 1000}
    index.add(extra[3:4], ids=[5000])
    index.add(extra[4:6])
    assert {5001, 5002} <= set(index.get_ids().tolist())
    # Removing the largest id does not recycle it.
    index.remove([5002])
    index.add(extra[6:7])
    assert 5003 in set(index.get_ids().tolist())
    assert 5002 not in set(index.get_ids().tolist())
    # fit() without ids numbers rows 0..n-1.
    index2 = make(kind, "l2").fit(X[:50])
    assert sorted(index2.get_ids().tolist()) == list(range(50))


def test_add_after_train_without_fit(data):
    X, extra, Q = data
    index = make("avq", "cosine").train(X)
    assert index.is_trained and index.ntotal == 0 and len(index) == 0
    D, I = index.search(Q[:2], k=4)
    assert (I == -1).all() and (D == -FLT_MAX).all()
    index.add(extra[:300])
    index.add(extra[300:])
    assert index.ntotal == len(extra)
    assert sorted(index.get_ids().tolist()) == list(range(len(extra)))
    D, I = index.search(extra[:20], k=1, **full_budget(index))
    assert (I[:, 0] == np.arange(20)).mean() >= 0.95
    # train() again drops the vectors and keeps nothing stale.
    index.train(X[:500])
    assert index.ntotal == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("metric", METRICS)
def test_reset(kind, metric, data):
    X, extra, Q = data
    index = make(kind, metric).fit(X)
    index.reset()
    assert index.ntotal == 0 and len(index) == 0 and index.get_ids().size == 0
    D, I = index.search(Q[:3], k=5)
    assert (I == -1).all()
    assert (D == pad(metric)).all()
    if kind == "avq":
        assert index.is_trained
    index.add(extra[:10])
    assert index.ntotal == 10
    assert sorted(index.get_ids().tolist()) == list(range(10))
    D, I = index.search(extra[:3], k=1, **full_budget(index))
    if metric != "dot":
        np.testing.assert_array_equal(I[:, 0], [0, 1, 2])


@pytest.mark.parametrize("kind", ["avq", "avq-int8", "avq-none", "exact"])
@pytest.mark.parametrize("metric", METRICS)
def test_k_larger_than_ntotal_pads(kind, metric, data):
    X, _, Q = data
    kw = {"reorder": kind.split("-")[1]} if "-" in kind else {}
    index = make(kind.split("-")[0], metric, num_leaves=4, **kw).fit(X[:7])
    D, I = index.search(Q[:5], k=12, **full_budget(index))
    assert D.shape == I.shape == (5, 12)
    assert D.dtype == np.float32 and I.dtype == np.int64
    assert (I[:, 7:] == -1).all()
    assert (D[:, 7:] == np.float32(pad(metric))).all()  # exactly +-FLT_MAX, not inf
    assert np.isfinite(D[:, 7:]).all()
    for row in I:
        assert sorted(row[:7].tolist()) == list(range(7))
    # Same after removals: fewer real results, more padding.
    index.remove([0, 1, 2])
    D, I = index.search(Q[:5], k=12, **full_budget(index))
    assert (I[:, 4:] == -1).all() and (D[:, 4:] == np.float32(pad(metric))).all()
    assert (I[:, :4] >= 3).all()


@pytest.mark.parametrize("metric", METRICS)
def test_padding_when_few_leaves_probed(metric, data):
    """Probing one small leaf widens the probe to the next best leaves until they hold k
    vectors (issue 11): every row is complete; padding only when the index holds fewer than k,
    and then only at the end."""
    X, _, Q = data
    index = make("avq", metric, num_leaves=100).fit(X[:400])
    D, I = index.search(Q, k=50, leaves_to_search=1)
    assert (I >= 0).all(), "a single small leaf must not leave rows short"
    index.remove(np.arange(360))
    D, I = index.search(Q, k=50, leaves_to_search=1)
    assert ((I >= 0).sum(axis=1) == 40).all()
    for drow, irow in zip(D, I):
        real = irow >= 0
        n = int(real.sum())
        assert real[:n].all() and not real[n:].any()
        assert (drow[n:] == np.float32(pad(metric))).all()


@pytest.mark.parametrize("kind", KINDS)
def test_negative_and_large_ids(kind, data):
    X, _, _ = data
    big = np.iinfo(np.int64).max
    ids = np.array([-5, 0, 2**40, big - 2], dtype=np.int64)
    index = make(kind, "l2", num_leaves=2).fit(X[:4], ids=ids)
    assert sorted(index.get_ids().tolist()) == sorted(ids.tolist())
    D, I = index.search(X[:4], k=1, **full_budget(index))
    np.testing.assert_array_equal(I[:, 0], ids)
    if kind == "avq":
        index.add(X[4:5])  # default ids continue after the largest: big - 1
        assert big - 1 in set(index.get_ids().tolist())
        with pytest.raises(ValueError, match="exhausted"):
            index.add(X[5:7])
        assert index.ntotal == 5


def test_memory_usage_tracks_content(data):
    X, extra, _ = data
    index = make("avq", "l2").fit(X)
    m0 = index.memory_usage()
    assert m0 > X.nbytes  # float32 reorder vectors are kept
    index.add(extra)
    m1 = index.memory_usage()
    assert m1 > m0
    trained_only = make("avq", "l2").train(X).memory_usage()
    assert trained_only < 0.1 * m0
    index.reset()
    # reset() drops every vector: the memory must go back near the trained-only size.
    assert index.memory_usage() < 0.5 * m0, (
        f"reset() kept the vectors' memory: {index.memory_usage()} bytes after reset, {m1} before, "
        f"{trained_only} for a freshly trained index"
    )


def test_exact_memory_usage_after_reset(data):
    X, _, _ = data
    e = avq_plugin.ExactIndex("l2").fit(np.tile(X, (5, 1)))
    m0 = e.memory_usage()
    assert m0 > 5 * X.nbytes
    e.reset()
    assert e.memory_usage() < 0.5 * m0, f"ExactIndex.reset() kept {e.memory_usage()} of {m0} bytes"


def test_properties_follow_content(data):
    X, extra, _ = data
    index = avq_plugin.AVQIndex(
        metric="dot", num_leaves=16, dims_per_block=3, eta=4.0, leaves_to_search=5, reorder_k=77, seed=0
    )
    assert not index.is_trained and index.ntotal == 0 and len(index) == 0 and index.d is None
    assert not index.is_mapped and index.memory_usage() == 0
    assert "untrained" in repr(index)
    index.fit(X)
    assert index.is_trained and index.ntotal == len(index) == len(X) and index.d == X.shape[1]
    assert index.num_leaves_ == 16
    assert index.num_blocks == -(-X.shape[1] // 3) and index.code_size == -(-index.num_blocks // 2)
    assert index.default_search_params() == (5, 77)
    assert f"ntotal={len(X)}" in repr(index)
    index.add(extra[:5])
    assert len(index) == len(X) + 5
    index.remove(np.arange(3))
    assert len(index) == len(X) + 2
    e = avq_plugin.ExactIndex("l2")
    assert e.ntotal == 0 and e.d is None and not e.is_trained
    e.add(X[:3])
    assert e.ntotal == len(e) == 3 and e.d == X.shape[1] and e.is_trained
    e.fit(X[:5])  # fit replaces the content
    assert e.ntotal == 5 and sorted(e.get_ids().tolist()) == list(range(5))


@pytest.mark.parametrize("reorder", ["float32", "float16", "int8"])
def test_many_small_adds_and_removes_keep_rows_consistent(reorder):
    """Leaves outgrow their room in the re-ranking store (they move; holes are compacted later):
    every stored row must stay attached to its id through adds, removes and a save/load."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((3000, 20)).astype(np.float32)
    index = avq_plugin.AVQIndex(metric="dot", num_leaves=8, reorder=reorder, seed=0).fit(X[:200])
    present = {i: X[i] for i in range(200)}
    next_id = 200
    for _ in range(40):
        batch = X[next_id : next_id + 70]
        ids = np.arange(next_id, next_id + len(batch))
        index.add(batch, ids=ids)
        present.update(zip(ids.tolist(), batch))
        next_id += len(batch)
        victims = rng.choice(sorted(present), size=25, replace=False)
        assert index.remove(victims) == 25
        for v in victims.tolist():
            del present[v]
    assert index.ntotal == len(present)
    probe_ids = np.array(sorted(present)[::37])
    for idx in (index, avq_plugin.AVQIndex.from_bytes(index.to_bytes())):
        Q = np.stack([present[i] for i in probe_ids])
        D, I = idx.search(Q, k=5, leaves_to_search=8, reorder_k=idx.ntotal)
        # Exhaustive re-ranking: the returned scores are the exact (or int8) inner products of
        # the returned ids' own vectors.
        exact = np.einsum("ij,ij->i", Q, np.stack([present[i] for i in I[:, 0]]))
        tol = 1e-4 if reorder == "float32" else 0.05 * np.abs(exact).max()
        assert np.allclose(D[:, 0], exact, atol=tol)
        assert set(I.ravel().tolist()) <= set(present)


@pytest.mark.parametrize("metric", METRICS)
def test_stored_float32_vectors_follow_add_and_remove(data, metric, tmp_path):
    """The native accessor of the re-ranking store (what tune() without X reads): by id or all in
    id order, the vectors given to add (normalised under cosine), through mutations and mmap."""
    X, extra, _ = data
    index = make("avq", metric).fit(X, ids=np.arange(len(X)) * 3 + 100)
    index.add(extra[:20], ids=np.arange(20) + 1)  # smaller ids than the first batch
    index.remove(np.array([100, 103, 5]))
    kept = {i * 3 + 100: X[i] for i in range(len(X)) if i * 3 + 100 not in (100, 103)}
    kept.update({i + 1: extra[i] for i in range(20) if i + 1 != 5})
    want_ids = np.array(sorted(kept), np.int64)
    want = np.stack([kept[i] for i in want_ids]).astype(np.float32)
    if metric == "cosine":
        want = want / np.linalg.norm(want.astype(np.float64), axis=1, keepdims=True).astype(np.float32)
    index.save(tmp_path / "a.avq")
    for copy_ in (index, avq_plugin.AVQIndex.load(tmp_path / "a.avq", mmap=True)):
        native = copy_._require_trained()
        ids, vectors = native.all_vectors()
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(vectors, want, rtol=1e-6, atol=1e-7)
        some = want_ids[[5, 0, 5, len(want_ids) - 1]]
        np.testing.assert_array_equal(native.get_vectors(some), vectors[[5, 0, 5, len(want_ids) - 1]])
        got_ids, got = copy_._stored_vectors(np.array([0, 3]))
        np.testing.assert_array_equal(got_ids, want_ids[[0, 3]])
        np.testing.assert_array_equal(got, vectors[[0, 3]])
        with pytest.raises(ValueError, match="unknown id 100"):
            native.get_vectors(np.array([8, 100], np.int64))
        with pytest.raises(ValueError, match="the index holds"):  # the copy is bounded by the store
            native.get_vectors(np.zeros(len(want_ids) + 1, np.int64))
        with pytest.raises(TypeError):
            native.get_vectors(np.array([8], np.int32))
    empty = make("avq", metric).train(X)._require_trained()
    ids, vectors = empty.all_vectors()
    assert ids.shape == (0,) and vectors.shape == (0, X.shape[1]) and vectors.dtype == np.float32
    for mode in ("int8", "none"):
        other = make("avq", metric, reorder=mode).fit(X)._require_trained()
        with pytest.raises(ValueError, match=f"reorder='{mode}' keeps no float32 vectors"):
            other.all_vectors()
        with pytest.raises(ValueError, match="keeps no float32 vectors"):
            other.get_vectors(np.array([0], np.int64))
