"""ShardedAVQIndex on a real Dask LocalCluster (2 worker processes on loopback).

The cluster is started once for the module and closed at its end. Data: the shipped GloVe
subset (20,000 x 50, cosine).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import sys
import threading
import time

import cloudpickle
import dask
import dask.array as da
import h5py
import numpy as np
import pytest
from distributed import Client, LocalCluster, WorkerPlugin
from threadpoolctl import threadpool_limits

from avq_plugin import ExactIndex
from avq_plugin.datasets import load_glove_subset
from avq_plugin.distributed import (
    MANIFEST_NAME,
    ShardedAVQIndex,
    ShardLostError,
    merge_rows,
    merge_topk,
    serving_config,
)
from avq_plugin.distributed.placement import (
    MAX_IMBALANCE,
    balanced_bins,
    balanced_leaf_groups,
    place_leaves,
    place_shards,
    refine_leaf_groups,
    route_queries,
    scan_load,
)

FLT_MAX = float(np.finfo(np.float32).max)


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """The leaf placement (in this process, the client) runs small dense linear algebra (at most
    a few hundred leaves here). When another process holds the second core, OpenBLAS's threads
    spin for it: the placement test took 7.9 s instead of 0.9 s with one BLAS thread."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def glove():
    ds = load_glove_subset()
    return ds.train, ds.test[:200]


def ensure_two_workers(client):
    """Waits for the nanny to restart a killed worker. Under load, Dask's restart can race the
    scheduler's cleanup of the dead worker and the nanny then gives up: replace such a nanny."""
    try:
        client.wait_for_workers(2, timeout=30)
        return
    except TimeoutError:
        pass
    cluster = client.cluster
    for name, nanny in list(cluster.workers.items()):
        if nanny.status.name in ("closed", "closing", "failed"):
            del cluster.workers[name]
    cluster.scale(2)
    client.wait_for_workers(2, timeout=60)


@pytest.fixture(scope="module")
def client():
    # The worker plugin below is defined in this module, which the workers cannot import (pytest
    # imports it with importlib): ship it by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # Worker processes forked from a server that has Dask and NumPy imported already (as Dask's
    # own test suite does): the cluster starts, and a killed worker comes back, in about half the
    # time of a fresh interpreter per worker ("spawn", the default).
    # Started under serving_config(), as docs/dask.md recommends for serving (and checked below).
    with (
        dask.config.set({"distributed.worker.multiprocessing-method": "forkserver", **serving_config()}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def sharded(client, glove):
    X, _ = glove
    # 8 row chunks, 4 shards: the training sample comes from every chunk, shards span chunks.
    return ShardedAVQIndex(sharding="rows", metric="cosine", n_shards=4, client=client).fit(
        da.from_array(X, chunks=(2500, 50))
    )


def single_like(sharded, X):
    """One AVQIndex over all of X with the sharded index's quantizer (ids = row numbers)."""
    index = sharded.trained_index()
    index.num_threads = 1
    return index.add(X, np.arange(X.shape[0], dtype=np.int64))


class ExitOnSearch(WorkerPlugin):
    """Kills the first worker process that starts a shard search (once per flag file: creating
    the file with O_EXCL elects exactly one victim across the worker processes). Row shards are
    searched by tasks (caught by their transition); leaf shards by a call on the worker's search
    actor, which runs ``worker.search`` (replaced here while the plugin is registered)."""

    name = "avq-test-exit-on-search"

    def __init__(self, flag):
        self.flag = str(flag)

    def _exit_once(self):
        try:
            os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os._exit(1)

    def setup(self, worker):
        from avq_plugin.distributed import worker as W

        self._search = search = W.search

        def exit_then_search(*args, **kwargs):
            self._exit_once()
            return search(*args, **kwargs)

        W.search = exit_then_search

    def teardown(self, worker):
        from avq_plugin.distributed import worker as W

        W.search = self._search

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith("avq-search"):
            self._exit_once()


def search_with_worker_killed(client, index, Q, flag, **kw):
    """index.search(Q) while a worker dies in the middle of it; returns (D, I), dead address."""
    ensure_two_workers(client)
    before = set(client.scheduler_info(n_workers=-1)["workers"])
    client.register_plugin(ExitOnSearch(flag))
    try:
        result = index.search(Q, **kw)
    finally:
        client.unregister_worker_plugin(ExitOnSearch.name)
    dead = before - set(client.scheduler_info(n_workers=-1)["workers"])
    assert len(dead) == 1 and os.path.exists(flag), "no worker was killed during the search"
    return result, dead.pop()


# ---------------------------------------------------------------------------------- Dask settings
def test_serving_config_is_dasks_and_reaches_the_cluster(client):
    """Every key of serving_config() is one of Dask's (a misspelt or renamed key would be set and
    ignored), and the module's cluster, started under it, runs with it: no profiler on the
    workers, the slower tick in every process."""
    cfg = serving_config()
    assert cfg and cfg is not serving_config()  # a copy each time
    defaults = dask.config.merge(*dask.config.defaults)
    for key in cfg:
        dask.config.get(key, config=defaults)  # KeyError when Dask has no such setting
    tick = dask.utils.parse_timedelta(cfg["distributed.admin.tick.interval"])
    assert tick > dask.utils.parse_timedelta(dask.config.get("distributed.admin.tick.interval", config=defaults))

    def observed(dask_worker):
        return "profile" in dask_worker.periodic_callbacks, dask_worker._tick_interval

    for profiling, interval in client.run(observed).values():
        assert not profiling and interval == tick
    assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler._tick_interval) == tick


def test_an_index_without_a_client_starts_its_cluster_under_serving_config(monkeypatch):
    """With no client given and none current, the index starts a local cluster of its own, and
    does so under serving_config() (the settings seen when Client() runs)."""
    from avq_plugin.distributed import base

    def no_default_client():
        raise ValueError("No clients found")

    seen = {}

    def fake_client():
        seen.update({key: dask.config.get(key) for key in serving_config()})
        return "client"

    monkeypatch.setattr(base, "default_client", no_default_client)
    monkeypatch.setattr(base, "Client", fake_client)
    before = {key: dask.config.get(key) for key in serving_config()}
    with dask.config.set({key: "before" for key in serving_config()}):
        index = ShardedAVQIndex(metric="cosine", n_shards=2)
        assert index.client == "client" and seen == serving_config()
        assert all(dask.config.get(key) == "before" for key in serving_config())  # only while starting it
    assert {key: dask.config.get(key) for key in serving_config()} == before


# ---------------------------------------------------------------------------------- merging
def test_merge_topk_orders_ties_by_id_and_pads_last():
    D1 = np.array([[0.9, 0.5, -FLT_MAX]], np.float32)
    I1 = np.array([[7, 3, -1]], np.int64)
    D2 = np.array([[0.9, 0.7, 0.5]], np.float32)
    I2 = np.array([[2, 11, 1]], np.int64)
    D, I = merge_topk([D1, D2], [I1, I2], 5, "dot")
    assert I.tolist() == [[2, 7, 11, 1, 3]]
    assert D[0].tolist() == pytest.approx([0.9, 0.9, 0.7, 0.5, 0.5])
    # l2: smaller is better; padding (+FLT_MAX) last, even when k exceeds the candidates.
    D, I = merge_topk([np.array([[1.0, FLT_MAX]], np.float32)], [np.array([[4, -1]])], 3, "l2")
    assert I.tolist() == [[4, -1, -1]] and D[0, 1] == FLT_MAX and D[0, 2] == FLT_MAX
    # A padding entry never beats a real one, whatever its score field says.
    D, I = merge_topk(
        [np.array([[5.0]], np.float32), np.array([[1.0]], np.float32)], [np.array([[-1]]), np.array([[9]])], 1, "dot"
    )
    assert I.tolist() == [[9]]


def test_merge_topk_equals_one_sorted_list():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 30, size=(50, 400)).astype(np.float32)  # many ties
    ids = np.stack([rng.permutation(400) for _ in range(50)]).astype(np.int64)
    parts = np.array_split(np.arange(400), 5)
    Dp, Ip = [], []
    for p in parts:  # per-shard top-10 by (score desc, id asc)
        o = np.lexsort((ids[:, p], -scores[:, p]), axis=1)[:, :10]
        Dp.append(np.take_along_axis(scores[:, p], o, 1))
        Ip.append(np.take_along_axis(ids[:, p], o, 1))
    D, I = merge_topk(Dp, Ip, 10, "dot")
    o = np.lexsort((ids, -scores), axis=1)[:, :10]
    np.testing.assert_array_equal(I, np.take_along_axis(ids, o, 1))
    np.testing.assert_array_equal(D, np.take_along_axis(scores, o, 1))


