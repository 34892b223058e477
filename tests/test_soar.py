"""SOAR spilling (spill="soar"): each vector has a second copy in another leaf; search finds it
through either leaf, never returns it twice; remove drops both copies; files keep the copies."""

from __future__ import annotations

import numpy as np
import pytest

import avq_plugin

METRICS = ("dot", "cosine", "l2")
REORDERS = ("float32", "float16", "int8", "none")
LEVELS = tuple(avq_plugin.build_info()["supported_simd_levels"])


def make_data(n=1500, d=24, nq=30, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((20, d)) * 1.5
    lab = rng.integers(0, 20, n + nq)
    X = (C[lab] + rng.standard_normal((n + nq, d))).astype(np.float32)
    return X[:n].copy(), X[n:].copy()


def fit(metric, reorder="float32", n=1500, d=24, lam=1.5, **kw):
    X, Q = make_data(n, d)
    idx = avq_plugin.AVQIndex(
        metric=metric, num_leaves=16, reorder=reorder, spill="soar", soar_lambda=lam, seed=1, num_threads=1, **kw
    )
    ids = np.arange(len(X), dtype=np.int64) * 7 + 3
    idx.fit(X, ids=ids)
    return idx, X, Q


def leaf_query(idx, leaf):
    """A query whose single best leaf is `leaf` (its probe centre)."""
    return np.asarray(idx._index.probe_centers()).reshape(-1, idx._index.d)[leaf].astype(np.float32)


def exact_scores(metric, q, X):
    if metric == "l2":
        return -((X - q) ** 2).sum(1)
    if metric == "cosine":
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    return X @ q


def top_of_leaf(idx, leaf, k, extra_leaves=0):
    """Ids returned for a query whose best leaf is `leaf`, probing it alone, all re-scored."""
    q = leaf_query(idx, leaf)
    D, I = idx.search(q[None], k=k, leaves_to_search=1 + extra_leaves, reorder_k=10000)
    return q, I[0][I[0] >= 0]


@pytest.mark.parametrize("metric", METRICS)
def test_found_through_either_leaf(metric):
    idx, X, _ = fit(metric)
    ids = np.arange(len(X), dtype=np.int64) * 7 + 3  # X's order
    prim = idx._index.get_leaves(ids)
    spill = idx._index.get_spill_leaves(ids)
    assert (spill >= 0).all(), "every vector has a spilled copy"
    assert (spill != prim).all(), "the copy is in another leaf"
    found_spilled = 0
    for leaf in range(16):
        # Probing one leaf with every candidate re-scored returns the exact top-k of the vectors
        # held there: its own and those spilled into it (k = its own count: no widening).
        members = np.flatnonzero((prim == leaf) | (spill == leaf))
        k = int((prim == leaf).sum())
        if k == 0:
            continue
        q, got = top_of_leaf(idx, leaf, k)
        sc = exact_scores(metric, q, X[members])
        want = set(ids[members[np.argsort(-sc, kind="stable")[:k]]].tolist())
        assert len(got) == k and len(set(got.tolist())) == k
        assert set(got.tolist()) == want
        found_spilled += int((spill[(got - 3) // 7] == leaf).sum())
    assert found_spilled > 0


def test_spill_beats_no_spill_at_equal_leaves():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4000, 32)).astype(np.float32)
    Q = rng.standard_normal((200, 32)).astype(np.float32)
    _, gt = avq_plugin.ExactIndex("dot").fit(X).search(Q, 10)
    rec = {}
    for spill in (None, "soar"):
        idx = avq_plugin.AVQIndex(metric="dot", num_leaves=40, spill=spill, seed=0, num_threads=1).fit(X)
        _, I = idx.search(Q, 10, leaves_to_search=3, reorder_k=100)
        rec[spill] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, gt)])
    assert rec["soar"] > rec[None] + 0.03, rec


