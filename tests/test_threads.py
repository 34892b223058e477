"""Thread safety and thread-count independence: concurrent searches, searches racing
add/remove, and identical results whatever num_threads is."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import avq_plugin

METRICS = ("dot", "cosine", "l2")


@pytest.fixture(scope="module")
def indexes(synthetic):
    X, _ = synthetic
    return {
        m: avq_plugin.AVQIndex(metric=m, num_leaves=40, eta=None if m == "l2" else 4.0, seed=0).fit(X) for m in METRICS
    }


@pytest.mark.parametrize("metric", METRICS)
def test_concurrent_searches_match_sequential(indexes, synthetic, metric):
    _, Q = synthetic
    index = indexes[metric]
    chunks = [Q[i::4] for i in range(4)]
    budgets = [dict(leaves_to_search=2 + 3 * i, reorder_k=20 + 30 * i) for i in range(4)]
    expected = [index.search(c, k=10, num_threads=1, **b) for c, b in zip(chunks, budgets)]
    barrier = threading.Barrier(4)

    def work(i):
        barrier.wait()
        out = []
        for rep in range(5):
            out.append(index.search(chunks[i], k=10, num_threads=1 + (rep % 2), **budgets[i]))
        return out

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    for i in range(4):
        for D, I in results[i]:
            np.testing.assert_array_equal(I, expected[i][1])
            np.testing.assert_array_equal(D, expected[i][0])


def test_concurrent_exact_searches(synthetic):
    X, Q = synthetic
    e = avq_plugin.ExactIndex("l2").fit(X)
    ref = e.search(Q, k=5)

    def work(i):
        return e.search(Q, k=5, num_threads=1 + i % 2)

    with ThreadPoolExecutor(4) as pool:
        for D, I in pool.map(work, range(8)):
            np.testing.assert_array_equal(I, ref[1])
            np.testing.assert_array_equal(D, ref[0])


@pytest.mark.parametrize("kind", ["avq", "exact"])
def test_search_racing_add_and_remove(synthetic, kind):
    """Readers never crash and never see an id that was never in the index."""
    X, Q = synthetic
    base = X[:3000]
    if kind == "avq":
        index = avq_plugin.AVQIndex(metric="l2", num_leaves=30, seed=0).fit(base)
    else:
        index = avq_plugin.ExactIndex("l2").fit(base)
    ever = set(range(len(base)))
    ever_lock = threading.Lock()
    stop = threading.Event()
    errors = []
    seen_ids = []

    def writer():
        try:
            next_id = 100_000
            rng = np.random.default_rng(0)
            for step in range(40):
                n = 50
                new_ids = np.arange(next_id, next_id + n)
                with ever_lock:
                    ever.update(new_ids.tolist())  # announced before they become visible
                index.add(X[3000 + (step * n) % 4000 : 3000 + (step * n) % 4000 + n], ids=new_ids)
                next_id += n
                victims = rng.choice(np.asarray(index.get_ids()), size=30, replace=False)
                assert index.remove(victims) == 30
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    def reader(i):
        try:
            n = 0
            while not stop.is_set() or n < 3:
                kw = {} if kind == "exact" else dict(leaves_to_search=5, reorder_k=50)
                D, I = index.search(Q[i * 50 : (i + 1) * 50], k=20, num_threads=1 + i % 2, **kw)
                assert D.shape == I.shape == (50, 20)
                seen_ids.append(I.copy())
                real = I >= 0
                assert np.isfinite(D[real]).all()
                assert (D[~real] == np.finfo(np.float32).max).all()
                n += 1
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    assert len(seen_ids) >= 9
    with ever_lock:
        allowed = set(ever)
    for I in seen_ids:
        got = set(I[I >= 0].tolist())
        assert got <= allowed, f"ids never added: {sorted(got - allowed)[:5]}"
        assert (I >= -1).all()
    # Final state is consistent.
    final = index.get_ids()
    assert len(final) == len(set(final.tolist())) == index.ntotal == 3000 + 40 * 20


@pytest.mark.parametrize("metric", METRICS)
def test_thread_count_does_not_change_results(indexes, synthetic, metric):
    _, Q = synthetic
    index = indexes[metric]
    r1 = index.search(Q, k=10, num_threads=1)
    r2 = index.search(Q, k=10, num_threads=2)
    r4 = index.search(Q, k=10, num_threads=4)
    for r in (r2, r4):
        np.testing.assert_array_equal(r[1], r1[1])
        np.testing.assert_array_equal(r[0], r1[0])


@pytest.mark.parametrize("metric", METRICS)
def test_training_thread_count_does_not_change_index(synthetic, metric):
    X, _ = synthetic
    X = X[:3000]
    kw = dict(metric=metric, num_leaves=20, eta=None if metric == "l2" else 4.0, seed=4)
    a = avq_plugin.AVQIndex(num_threads=1, **kw).fit(X)
    b = avq_plugin.AVQIndex(num_threads=2, **kw).fit(X)
    assert a.to_bytes() == b.to_bytes()


def test_exact_thread_count(synthetic):
    X, Q = synthetic
    e = avq_plugin.ExactIndex("cosine").fit(X)
    a, b = e.search(Q, k=7, num_threads=1), e.search(Q, k=7, num_threads=2)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("metric", METRICS)
def test_single_query_equals_first_row(indexes, synthetic, metric):
    _, Q = synthetic
    index = indexes[metric]
    D, I = index.search(Q[:25], k=10)
    D1, I1 = index.search(Q[0], k=10)
    assert D1.shape == I1.shape == (1, 10)
    np.testing.assert_array_equal(I1[0], I[0])
    np.testing.assert_array_equal(D1[0], D[0])
    # Each row of a batch equals its own single search (batching does not change results).
    for j in (7, 24):
        Dj, Ij = index.search(Q[j], k=10)
        np.testing.assert_array_equal(Ij[0], I[j])
        np.testing.assert_array_equal(Dj[0], D[j])
    e = avq_plugin.ExactIndex(metric).fit(Q)
    np.testing.assert_array_equal(e.search(Q[3], k=4)[1][0], e.search(Q[:5], k=4)[1][3])


def test_gil_released_during_search(indexes, synthetic):
    """While one thread runs a long native search, another Python thread keeps running."""
    _, Q = synthetic
    index = indexes["l2"]
    big = np.repeat(Q, 20, axis=0)
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(1)
            done.wait(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        index.search(big, k=10, leaves_to_search=40, reorder_k=200, num_threads=1)
    finally:
        done.set()
        t.join()
    assert len(ticks) > 3