def test_merge_rows_equals_merge_topk_on_the_rows_answered():
    rng = np.random.default_rng(1)
    nq, k = 40, 5
    parts, full_D, full_I = [], [], []
    for _ in range(3):
        rows = np.sort(rng.choice(nq, size=25, replace=False))
        D = -np.sort(-rng.integers(0, 6, size=(len(rows), k)).astype(np.float32), axis=1)  # ties
        I = rng.permutation(10000)[: len(rows) * k].reshape(len(rows), k).astype(np.int64)
        I[0, -1] = -1  # a padded entry
        D[0, -1] = -FLT_MAX
        parts.append((rows, D, I))
        Df = np.full((nq, k), -FLT_MAX, np.float32)
        If = np.full((nq, k), -1, np.int64)
        Df[rows], If[rows] = D, I
        full_D.append(Df)
        full_I.append(If)
    D, I = merge_rows(nq, k, parts, "dot")
    D1, I1 = merge_topk(full_D, full_I, k, "dot")
    hits = np.zeros(nq, int)
    for rows, _, _ in parts:
        hits[rows] += 1
    multi = hits > 1  # rows answered once keep that part's own order
    np.testing.assert_array_equal(I[multi], I1[multi])
    np.testing.assert_array_equal(D[multi], D1[multi])
    assert np.all(I[hits == 0] == -1) and np.all(D[hits == 0] == -FLT_MAX)
    for rows, _, Ip in parts:
        one = hits[rows] == 1
        np.testing.assert_array_equal(I[rows[one]], Ip[one])
    with pytest.raises(ValueError, match="row 40 is outside"):
        merge_rows(nq, k, [(np.array([40]), D[:1], I[:1])], "dot")
    with pytest.raises(ValueError, match="do not match"):
        merge_rows(nq, k, [(np.arange(2), D[:3], I[:3])], "dot")


def _merged_reference(lists, k, metric):
    """Brute force: every (score, id) of a query once per id (its best score), sorted."""
    sign = 1.0 if metric == "l2" else -1.0
    best = {}
    for d, i in lists:
        for score, ident in zip(d.tolist(), i.tolist()):
            if ident >= 0 and (ident not in best or sign * score < sign * best[ident]):
                best[ident] = score
    top = sorted(best.items(), key=lambda t: (sign * t[1], t[0]))[:k]
    pad = FLT_MAX if metric == "l2" else -FLT_MAX
    return [s for _, s in top] + [pad] * (k - len(top)), [i for i, _ in top] + [-1] * (k - len(top))


@pytest.mark.parametrize("metric", ["dot", "l2"])
@pytest.mark.parametrize("k", [4, 30, 40])  # 40: repeated ids found by a sort (beyond 32)
def test_merge_counts_an_id_from_several_shards_once(metric, k):
    """SOAR spilling stores a vector in two leaves, which may be on two shards: both return it."""
    rng = np.random.default_rng(2)
    nq, n_parts = 30, 3
    best_first = np.sort if metric == "l2" else (lambda a, axis: -np.sort(-a, axis=axis))
    parts = []
    for _ in range(n_parts):
        rows = np.sort(rng.choice(nq, size=20, replace=False))
        D = best_first(rng.integers(0, 8, size=(len(rows), k)).astype(np.float32), axis=1)  # ties
        # Ids from a small pool: the same id often comes from two or three parts, with other scores.
        I = np.stack([rng.choice(2 * k, size=k, replace=False) for _ in rows]).astype(np.int64)
        I[1, -1], D[1, -1] = -1, (FLT_MAX if metric == "l2" else -FLT_MAX)
        parts.append((rows, D, I))
    D, I = merge_rows(nq, k, parts, metric)
    for q in range(nq):
        lists = [(d[r == q][0], i[r == q][0]) for r, d, i in parts if (r == q).any()]
        if len(lists) < 2:
            continue
        want_D, want_I = _merged_reference(lists, k, metric)
        assert I[q].tolist() == want_I, q
        assert D[q].tolist() == pytest.approx(want_D), q
        assert len(set(I[q][I[q] >= 0].tolist())) == (I[q] >= 0).sum()
        # merge_topk, on the same lists, gives the same answer.
        Dt, It = merge_topk([x[0][None] for x in lists], [x[1][None] for x in lists], k, metric)
        assert It[0].tolist() == want_I and Dt[0].tolist() == pytest.approx(want_D)


def test_leaf_placement_is_balanced_and_keeps_neighbours_together():
    rng = np.random.default_rng(0)
    # 8 well separated clusters of 16 leaves each; queries probe leaves of one cluster.
    centres = np.concatenate([rng.normal(size=(1, 8)) * 10 + rng.normal(size=(16, 8)) for _ in range(8)])
    counts = rng.integers(50, 150, size=len(centres))
    for S in (1, 3, 8):
        g = balanced_leaf_groups(centres, counts, S)
        assert set(g.tolist()) == set(range(S))
        sizes = np.bincount(g, weights=counts, minlength=S)
        assert sizes.max() - sizes.min() <= 2 * counts.max()
    g = balanced_leaf_groups(centres, counts, 8)
    probes = np.stack(
        [rng.choice(np.arange(c * 16, c * 16 + 16), size=6, replace=False) for c in rng.integers(0, 8, 500)]
    )
    before = np.mean([len(set(g[p].tolist())) for p in probes])
    g2 = refine_leaf_groups(g, probes, counts, 8, max_imbalance=0.2)
    after = np.mean([len(set(g2[p].tolist())) for p in probes])
    assert after <= before and after < 1.5
    sizes = np.bincount(g2, weights=counts, minlength=8)
    assert sizes.max() <= counts.sum() / 8 * 1.2 + 1e-9 and sizes.min() >= counts.sum() / 8 * 0.8 - 1e-9
    with pytest.raises(ValueError, match="n_shards"):
        balanced_leaf_groups(centres, counts, len(centres) + 1)


def test_routing_splits_the_budget_by_rank_weighted_counts_and_lists_leaves_in_probe_order():
    # 6 leaves on 3 shards: leaf -> shard 0 0 1 1 2 2, sizes 300 10 200 40 0 50.
    leaf_to_shard = np.array([0, 0, 1, 1, 2, 2])
    sizes = np.array([300, 10, 200, 40, 0, 50])
    P = np.array(
        [
            [0, 2, 4],  # weights 300, 200 / 2, 0: budgets 75, 25, at least 1
            [3, 1, -1],  # padding skipped: weights 40 / 1, 10 / 2 (shards 1 then 0)
            [-1, -1, -1],  # no leaf: no shard
            [5, 3, 2],  # one shard twice: its leaves in probe order
        ]
    )
    jobs, visited, total = route_queries(P, leaf_to_shard, sizes, 3, 100)
    assert visited.tolist() == [3, 2, 0, 2] and total.tolist() == [500, 50, 0, 290]
    rows, leaves, budget, scanned_sum, scanned = jobs[0]
    # query 1: 50 candidates <= reorder_k: every shard gets the whole budget (exact)
    assert rows.tolist() == [0, 1] and leaves.tolist() == [[0], [1]] and budget.tolist() == [75, 100]
    assert scanned.tolist() == [300, 10] and scanned_sum == 310
    rows, leaves, budget, _, scanned = jobs[1]
    assert rows.tolist() == [0, 1, 3] and leaves.tolist() == [[2, -1], [3, -1], [3, 2]]
    # query 3: weights 50, 40 / 2 + 200 / 3 of 136.67: shares 0.366 and 0.634
    assert budget.tolist() == [25, 100, 64] and scanned.tolist() == [200, 40, 240]
    rows, leaves, budget, _, _ = jobs[2]
    assert rows.tolist() == [0, 3] and leaves.tolist() == [[4], [5]] and budget.tolist() == [1, 37]
    # compact: the same jobs with each shard's leaves as offsets and a flat list (no padding).
    compact = route_queries(P, leaf_to_shard, sizes, 3, 100, compact=True)[0]
    assert sorted(compact) == sorted(jobs)
    for s, (rows, offsets, flat, budget, scanned_sum, scanned) in compact.items():
        padded = jobs[s][1]
        assert offsets[0] == 0 and offsets[-1] == len(flat) and len(offsets) == len(rows) + 1
        for r in range(len(rows)):
            row = padded[r][padded[r] >= 0]
            assert flat[offsets[r] : offsets[r + 1]].tolist() == row.tolist()
        assert rows.tolist() == jobs[s][0].tolist() and budget.tolist() == jobs[s][2].tolist()
        assert scanned_sum == jobs[s][3] and scanned.tolist() == jobs[s][4].tolist()
    assert compact[1][1].tolist() == [0, 1, 2, 4] and compact[1][2].tolist() == [2, 3, 3, 2]
    # The same routing for another n_shards that leaves shard 3 empty: no job for it.
    assert sorted(route_queries(P, leaf_to_shard, sizes, 4, 100)[0]) == [0, 1, 2]
    # One budget per query (leaf_margin): each query's split is that of its own budget alone.
    per_query = np.array([100, 30, 7, 250])
    jobs_q = route_queries(P, leaf_to_shard, sizes, 3, per_query)[0]
    for i, rk in enumerate(per_query):
        alone = route_queries(P[i : i + 1], leaf_to_shard, sizes, 3, int(rk))[0]
        for s, job in alone.items():
            at = jobs_q[s][0].tolist().index(i)
            assert jobs_q[s][2][at] == job[2][0], (i, s)
    assert jobs_q[0][2].tolist() == [75, 4] and jobs_q[1][2].tolist() == [25, 27, 159]
    for bad, match in (
        ((P, leaf_to_shard, sizes, 3, np.array([100, 100])), "one value or one per query"),
        ((P, leaf_to_shard, sizes, 3, np.array([100, 0, 1, 1])), "reorder_k"),
        ((np.array([[6, 0, 1]]), leaf_to_shard, sizes, 3, 100), "leaf 6 is out of range"),
        ((P, np.array([0, 0, 1, 1, 2, 3]), sizes, 3, 100), "leaf 5 belongs to no shard"),
        ((P, leaf_to_shard, np.array([300, 10, -1, 40, 0, 50]), 3, 100), "leaf 2 has a size outside"),
        ((P, leaf_to_shard, sizes, 7, 100), "n_shards"),
        ((P, leaf_to_shard, sizes, 3, 0), "reorder_k"),
        ((P, leaf_to_shard[:5], sizes, 3, 100), "one length"),
    ):
        with pytest.raises(ValueError, match=match):
            route_queries(*bad)