@pytest.mark.parametrize("reorder", REORDERS)
@pytest.mark.parametrize("metric", METRICS)
def test_no_duplicates_and_complete(metric, reorder):
    idx, X, Q = fit(metric, reorder)
    n = len(X)
    # Every leaf probed and k = n: each vector exactly once.
    D, I = idx.search(Q[:3], k=n, leaves_to_search=16, reorder_k=n)
    for row in I:
        assert len(row) == n and (row >= 0).all()
        assert len(set(row.tolist())) == n
    # Few leaves, many candidates: no id twice, and as many results as distinct vectors there.
    for nl in (1, 2, 3):
        D, I = idx.search(Q, k=50, leaves_to_search=nl, reorder_k=60)
        for row in I:
            got = row[row >= 0]
            assert len(set(got.tolist())) == len(got)
        assert ((I >= 0).sum(axis=1) == 50).all()
    # Scores best first.
    D, I = idx.search(Q, k=20, leaves_to_search=4, reorder_k=80)
    if metric == "l2":
        assert (np.diff(D, axis=1) >= 0).all()
    else:
        assert (np.diff(D, axis=1) <= 0).all()


@pytest.mark.parametrize("metric", METRICS)
def test_remove_deletes_both_copies(metric):
    idx, X, Q = fit(metric)
    ids = np.asarray(idx._index.all_ids())
    rng = np.random.default_rng(5)
    gone = rng.choice(ids, 400, replace=False)
    prim = dict(zip(ids.tolist(), idx._index.get_leaves(ids).tolist()))
    spill = dict(zip(ids.tolist(), idx._index.get_spill_leaves(ids).tolist()))
    assert idx.remove(gone) == 400
    assert idx.remove(gone) == 0
    keep = np.setdiff1d(ids, gone)
    assert idx.ntotal == len(keep)
    # The survivors' copies were moved around by the removals: each leaf still returns the exact
    # top-k of its own survivors and the survivors spilled into it (nothing removed).
    vec = {i: X[(i - 3) // 7] for i in keep.tolist()}
    metric_ = idx.metric
    for leaf in range(16):
        members = [i for i in keep.tolist() if prim[i] == leaf or spill[i] == leaf]
        k = sum(prim[i] == leaf for i in keep.tolist())
        if k == 0:
            continue
        q, got = top_of_leaf(idx, leaf, k)
        sc = exact_scores(metric_, q, np.stack([vec[i] for i in members]))
        assert set(got.tolist()) == {members[j] for j in np.argsort(-sc, kind="stable")[:k]}
    np.testing.assert_array_equal(idx._index.get_spill_leaves(keep), [spill[i] for i in keep.tolist()])
    D, I = idx.search(Q, k=len(keep), leaves_to_search=16, reorder_k=len(keep))
    for row in I:
        assert set(row.tolist()) == set(keep.tolist())
    # Adding after removals: new vectors get both copies too.
    X2, _ = make_data(200, X.shape[1], seed=9)
    new = np.arange(200, dtype=np.int64) + 10**6
    idx.add(X2, ids=new)
    assert (idx._index.get_spill_leaves(new) >= 0).all()
    D, I = idx.search(Q[:2], k=idx.ntotal, leaves_to_search=16, reorder_k=idx.ntotal)
    for row in I:
        assert set(row.tolist()) == set(keep.tolist()) | set(new.tolist())


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("metric", METRICS)
def test_copies_survive_interleaved_updates(tmp_path, metric, mmap):
    """A leaf stores its own codes and then the codes of the copies spilled into it, in one buffer
    (codes.h): every add or remove that changes the first part moves the second. After many
    small adds and removes (sizes across the 32-vector groups), every copy still scores exactly
    as in an index given the same vectors in one add."""
    X, Q = make_data(2600, 24)
    idx = avq_plugin.AVQIndex(metric=metric, num_leaves=16, reorder="none", spill="soar", seed=1, num_threads=1).fit(
        X[:1000], ids=np.arange(1000)
    )
    if mmap:  # the first update copies the mapped codes (both sections) into memory
        idx.save(tmp_path / "i.avq")
        idx = avq_plugin.AVQIndex.load(tmp_path / "i.avq", mmap=True)
    rng = np.random.default_rng(3)
    start = 1000
    for size in (1, 31, 33, 64, 5, 200, 97, 1, 300):
        idx.add(X[start : start + size], ids=np.arange(start, start + size))
        start += size
        live = np.asarray(idx._index.all_ids())
        idx.remove(rng.choice(live, min(len(live) - 1, size // 2 + 17), replace=False))
    live = np.sort(np.asarray(idx._index.all_ids()))
    ref = avq_plugin.AVQIndex(metric=metric, num_leaves=16, reorder="none", spill="soar", seed=1, num_threads=1).fit(
        X[:1000], ids=np.arange(1000)
    )
    ref.reset()
    ref.add(X[live], ids=live)
    np.testing.assert_array_equal(idx._index.get_spill_leaves(live), ref._index.get_spill_leaves(live))
    np.testing.assert_array_equal(idx._index.get_codes(live), ref._index.get_codes(live))
    for nl in (1, 4):  # few leaves: many vectors are found only through their spilled copy
        D1, I1 = idx.search(Q, k=len(live), leaves_to_search=nl)
        D2, I2 = ref.search(Q, k=len(live), leaves_to_search=nl)
        for a, b, c, d in zip(D1, I1, D2, I2):
            assert dict(zip(b[b >= 0].tolist(), a[b >= 0].tolist())) == dict(
                zip(d[d >= 0].tolist(), c[d >= 0].tolist())
            )
    idx.save(tmp_path / "j.avq")  # and the file holds the same copies
    back = avq_plugin.AVQIndex.load(tmp_path / "j.avq")
    np.testing.assert_array_equal(back.search(Q, 50, 2)[1], idx.search(Q, 50, 2)[1])


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("metric", METRICS)
def test_save_load_round_trip(tmp_path, metric, mmap):
    idx, X, Q = fit(metric, "float32" if metric != "l2" else "int8", lam=0.7)
    idx.remove(np.asarray(idx._index.all_ids())[::5])
    path = tmp_path / "soar.avq"
    idx.save(path)
    back = avq_plugin.AVQIndex.load(path, mmap=mmap)
    assert back.spill == "soar" and back.soar_lambda == 0.7
    ids = np.asarray(idx._index.all_ids())
    np.testing.assert_array_equal(back._index.get_spill_leaves(ids), idx._index.get_spill_leaves(ids))
    for nl in (1, 3, 16):
        D1, I1 = idx.search(Q, k=10, leaves_to_search=nl, reorder_k=40)
        D2, I2 = back.search(Q, k=10, leaves_to_search=nl, reorder_k=40)
        np.testing.assert_array_equal(I1, I2)
        np.testing.assert_array_equal(D1, D2)
    # Bytes and pickle too; and the loaded index stays mutable (removal of both copies).
    again = avq_plugin.AVQIndex.from_bytes(back.to_bytes())
    np.testing.assert_array_equal(again.search(Q, 10, 3, 40)[1], idx.search(Q, 10, 3, 40)[1])
    assert back.remove(ids[:10]) == 10
    D, I = back.search(Q, k=back.ntotal, leaves_to_search=16, reorder_k=back.ntotal)
    assert set(I[0].tolist()) == set(ids[10:].tolist())


def test_memory_accounts_for_copies():
    X, _ = make_data(3000)
    plain = avq_plugin.AVQIndex(metric="dot", num_leaves=16, seed=1).fit(X)
    soar = avq_plugin.AVQIndex(metric="dot", num_leaves=16, seed=1, spill="soar").fit(X)
    extra = soar.memory_usage() - plain.memory_usage()
    per_copy = soar.code_size + 8 + 8  # code, id, primary reference
    assert len(X) * per_copy <= extra <= 2 * len(X) * per_copy + 16 * 24 * 4 * 4


def test_old_files_and_plain_indexes_have_no_soar_section(tmp_path):
    X, Q = make_data()
    plain = avq_plugin.AVQIndex(metric="dot", num_leaves=16, seed=1).fit(X)
    assert b"SOAR" not in plain.to_bytes()
    back = avq_plugin.AVQIndex.from_bytes(plain.to_bytes())
    assert back.spill is None
    assert (back._index.get_spill_leaves(np.arange(5, dtype=np.int64)) == -1).all()


def test_untrained_round_trip_keeps_settings():
    idx = avq_plugin.AVQIndex(metric="cosine", spill="soar", soar_lambda=2.5)
    import pickle

    back = pickle.loads(pickle.dumps(idx))
    assert back.spill == "soar" and back.soar_lambda == 2.5
    X, _ = make_data()
    back.fit(X)
    assert back._index.params().spill == "soar"
    assert back._index.params().soar_lambda == 2.5


def test_corrupted_soar_section_rejected():
    idx, X, Q = fit("dot")
    data = bytearray(idx.to_bytes())
    pos = data.find(b"SOAR")
    assert pos > 0
    # Flip one byte of the payload (a reference): the checksum catches it.
    data[pos + 64 + 40] ^= 0xFF
    with pytest.raises(ValueError):
        avq_plugin.AVQIndex.from_bytes(bytes(data))


def test_lambda_zero_is_second_nearest_and_lambda_changes_choice():
    idx0, X, _ = fit("l2", lam=0.0)
    ids = np.arange(len(X), dtype=np.int64) * 7 + 3  # X's order (fit's ids)
    # lambda = 0: the copy goes to the nearest residual centre other than the primary one.
    C = np.asarray(idx0._index.centers()).reshape(-1, X.shape[1])
    prim = idx0._index.get_leaves(ids)
    d2 = ((X[:, None, :] - C[None]) ** 2).sum(-1)
    d2[np.arange(len(X)), prim] = np.inf
    want = d2.argmin(1)
    got = idx0._index.get_spill_leaves(ids)
    assert (got == want).mean() > 0.99  # float32 ties aside
    idx3, _, _ = fit("l2", lam=3.0)
    assert (idx3._index.get_spill_leaves(ids) != got).mean() > 0.05


def test_bad_parameters():
    with pytest.raises(ValueError, match="spill"):
        avq_plugin.AVQIndex(spill="yes")
    with pytest.raises(ValueError, match="soar_lambda"):
        avq_plugin.AVQIndex(spill="soar", soar_lambda=-1)
    with pytest.raises(TypeError, match="soar_lambda"):
        avq_plugin.AVQIndex(spill="soar", soar_lambda="big")
    with pytest.raises(ValueError, match="soar_lambda"):
        avq_plugin.AVQIndex(spill="soar", soar_lambda=1e300)
    with pytest.raises(ValueError, match="soar_lambda"):
        avq_plugin.AVQIndex(spill="soar", soar_lambda=float("nan"))


def test_one_leaf_has_no_copies():
    X, Q = make_data(300)
    idx = avq_plugin.AVQIndex(metric="dot", num_leaves=1, spill="soar", seed=0).fit(X)
    ids = np.asarray(idx._index.all_ids())
    assert (idx._index.get_spill_leaves(ids) == -1).all()
    D, I = idx.search(Q, k=300, leaves_to_search=1, reorder_k=300)
    assert all(set(r.tolist()) == set(ids.tolist()) for r in I)


@pytest.mark.parametrize("metric", METRICS)
def test_identical_at_every_simd_level(metric):
    X, Q = make_data(900, 37, nq=25, seed=4)
    out = {}
    before = avq_plugin.simd_level()
    try:
        for level in LEVELS:
            avq_plugin.set_simd_level(level)
            idx = avq_plugin.AVQIndex(
                metric=metric, num_leaves=12, dims_per_block=3, spill="soar", eta=4.0, seed=2, num_threads=1
            ).fit(X)
            ids = np.asarray(idx._index.all_ids())
            res = [idx.search(Q, k=10, leaves_to_search=nl, reorder_k=30) for nl in (1, 3)]
            out[level] = (idx._index.get_spill_leaves(ids), idx._index.get_codes(ids), res)
    finally:
        avq_plugin.set_simd_level(before)
    ref = out[LEVELS[0]]
    for level in LEVELS[1:]:
        np.testing.assert_array_equal(out[level][0], ref[0])
        np.testing.assert_array_equal(out[level][1], ref[1])
        for (D1, I1), (D2, I2) in zip(out[level][2], ref[2]):
            np.testing.assert_array_equal(I1, I2)
            np.testing.assert_array_equal(D1, D2)