def test_packed_search_message_round_trips_in_the_smallest_types():
    """A worker's jobs travel as five flat arrays (``wire.pack_jobs``): unpacked, the same jobs in
    the native search's types; leaf numbers in int16 up to 32767 leaves, int32 above; result ids
    as int32 when they fit; a message that does not match its spec raises."""
    from avq_plugin.distributed.wire import compact_ids, pack_jobs, unpack_jobs

    rng = np.random.default_rng(0)
    jobs = []
    for j, n in ((3, 5), (7, 1), (8, 4)):
        counts = rng.integers(1, 6, n)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        leaves = rng.integers(0, 40000, offsets[-1]).astype(np.int32)
        rows = np.sort(rng.choice(20, n, replace=False)).astype(np.int64)
        jobs.append((j, rows, leaves, rng.integers(1, 2**32 - 1, n, dtype=np.int64), j // 4, offsets))
    for num_leaves, leaf_type in ((300, np.int16), (40000, np.int32)):
        small = [(j, r, lv % num_leaves, b, g, o) for j, r, lv, b, g, o in jobs]
        packed = pack_jobs(small, 20, num_leaves)
        assert packed[3].dtype == leaf_type and packed[2].dtype == leaf_type and packed[1].dtype == np.int32
        assert packed[4].dtype == np.uint32 and packed[0].tolist() == [[3, 0, 5], [7, 1, 1], [8, 2, 4]]
        back = unpack_jobs(packed)
        assert len(back) == len(small)
        for got, want in zip(back, small):
            assert got[0] == want[0] and got[4] == want[4]
            for a, b in zip(got[1:4] + got[5:], want[1:4] + want[5:]):
                assert a.dtype == b.dtype and a.tolist() == b.tolist()
    assert unpack_jobs(pack_jobs([], 0, 10)) == []
    spec, rows, counts, leaves, budgets = pack_jobs(jobs, 20, 40000)
    for bad in (
        (spec[:, :2], rows, counts, leaves, budgets),
        (spec, rows[:-1], counts, leaves, budgets),
        (spec, rows, counts, leaves[:-1], budgets),
        (spec * np.array([1, 1, 2]), rows, counts, leaves, budgets),
    ):
        with pytest.raises(ValueError, match="does not match its spec"):
            unpack_jobs(bad)
    ids = np.array([[5, 2**31 - 1, -1]])
    assert compact_ids(ids).dtype == np.int32 and compact_ids(ids).tolist() == ids.tolist()
    assert compact_ids(ids + 1).dtype == np.int64


def test_leaf_placement_bounded_imbalance_deterministic_and_better_than_the_bisection():
    rng = np.random.default_rng(1)
    # 240 leaves in 12-d, queries probing their 12 nearest centres (overlapping neighbourhoods,
    # as in real data), uneven leaf sizes; 6 shards.
    centres = rng.normal(size=(240, 12))
    counts = rng.integers(20, 400, size=240)
    queries = rng.normal(size=(3000, 12))
    probes = np.argsort(((queries[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)[:, :12]

    def visits(g):
        return np.mean([len(set(g[p].tolist())) for p in probes])

    start = balanced_leaf_groups(centres, counts, 6, probes)
    g = place_leaves(centres, counts, probes, 6)
    assert np.array_equal(g, place_leaves(centres, counts, probes, 6))  # deterministic for the seed
    assert set(g.tolist()) == set(range(6))
    target = counts.sum() / 6
    sizes = np.bincount(g, weights=counts, minlength=6)
    start_sizes = np.bincount(start, weights=counts, minlength=6)
    # Within the stated limit (or, for a group the bisection left outside it, no further out).
    assert sizes.max() <= max(target * (1 + MAX_IMBALANCE), start_sizes.max()) + 1e-9
    assert sizes.min() >= min(target * (1 - MAX_IMBALANCE), start_sizes.min()) - 1e-9
    assert visits(g) < visits(start) - 0.05
    tight = place_leaves(centres, counts, probes, 6, max_imbalance=0.01, rounds=2, seed=3)
    tight_sizes = np.bincount(tight, weights=counts, minlength=6)
    assert tight_sizes.max() <= max(target * 1.01, start_sizes.max()) + 1e-9
    assert visits(tight) <= visits(start)


def test_shard_placement_balances_the_scan_load_of_every_worker():
    rng = np.random.default_rng(2)
    # Leaves in 8-d; queries crowd one region, so the leaves there are probed far more often
    # than their size says (a placement balanced by vectors only loads one shard much more).
    centres = rng.normal(size=(200, 8))
    counts = rng.integers(50, 300, size=200)
    queries = np.concatenate([rng.normal(size=(1500, 8)), rng.normal(size=(1500, 8)) * 0.5 + 1.0])
    probes = np.argsort(((queries[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)[:, :10]
    load = scan_load(counts, probes)
    assert load.sum() == pytest.approx(np.mean([counts[p].sum() for p in probes]))

    def spread(g, S, w):  # max / mean of the groups' sums
        s = np.bincount(g, weights=w, minlength=S)
        return s.max() / s.mean(), s.min() / s.mean()

    vectors_only = place_leaves(centres, counts, probes, 2)
    assert spread(vectors_only, 2, load)[0] > 1.15  # the case the load limit is for
    # One shard per worker: both the vectors and the scan load within MAX_IMBALANCE.
    for S in (2, 3):
        g, home = place_shards(centres, counts, probes, S, n_workers=S)
        assert home == list(range(S))
        for w in (counts, load):
            hi, lo = spread(g, S, w)
            assert hi <= 1 + MAX_IMBALANCE + 1e-9 and lo >= 1 - MAX_IMBALANCE - 1e-9
        assert np.array_equal(g, place_shards(centres, counts, probes, S, n_workers=S)[0])  # deterministic
    # More shards than workers: no shard above a worker's share of the load (here the crowded
    # region is more than half of it), the shards combined per worker by load.
    for S in (4, 8, 16):
        g, home = place_shards(centres, counts, probes, S, n_workers=2)
        shard_load = np.bincount(g, weights=load, minlength=S)
        assert shard_load.max() <= load.sum() / 2 * (1 + MAX_IMBALANCE) + 1e-9
        assert spread(g, S, counts)[0] <= 1 + MAX_IMBALANCE + 1e-9
        per_worker = np.bincount(home, weights=shard_load, minlength=2)
        round_robin = np.bincount(np.arange(S) % 2, weights=shard_load, minlength=2)
        assert per_worker.max() <= round_robin.max() and per_worker.max() / per_worker.mean() < 1.1

        # A worker searches its shards of a query as one: the shards are placed so that the
        # sample queries visit fewer workers than with the load balance alone.
        def workers_visited(h, g=g):
            w = np.asarray(h)[g[probes]]
            return np.mean([len(set(r)) for r in w.tolist()])

        assert workers_visited(home) <= workers_visited(balanced_bins(shard_load, 2))
    # Four shards of equal load, queries probing shards {0, 1} or {2, 3}: the load balance alone
    # puts 0 and 2 on one worker (every query visits both workers); the search moves them apart.
    from avq_plugin.distributed.placement import _home_by_coprobe

    leaf_shard = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    pairs = np.array([[0, 2], [1, 3], [4, 6], [5, 7]] * 50)
    assert balanced_bins(np.ones(4), 2) == [0, 1, 0, 1]
    home = _home_by_coprobe(pairs, leaf_shard, 4, 2, np.ones(4))
    assert home[0] == home[1] and home[2] == home[3] and home[0] != home[2]
    # balanced_bins: heaviest first to the least loaded bin.
    assert balanced_bins([5, 4, 3, 3, 1], 2) == [0, 1, 1, 0, 1]
    assert balanced_bins([1.0], 3) == [0]


def _three_shards(template, X, Q):
    """Leaf l of the trained template on shard l % 3. Returns a function giving one index that
    holds the vectors of any set of shards (each leaf's vectors in the same order), the routed
    jobs of Q (8 leaves probed, k = 10, reorder_k = 30) and the shards visited per query."""
    from avq_plugin import AVQIndex
    from avq_plugin.distributed.placement import route_queries

    L = template.num_leaves_
    leaf = template._probe(X, 1)[:, 0]
    leaf_to_shard = (np.arange(L) % 3).astype(np.int32)

    def holding(shard_ids):
        index = AVQIndex.from_bytes(template.to_bytes())
        for j in shard_ids:
            rows = np.flatnonzero(leaf_to_shard[leaf] == j)
            index.add(X[rows], rows)
        return index

    jobs, visited, _ = route_queries(template._probe(Q, 8), leaf_to_shard, np.bincount(leaf, minlength=L), 3, 30)
    return holding, jobs, visited


def _group_reference(holding, jobs, shard_group, Q, metric):
    """The routed search by search groups, each played by one index holding its shards."""
    from avq_plugin.distributed.placement import group_jobs

    parts = [
        (r, *holding(np.flatnonzero(np.equal(shard_group, g)))._search_leaves(Q[r], 10, lv, b))
        for g, (r, lv, b) in group_jobs(jobs, shard_group).items()
    ]
    return merge_rows(len(Q), 10, parts, metric)


def test_multi_shard_search_equals_one_index_holding_the_shards(glove):
    """A worker searches all its shards in one native call. A query's shards of one search group
    are searched as one index holding them all (one top-N over their leaves, the sum of their
    re-ranking budgets): bit for bit the answers of one index holding those vectors, searched over
    the same leaves with the summed budget; the groups' lists are merged. Without groups each
    shard is its own group: the shards searched alone, then merged."""
    from avq_plugin import AVQIndex
    from avq_plugin._index_protected import search_leaves_multi

    X, Q = glove
    X = X[:6000]
    template = AVQIndex(metric="cosine", num_leaves=40, seed=0, num_threads=1).train(X)
    holding, jobs, visited = _three_shards(template, X, Q)
    shards = [holding([j]) for j in range(3)]
    assert visited.mean() > 1.5  # most queries visit several shards
    job_list = [(j, r, lv, b) for j, (r, lv, b, *_) in jobs.items()]
    for shard_group in ([0, 1, 2], [0, 0, 0], [0, 0, 1]):
        want = _group_reference(holding, jobs, shard_group, Q, "cosine")
        for threads in (1, 2):
            D, I = search_leaves_multi(shards, Q, 10, [(*job, shard_group[job[0]]) for job in job_list], threads)
            np.testing.assert_array_equal(I, want[1])
            np.testing.assert_array_equal(D, want[0])
        if shard_group == [0, 1, 2]:  # also the default (no groups given)
            D, I = search_leaves_multi(shards, Q, 10, job_list, 1)
            np.testing.assert_array_equal(I, want[1])
            separate, separate_I = want
        if shard_group == [0, 0, 0]:  # one group re-ranks its summed budget over all its candidates
            assert want[0][:, -1].mean() >= separate[:, -1].mean()

    # The leaves as offsets and flat lists (the packed message's form): the same answers.
    def flat_job(job):
        j, r, lv, b = job
        offsets = np.concatenate([[0], np.cumsum((lv >= 0).sum(axis=1))])
        return (j, r, lv[lv >= 0], b, j, offsets)

    flat_list = [flat_job(job) for job in job_list]
    for threads in (1, 2):
        D, I = search_leaves_multi(shards, Q, 10, flat_list, threads)
        np.testing.assert_array_equal(I, separate_I)
        np.testing.assert_array_equal(D, separate)
    j, r, flat, b, g, off = flat_list[0]
    for bad_off, bad_flat, match in (
        (off + 1, flat, "offsets must run from 0"),
        (np.concatenate([off[:-1], [off[-1] - 1]]), flat, "offsets must run from 0"),
        (np.concatenate([[0, 0], off[2:]]), flat, "1 to num_leaves leaves"),
        (off, np.full_like(flat, -1), "out of range"),
        (off, np.full_like(flat, flat[0]), "listed twice"),
    ):
        with pytest.raises(ValueError, match=match):
            search_leaves_multi(shards, Q, 10, [(j, r, bad_flat, b, g, bad_off)], 1)
    with pytest.raises(ValueError, match="every job gives leaf offsets or none"):
        search_leaves_multi(shards, Q, 10, [flat_list[0], job_list[1]], 1)
    with pytest.raises(ValueError, match="leaf offsets"):
        search_leaves_multi(shards, Q, 10, [(j, r, flat, b, g, off[:-1])], 1)
    # Queries no job asks for are padding; one job alone gives that shard's own answers.
    j, r, lv, b = job_list[0]
    D, I = search_leaves_multi(shards, Q, 10, job_list[:1], 1)
    np.testing.assert_array_equal(I[r], shards[j]._search_leaves(Q[r], 10, lv, b)[1])
    rest = np.setdiff1d(np.arange(len(Q)), r)
    assert np.all(I[rest] == -1) and np.all(D[rest] == -FLT_MAX)
    other = AVQIndex(metric="cosine", num_leaves=40, seed=1).train(X)
    with pytest.raises(ValueError, match="one quantizer"):
        search_leaves_multi([shards[0], other], Q, 10, [(1, r, lv, b)], 1)
    with pytest.raises(ValueError, match="outside"):
        search_leaves_multi(shards, Q[:5], 10, [(j, r, lv, b)], 1)
    with pytest.raises(ValueError, match="no such shard"):
        search_leaves_multi(shards, Q, 10, [(3, r, lv, b)], 1)
    with pytest.raises(ValueError, match="out of range"):
        search_leaves_multi(shards, Q, 10, [(j, r, np.full_like(lv, 40), b)], 1)
    twice = lv.copy()
    twice[-1, -1] = twice[-1, 0]  # the last query lists its best leaf twice
    with pytest.raises(ValueError, match=f"leaf {twice[-1, 0]} is listed twice \\(query {len(r) - 1}\\)"):
        search_leaves_multi(shards, Q, 10, [(j, r, twice, b)], 1)
    padded = np.concatenate([lv, np.full((len(r), 3), -1, lv.dtype)], axis=1)  # repeated -1: no leaf
    np.testing.assert_array_equal(search_leaves_multi(shards, Q, 10, [(j, r, padded, b)], 1)[1], I)
    with pytest.raises(ValueError, match="given to two shards of one group"):
        search_leaves_multi(shards, Q, 10, [(j, r, lv, b, 0), ((j + 1) % 3, r, lv, b, 0)], 1)
    # SOAR copies are found through a per-shard reference: such shards are searched on their own.
    soar = AVQIndex(metric="cosine", num_leaves=40, spill="soar", seed=0, num_threads=1).train(X)
    spilled = [AVQIndex.from_bytes(soar.to_bytes()).add(X[:3000]), AVQIndex.from_bytes(soar.to_bytes()).add(X[3000:])]
    two = [(0, r, lv, b, 0), (1, r, lv, b, 1)]
    search_leaves_multi(spilled, Q, 10, two, 1)  # separate groups: fine
    with pytest.raises(ValueError, match="spilled"):
        search_leaves_multi(spilled, Q, 10, [(0, r, lv, b, 0), (1, r, np.full_like(lv, -1), b, 0)], 1)


@pytest.mark.parametrize("metric, reorder", [("l2", "int8"), ("dot", "none"), ("cosine", "float32")])
def test_group_search_equals_one_index_for_every_metric_and_reordering(metric, reorder):
    """The native group search (``Index::search_group``): l2 biases, int8 re-ranking and no
    re-ranking too, bit for bit one index holding the group's shards, merged across groups."""
    from avq_plugin import AVQIndex
    from avq_plugin._index_protected import search_leaves_multi

    rng = np.random.default_rng(0)
    C = rng.standard_normal((30, 32)).astype(np.float32)
    X = (C[rng.integers(0, 30, 3000)] + 0.5 * rng.standard_normal((3000, 32))).astype(np.float32)
    Q = (C[rng.integers(0, 30, 200)] + 0.5 * rng.standard_normal((200, 32))).astype(np.float32)
    template = AVQIndex(metric=metric, num_leaves=40, reorder=reorder, seed=0, num_threads=1).train(X)
    holding, jobs, _ = _three_shards(template, X, Q)
    shards = [holding([j]) for j in range(3)]
    job_list = [(j, r, lv, b) for j, (r, lv, b, *_) in jobs.items()]
    for shard_group in ([0, 0, 0], [0, 0, 1]):
        D1, I1 = _group_reference(holding, jobs, shard_group, Q, metric)
        D, I = search_leaves_multi(shards, Q, 10, [(*job, shard_group[job[0]]) for job in job_list], 2)
        np.testing.assert_array_equal(I, I1)
        np.testing.assert_array_equal(D, D1)


# ---------------------------------------------------------------------------------- exactness
def test_shards_give_the_single_index_top_k(sharded, glove):
    X, Q = glove
    single = single_like(sharded, X)
    assert sharded.ntotal == single.ntotal == X.shape[0]
    # Every candidate of the probed leaves is re-scored: per-shard and global candidate sets
    # coincide, so the merge must equal the single index exactly.
    for lts in (5, 14, sharded.num_leaves_):
        D, I = sharded.search(Q, k=10, leaves_to_search=lts, reorder_k=X.shape[0])
        D1, I1 = single.search(Q, k=10, leaves_to_search=lts, reorder_k=X.shape[0])
        np.testing.assert_array_equal(I, I1)
        np.testing.assert_array_equal(D, D1)
    # Ids are global row numbers: the scores are those of X[I].
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    np.testing.assert_allclose(D, np.einsum("qd,qkd->qk", Qn, Xn[I]), atol=1e-5)
    bounds = [(i["id_min"], i["id_max"] + 1) for i in sharded.shard_info()]
    assert bounds == sharded.shard_bounds_ == [(0, 5000), (5000, 10000), (10000, 15000), (15000, 20000)]


@pytest.mark.parametrize("metric, reorder", [("dot", "int8"), ("l2", "float32")])
def test_other_metrics_give_the_single_index_top_k(client, glove, metric, reorder):
    X, Q = glove
    X = X[:8000]  # exactness does not depend on the size: small data, a fast test
    index = ShardedAVQIndex(sharding="rows", metric=metric, n_shards=3, reorder=reorder, client=client).fit(
        da.from_array(X, chunks=(2000, 50))
    )
    single = single_like(index, X)
    D, I = index.search(Q, k=10, leaves_to_search=12, reorder_k=X.shape[0])
    D1, I1 = single.search(Q, k=10, leaves_to_search=12, reorder_k=X.shape[0])
    np.testing.assert_array_equal(I, I1)
    np.testing.assert_array_equal(D, D1)


def test_small_reorder_budget_sharded_recall_at_least_single(sharded, glove):
    X, Q = glove
    single = single_like(sharded, X)
    _, gt = ExactIndex(metric="cosine", num_threads=1).fit(X).search(Q, k=10)
    D, I = sharded.search(Q, k=10, leaves_to_search=10, reorder_k=12)
    _, I1 = single.search(Q, k=10, leaves_to_search=10, reorder_k=12)
    hits = (I[:, :, None] == gt[:, None, :]).any(1).sum(1)
    hits1 = (I1[:, :, None] == gt[:, None, :]).any(1).sum(1)
    # Each shard re-scores its own 12 best candidates, a superset of the single index's 12.
    assert np.all(hits >= hits1)
    assert hits.sum() > hits1.sum()  # and at this budget the superset matters
    assert hits.mean() / 10 > 0.8


def test_quantized_scores_without_reordering_match_single_index(client, glove):
    X, Q = glove
    X = X[:8000]
    index = ShardedAVQIndex(sharding="rows", metric="cosine", n_shards=4, reorder="none", client=client).fit(
        da.from_array(X, chunks=(2000, 50))
    )
    single = single_like(index, X)
    for lts in (3, 20):
        D, I = index.search(Q, k=10, leaves_to_search=lts)
        D1, I1 = single.search(Q, k=10, leaves_to_search=lts)
        np.testing.assert_array_equal(I, I1)
        np.testing.assert_array_equal(D, D1)


def test_fit_from_files_matches_dask_array(client, glove, tmp_path):
    X, Q = glove
    X = X[:8000]
    parts = [X[:3000], X[3000:5000], X[5000:]]
    np.save(tmp_path / "a.npy", parts[0])
    np.save(tmp_path / "b.npy", parts[1].astype(np.float64))  # converted to float32 in the workers
    with h5py.File(tmp_path / "c.hdf5", "w") as f:
        f["train"] = parts[2]
    index = ShardedAVQIndex(sharding="rows", metric="cosine", client=client).fit(
        [tmp_path / "a.npy", str(tmp_path / "b.npy"), (tmp_path / "c.hdf5", "train")]
    )
    assert index.shard_bounds_ == [(0, 3000), (3000, 5000), (5000, 8000)]  # one shard per file
    # The same chunks as a dask array: the same sample, quantizer and results.
    ref = ShardedAVQIndex(sharding="rows", metric="cosine", client=client).fit(
        da.from_array(X, chunks=((3000, 2000, 3000), 50))
    )
    D, I = index.search(Q, k=10, leaves_to_search=20)
    D1, I1 = ref.search(Q, k=10, leaves_to_search=20)
    np.testing.assert_array_equal(I, I1)
    np.testing.assert_array_equal(D, D1)
    with pytest.raises(ValueError, match="different dimensions"):
        np.save(tmp_path / "narrow.npy", X[:10, :20])
        ShardedAVQIndex(sharding="rows", client=client).fit([tmp_path / "a.npy", tmp_path / "narrow.npy"])


# ---------------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(client, sharded, glove, tmp_path, mmap):
    _, Q = glove
    ensure_two_workers(client)  # a worker killed by an earlier test may still be restarting
    path = tmp_path / "glove.avqs"
    manifest = sharded.save(path)
    on_disk = json.loads((path / MANIFEST_NAME).read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["format_version"] == 2 and on_disk["n_shards"] == 4 and on_disk["ntotal"] == 20000
    assert [s["file"] for s in on_disk["shards"]] == [f"shard-0000{j}.avq" for j in range(4)]
    assert [(s["id_start"], s["id_stop"]) for s in on_disk["shards"]] == sharded.shard_bounds_
    assert all(s["bytes"] == os.path.getsize(path / s["file"]) for s in on_disk["shards"])

    loaded = ShardedAVQIndex.load(path, client=client, mmap=mmap)
    assert all(info["is_mapped"] == mmap for info in loaded.shard_info())
    assert {w for info in loaded.shard_info() for w in info["workers"]} == set(
        client.scheduler_info(n_workers=-1)["workers"]
    )  # spread over both workers
    for kw in ({}, {"leaves_to_search": 30, "reorder_k": 50}):
        D, I = sharded.search(Q, k=10, **kw)
        D2, I2 = loaded.search(Q, k=10, **kw)
        np.testing.assert_array_equal(I, I2)
        np.testing.assert_array_equal(D, D2)
    assert loaded.metric == "cosine" and loaded.num_leaves_ == sharded.num_leaves_
    # Saving a loaded index again, elsewhere, gives the same shard files.
    again = loaded.save(tmp_path / "copy.avqs")
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]


def test_corrupted_or_missing_shard_raises(client, sharded, tmp_path):
    path = tmp_path / "bad.avqs"
    sharded.save(path)
    shard2 = path / "shard-00002.avq"
    data = bytearray(shard2.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard2.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="shard 2 is corrupt"):
        ShardedAVQIndex.load(path, client=client)
    # Without the sha256 pass, the native checksums still catch it (not under mmap, which
    # skips them by design, so only the size check applies there).
    with pytest.raises(ValueError, match="shard 2 is corrupt"):
        ShardedAVQIndex.load(path, client=client, verify=False)
    shard2.write_bytes(bytes(data[:-100]))
    with pytest.raises(ValueError, match="shard 2 is corrupt.*bytes"):
        ShardedAVQIndex.load(path, client=client, mmap=True, verify=False)
    (path / "shard-00001.avq").unlink()
    with pytest.raises(ValueError, match="shard 1 is missing"):
        ShardedAVQIndex.load(path, client=client)

    manifest = json.loads((path / MANIFEST_NAME).read_text())
    (path / MANIFEST_NAME).write_text(json.dumps(dict(manifest, format_version=99)))
    with pytest.raises(ValueError, match="newer"):
        ShardedAVQIndex.load(path, client=client)
    (path / MANIFEST_NAME).write_text(json.dumps(manifest)[:-20])
    with pytest.raises(ValueError, match="corrupted manifest"):
        ShardedAVQIndex.load(path, client=client)
    with pytest.raises(ValueError, match="not a saved sharded index"):
        ShardedAVQIndex.load(tmp_path / "nowhere", client=client)


# ---------------------------------------------------------------------------------- failures
def test_worker_killed_mid_search_loaded_index_survives(client, sharded, glove, tmp_path):
    _, Q = glove
    ensure_two_workers(client)  # a worker killed by an earlier test may still be restarting
    sharded.save(tmp_path / "s.avqs")
    loaded = ShardedAVQIndex.load(tmp_path / "s.avqs", client=client, mmap=True)
    expected = loaded.search(Q, k=10)
    # The lost shards are re-read from their files on the surviving worker.
    (D, I), _ = search_with_worker_killed(client, loaded, Q, tmp_path / "kill", k=10)
    np.testing.assert_array_equal(I, expected[1])
    np.testing.assert_array_equal(D, expected[0])
    np.testing.assert_array_equal(loaded.search(Q, k=10)[1], expected[1])


def test_worker_killed_mid_search_fitted_index_is_rebuilt(client, glove, tmp_path):
    ensure_two_workers(client)
    X, Q = glove
    index = ShardedAVQIndex(sharding="rows", metric="cosine", n_shards=4, client=client).fit(
        da.from_array(X[:4000], chunks=(1000, 50))
    )
    expected = index.search(Q, k=10)
    # Not saved: Dask re-encodes the lost shards from their source chunks (the lineage).
    (D, I), dead = search_with_worker_killed(client, index, Q, tmp_path / "kill", k=10)
    np.testing.assert_array_equal(I, expected[1])
    np.testing.assert_array_equal(D, expected[0])
    assert all(dead not in info["workers"] for info in index.shard_info())


def test_worker_killed_after_sources_deleted_reloads_saved_shards(client, glove, tmp_path):
    X, Q = glove
    ensure_two_workers(client)  # a worker killed by an earlier test may still be restarting
    src = tmp_path / "src"
    src.mkdir()
    for j in range(4):
        np.save(src / f"part{j}.npy", X[j * 1000 : (j + 1) * 1000])
    index = ShardedAVQIndex(sharding="rows", metric="cosine", client=client).fit(sorted(src.glob("*.npy")))
    expected = index.search(Q, k=10)
    index.save(tmp_path / "s.avqs")
    shutil.rmtree(src)  # Dask can no longer rebuild a lost shard from its source files ...
    # ... so it is reloaded from the save.
    (D, I), _ = search_with_worker_killed(client, index, Q, tmp_path / "kill", k=10)
    np.testing.assert_array_equal(I, expected[1])
    np.testing.assert_array_equal(D, expected[0])


def test_worker_killed_unrecoverable_shard_raises_naming_it(client, glove, tmp_path):
    X, Q = glove
    src = tmp_path / "src"
    src.mkdir()
    for j in range(4):
        np.save(src / f"part{j}.npy", X[j * 2000 : (j + 1) * 2000])
    # The test needs shards on both workers (so that only some are lost). Placement is a preference:
    # a worker restarted by an earlier test can die again during the fit (Dask's restart race, see
    # ensure_two_workers), and its shards are then rebuilt on the other one. Refit in that case.
    for _attempt in range(3):
        ensure_two_workers(client)  # a worker killed by an earlier test may still be restarting
        index = ShardedAVQIndex(sharding="rows", metric="cosine", client=client).fit(sorted(src.glob("*.npy")))
        infos = index.shard_info()
        if {w for i in infos for w in i["workers"]} == set(client.scheduler_info(n_workers=-1)["workers"]):
            break
        index.release()
    else:
        pytest.fail(f"shards not spread over both workers in 3 fits: {infos}")
    shutil.rmtree(src)
    with pytest.raises(ShardLostError, match="lost .a worker died. and could not be recovered") as err:
        search_with_worker_killed(client, index, Q, tmp_path / "kill", k=10)
    dead = {w for i in infos for w in i["workers"]} - set(client.scheduler_info(n_workers=-1)["workers"])
    assert len(dead) == 1
    on_victim = {i["shard"] for i in infos if set(i["workers"]) & dead}
    assert on_victim and on_victim != {0, 1, 2, 3}
    # Every shard of the dead worker is named (shards elsewhere can be lost too: when Dask fails
    # to recompute the shared quantizer it also fails the shards built from it).
    assert on_victim <= set(err.value.shards)
    assert str(err.value).startswith(f"shard(s) {', '.join(map(str, err.value.shards))} lost")
    # Each lost shard comes with the exception that ended it ("shard j: Type: message"): usually
    # FileNotFoundError (its source files are gone), but under load Dask can report the loss first
    # (a cancelled future, a closed connection), which names the cause as well.
    for j in err.value.shards:
        assert re.search(rf"shard {j}: [A-Za-z_][A-Za-z0-9_]*: ", str(err.value)), str(err.value)
    assert "save()" in str(err.value)


def test_refit_and_release(client, glove, tmp_path):
    X, Q = glove
    index = ShardedAVQIndex(sharding="rows", metric="cosine", n_shards=2, num_leaves=20, client=client).fit(
        da.from_array(X[:4000], chunks=(2000, 50))
    )
    index.save(tmp_path / "a.avqs")
    assert index.saved_path == str(tmp_path / "a.avqs")
    index.fit(da.from_array(X[4000:10000], chunks=(3000, 50)))
    assert index.saved_path is None and index.ntotal == 6000  # the old files no longer describe it
    assert index.search(Q[:5], k=3)[1].max() < 6000  # ids are row numbers of the new input
    index.release()
    assert not index.is_fitted
    with pytest.raises(ValueError, match="not fitted"):
        index.search(Q)


# ---------------------------------------------------------------------------------- validation
def test_bad_input(client, sharded, glove):
    X, Q = glove
    with pytest.raises(ValueError, match="not fitted"):
        ShardedAVQIndex(sharding="rows", client=client).search(Q)
    with pytest.raises(ValueError, match="features"):
        sharded.search(Q[:, :10])
    with pytest.raises(ValueError, match="n_shards=30 exceeds"):
        ShardedAVQIndex(sharding="rows", n_shards=30, client=client).fit(da.from_array(X[:20]))
    with pytest.raises(TypeError, match="dask.array"):
        ShardedAVQIndex(sharding="rows", client=client).fit({"X": X})
    with pytest.raises(ValueError, match="n_shards"):
        ShardedAVQIndex(sharding="rows", n_shards=0)
    with pytest.raises(TypeError, match="client"):
        ShardedAVQIndex(sharding="rows", client="tcp://nowhere:8786")
    with pytest.raises(TypeError, match="save"):
        pickle.dumps(sharded)
    bad = X[:1000].copy()
    bad[999, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ShardedAVQIndex(sharding="rows", n_shards=2, num_leaves=5, client=client).fit(
            da.from_array(bad, chunks=(500, 50))
        )
    # k beyond a shard's size: padded like AVQIndex.
    small = ShardedAVQIndex(sharding="rows", metric="cosine", n_shards=3, num_leaves=2, client=client).fit(
        da.from_array(X[:9], chunks=(3, 50))
    )
    D, I = small.search(Q[:2], k=12, leaves_to_search=2)
    assert sorted(I[0, :9].tolist()) == list(range(9)) and I[:, 9:].tolist() == [[-1] * 3] * 2
    assert np.all(D[:, 9:] == -FLT_MAX)


# ---------------------------------------------------------------------------------- leaf-routed shards
@pytest.fixture(scope="module")
def leafy(client, glove):
    X, _ = glove
    return ShardedAVQIndex(metric="cosine", n_shards=4, leaves_to_search=14, client=client).fit(
        da.from_array(X, chunks=(2500, 50))
    )


def test_search_uses_the_index_client_not_a_later_default_client(client, glove):
    """Dask binds an actor handle to the default client. A second client made after this one
    becomes the default; once it is closed, searches must still work through the index's own
    client (they raised "Worker holding Actor was lost" before)."""
    X, Q = glove
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as elsewhere:
        with Client(elsewhere):  # now the default client, of another cluster
            index = ShardedAVQIndex(metric="cosine", n_shards=2, client=client).fit(X[:4000])
            D, I = index.search(Q[:50], k=10)
    D2, I2 = index.search(Q[:50], k=10)
    np.testing.assert_array_equal(I2, I)
    np.testing.assert_array_equal(D2, D)
    index.release()


def test_leaf_shards_give_the_single_index_top_k(leafy, glove):
    X, Q = glove
    single = single_like(leafy, X)
    assert leafy.sharding == "leaves" and leafy.ntotal == X.shape[0]
    placement = leafy.leaf_to_shard_
    assert placement.shape == (leafy.num_leaves_,) and set(placement.tolist()) == {0, 1, 2, 3}
    infos = leafy.shard_info()
    sizes = [i["ntotal"] for i in infos]
    # Balanced: every shard within MAX_IMBALANCE of n / n_shards vectors.
    assert sum(sizes) == X.shape[0]
    assert X.shape[0] / 4 * (1 - MAX_IMBALANCE) <= min(sizes) <= max(sizes) <= X.shape[0] / 4 * (1 + MAX_IMBALANCE)
    # Whole leaves: a vector's shard is the shard of its leaf.
    leaves = single.get_ids()  # storage order is leaf by leaf
    assert len(leaves) == X.shape[0]
    # Every shard re-ranks all its candidates when the budget covers the probed leaves: exact.
    for lts in (5, 14, leafy.num_leaves_):
        D, I = leafy.search(Q, k=10, leaves_to_search=lts, reorder_k=X.shape[0])
        D1, I1 = single.search(Q, k=10, leaves_to_search=lts, reorder_k=X.shape[0])
        np.testing.assert_array_equal(I, I1)
        np.testing.assert_array_equal(D, D1)
        stats = leafy.search_stats()
        assert stats["queries"] == len(Q) and stats["client_seconds"] > 0
        probed = single._probe(Q, lts)
        sizes_of_leaf = single._leaf_sizes()
        assert stats["candidates_scanned_per_query"] == pytest.approx(sizes_of_leaf[probed].sum(1).mean())
        visited = np.mean([len(set(placement[p].tolist())) for p in probed])
        assert stats["shards_visited_per_query"] == pytest.approx(visited)
        assert stats["shard_tasks"] <= 4
    assert leafy.search_stats()["shards_visited_per_query"] == 4  # every leaf probed
    # k beyond the vectors of the probed leaves: more leaves are probed, as one index does.
    D, I = leafy.search(Q, k=300, leaves_to_search=1, reorder_k=X.shape[0])
    D1, I1 = single.search(Q, k=300, leaves_to_search=1, reorder_k=X.shape[0])
    np.testing.assert_array_equal(I, I1)
    np.testing.assert_array_equal(D, D1)
    # With few probed leaves most queries visit few shards (neighbouring leaves placed together).
    leafy.search(Q, k=10, leaves_to_search=3)
    assert leafy.search_stats()["shards_visited_per_query"] < 2


def test_leaf_shards_without_reordering_match_single_index(client, glove):
    X, Q = glove
    X = X[:4000]
    index = ShardedAVQIndex(metric="l2", n_shards=3, reorder="none", client=client).fit(
        da.from_array(X, chunks=(1000, 50))
    )
    single = single_like(index, X)
    with pytest.raises(ValueError, match="leaf_margin applies to metric"):
        index.search(Q, k=10, leaf_margin=0.2)
    for lts in (3, 20):
        D, I = index.search(Q, k=10, leaves_to_search=lts)
        D1, I1 = single.search(Q, k=10, leaves_to_search=lts)
        np.testing.assert_array_equal(I, I1)
        np.testing.assert_array_equal(D, D1)


def test_leaf_shards_split_the_reorder_budget(leafy, glove):
    X, Q = glove
    single = single_like(leafy, X)
    _, gt = ExactIndex(metric="cosine", num_threads=1).fit(X).search(Q, k=10)

    def recall(I):
        return (I[:, :, None] == gt[:, None, :]).any(1).mean()

    for rk in (20, 50):
        _, I = leafy.search(Q, k=10, leaves_to_search=14, reorder_k=rk)
        _, I1 = single.search(Q, k=10, leaves_to_search=14, reorder_k=rk)
        # One global budget, split by the shards' share of the candidates: about the single
        # index's re-ranking work, and about its recall.
        assert abs(recall(I) - recall(I1)) < 0.03


def test_leaf_margin_in_both_shardings(leafy, sharded, glove):
    """leaf_margin: with a budget covering the probed leaves both shardings equal one AVQIndex
    searched with the same margin; leaf routing probes the margin's leaves and scales each
    query's budget by sqrt(leaves / leaves_to_search) as AVQIndex.search does."""
    X, Q = glove
    for index in (leafy, sharded):
        single = single_like(index, X)
        for m in (0.1, 0.3):
            D, I = index.search(Q, k=10, leaves_to_search=3, reorder_k=X.shape[0], leaf_margin=m)
            D1, I1 = single.search(Q, k=10, leaves_to_search=3, reorder_k=X.shape[0], leaf_margin=m)
            np.testing.assert_array_equal(I, I1)
            np.testing.assert_array_equal(D, D1)
        # 0 is the fixed count
        D, I = index.search(Q, k=10, leaves_to_search=3, leaf_margin=0)
        np.testing.assert_array_equal(I, index.search(Q, k=10, leaves_to_search=3)[1])
        with pytest.raises(ValueError, match="leaf_margin"):
            index.search(Q, k=10, leaf_margin=-0.1)
        with pytest.raises(TypeError, match="leaf_margin"):
            index.search(Q, k=10, leaf_margin="wide")
    single = single_like(leafy, X)
    P = single._probe(Q, 3, leaf_margin=0.3)
    n = (P >= 0).sum(axis=1)
    assert n.min() >= 3 and n.max() > 3 and P.shape[1] == n.max()
    leafy.search(Q, k=10, leaves_to_search=3, reorder_k=40, leaf_margin=0.3)
    stats = leafy.search_stats()
    sizes = single._leaf_sizes()
    assert stats["candidates_scanned_per_query"] == pytest.approx(np.where(P >= 0, sizes[P], 0).sum(1).mean())
    # Each query's budget is split across its shards: re-ranked about ceil(40 sqrt(n / 3)) each.
    budget = np.ceil(40 * np.sqrt(n / 3))
    assert 0.95 * budget.mean() <= stats["reranked_per_query"] <= budget.mean() + 10 * stats["shards_visited_per_query"]
    _, gt = ExactIndex(metric="cosine", num_threads=1).fit(X).search(Q, k=10)

    def recall(I):
        return (I[:, :, None] == gt[:, None, :]).any(1).mean()

    _, I = leafy.search(Q, k=10, leaves_to_search=3, reorder_k=40, leaf_margin=0.3)
    _, I1 = single.search(Q, k=10, leaves_to_search=3, reorder_k=40, leaf_margin=0.3)
    assert abs(recall(I) - recall(I1)) < 0.03


def test_leaf_shards_save_load(client, leafy, glove, tmp_path):
    _, Q = glove
    ensure_two_workers(client)
    manifest = leafy.save(tmp_path / "l.avqs")
    assert manifest["sharding"] == "leaves" and manifest["format_version"] == 2
    assert manifest["leaf_to_shard"] == leafy.leaf_to_shard_.tolist()
    for mmap in (False, True):
        loaded = ShardedAVQIndex.load(tmp_path / "l.avqs", client=client, mmap=mmap)
        assert loaded.sharding == "leaves" and loaded.ntotal == leafy.ntotal
        assert all(i["is_mapped"] == mmap for i in loaded.shard_info())
        for kw in ({}, {"leaves_to_search": 30, "reorder_k": 50}):
            D, I = leafy.search(Q, k=10, **kw)
            D2, I2 = loaded.search(Q, k=10, **kw)
            np.testing.assert_array_equal(I, I2)
            np.testing.assert_array_equal(D, D2)
        loaded.release()
    bad = json.loads((tmp_path / "l.avqs" / MANIFEST_NAME).read_text())
    bad["leaf_to_shard"] = bad["leaf_to_shard"][:-1]
    (tmp_path / "l.avqs" / MANIFEST_NAME).write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="leaf_to_shard"):
        ShardedAVQIndex.load(tmp_path / "l.avqs", client=client)


def wait_for_replicas(index, replicas, seconds=60):
    """Polls until every shard has `replicas` live replicas again (rebuilt in the background)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        infos = index.shard_info()
        if all(len(i["workers"]) == replicas for i in infos):
            return infos
        time.sleep(0.05)
    raise AssertionError(f"replicas were not rebuilt: {[i['workers'] for i in index.shard_info()]}")


def test_replicas_survive_a_worker_killed_mid_stream(client, glove, tmp_path):
    X, Q = glove
    ensure_two_workers(client)
    index = ShardedAVQIndex(metric="cosine", n_shards=4, replicas=2, client=client).fit(
        da.from_array(X[:4000], chunks=(2000, 50))
    )
    infos = index.shard_info()
    assert all(len(set(i["workers"])) == 2 for i in infos)  # two workers per shard
    batches = [Q[i : i + 50] for i in range(0, len(Q), 50)]
    expected = [index.search(q, k=10) for q in batches]
    # Not saved, no lineage: the surviving replicas answer; nothing is re-encoded.
    (D, I), dead = search_with_worker_killed(client, index, batches[0], tmp_path / "kill", k=10)
    np.testing.assert_array_equal(I, expected[0][1])
    np.testing.assert_array_equal(D, expected[0][0])
    for q, (De, Ie) in zip(batches, expected):
        D, I = index.search(q, k=10)
        np.testing.assert_array_equal(I, Ie)
        np.testing.assert_array_equal(D, De)
    # The nanny restarts the worker; the lost replicas are copied there from the survivors.
    ensure_two_workers(client)
    infos = wait_for_replicas(index, 2)
    assert all(dead not in i["workers"] for i in infos)
    np.testing.assert_array_equal(index.search(Q, k=10)[1], np.concatenate([e[1] for e in expected]))
    index.release()


def test_searches_reuse_the_live_workers_and_survive_a_stale_list(client, glove, monkeypatch):
    """A search asks the scheduler for the live workers at most every _LIVE_WORKERS_TTL_S; a search
    whose list still names a worker that died since is answered by the surviving replicas, and the
    lost call makes the next search ask again."""
    from avq_plugin.distributed import base

    X, Q = glove
    ensure_two_workers(client)
    monkeypatch.setattr(base, "_LIVE_WORKERS_TTL_S", 3600.0)  # every search below within it
    index = ShardedAVQIndex(metric="cosine", n_shards=4, replicas=2, client=client).fit(
        da.from_array(X[:4000], chunks=(2000, 50))
    )
    expected = index.search(Q, k=10)
    asked = index._live_seen[0]
    for _ in range(3):
        index.search(Q[:5], k=10)
    assert index._live_seen[0] == asked  # no round trip to the scheduler
    victim = sorted(index._live_seen[1])[0]
    # The worker exits just after this call returns (so the call itself does not fail).
    client.run(lambda: threading.Timer(0.05, os._exit, (1,)).start(), workers=[victim])
    deadline = time.monotonic() + 30
    while victim in client.scheduler_info(n_workers=-1)["workers"]:
        assert time.monotonic() < deadline, "the killed worker did not leave the cluster"
        time.sleep(0.05)
    assert victim in index._live_seen[1]  # the index's list is stale now
    D, I = index.search(Q, k=10)
    np.testing.assert_array_equal(I, expected[1])
    np.testing.assert_array_equal(D, expected[0])
    assert index._live_seen[0] > asked and victim not in index._live_seen[1]
    ensure_two_workers(client)
    index.release()


def test_lost_leaf_shard_raises_unless_saved(client, glove, tmp_path):
    X, Q = glove
    ensure_two_workers(client)
    saved = ShardedAVQIndex(metric="cosine", n_shards=4, client=client).fit(da.from_array(X[:3000], chunks=(1500, 50)))
    saved.save(tmp_path / "s.avqs")
    expected = saved.search(Q, k=10)
    unsaved = ShardedAVQIndex(metric="cosine", n_shards=4, client=client).fit(
        da.from_array(X[3000:6000], chunks=(1500, 50))
    )
    infos = unsaved.shard_info()
    with pytest.raises(ShardLostError, match="lost .a worker died. and could not be recovered") as err:
        search_with_worker_killed(client, unsaved, Q, tmp_path / "kill", k=10)
    dead = {w for i in infos for w in i["workers"]} - set(client.scheduler_info(n_workers=-1)["workers"])
    on_victim = {i["shard"] for i in infos if set(i["workers"]) & dead}
    assert set(err.value.shards) == on_victim and "replicas=2" in str(err.value)
    # The saved index lost the same worker: its shards there are reloaded from the files.
    D, I = saved.search(Q, k=10)
    np.testing.assert_array_equal(I, expected[1])
    np.testing.assert_array_equal(D, expected[0])
    saved.release()
    unsaved.release()


def test_leaf_shards_live_updates(client, glove, tmp_path):
    import threading

    X, Q = glove
    ensure_two_workers(client)
    index = ShardedAVQIndex(metric="cosine", n_shards=3, replicas=2, client=client).fit(
        da.from_array(X[:6000], chunks=(2000, 50))
    )
    single = single_like(index, X[:6000])
    errors, stop = [], threading.Event()

    def searcher():
        while not stop.is_set():
            try:
                index.search(Q[:20], k=10)
            except Exception as exc:  # collected for the assertion below
                errors.append(exc)

    thread = threading.Thread(target=searcher)
    thread.start()
    try:
        for a in range(6000, 10000, 1000):  # concurrent searches during the adds
            index.add(X[a : a + 1000], np.arange(a, a + 1000))
            single.add(X[a : a + 1000], np.arange(a, a + 1000))
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert index.ntotal == 10000
    assert all(len(i["workers"]) == 2 for i in index.shard_info())
    with pytest.raises(ValueError, match="already in the index"):
        index.add(X[:2], np.array([5, 100000]))
    index.add(X[:2], np.array([100000, 100001]))  # default ids continue after the largest
    single.add(X[:2], np.array([100000, 100001]))
    index.add(X[2:3])
    single.add(X[2:3], np.array([100002]))
    gone = np.arange(0, 10000, 7)
    assert index.remove(np.concatenate([gone, [-5, 10**9]])) == len(gone)
    single.remove(gone)
    assert index.ntotal == single.ntotal
    for lts in (5, 30):
        D, I = index.search(Q, k=10, leaves_to_search=lts, reorder_k=10003)
        D1, I1 = single.search(Q, k=10, leaves_to_search=lts, reorder_k=10003)
        np.testing.assert_array_equal(I, I1)
        np.testing.assert_array_equal(D, D1)
    index.save(tmp_path / "u.avqs")
    loaded = ShardedAVQIndex.load(tmp_path / "u.avqs", client=client, replicas=1)
    D2, I2 = loaded.search(Q, k=10, leaves_to_search=30, reorder_k=10003)
    np.testing.assert_array_equal(I2, I1)
    assert loaded.ntotal == single.ntotal
    loaded.add(X[3:4])  # the same vector as id 3, under the next id
    assert sorted(loaded.search(X[3:4], k=2)[1][0].tolist()) == [3, 100003]
    with pytest.raises(ValueError, match="sharding='leaves'"):
        ShardedAVQIndex(sharding="rows", replicas=2)
    index.release()
    loaded.release()
