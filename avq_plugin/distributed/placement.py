"""Leaf placement and re-ranking budgets for leaf-routed sharding (no Dask here: plain NumPy)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._index_protected import route_queries as route_queries_native

Array = NDArray[Any]


def balanced_leaf_groups(
    centres: ArrayLike, counts: ArrayLike, n_groups: int, probes: ArrayLike | None = None, *, seed: int = 0
) -> Array:
    """Assign leaves to ``n_groups`` shards: balanced by vector count, co-probed leaves together.

    A balanced recursive bisection: each set of leaves is ordered along one direction and cut at
    the weighted quantile that gives each side its share of the groups, recursively; every group
    holds about n / n_groups vectors (up to one leaf's size per cut). The direction is, when
    ``probes`` are given, the Fiedler vector of the co-probe graph of the set (leaves joined by
    the number of sample queries probing both: a spectral cut, which separates the leaves that
    queries probe together), else the weighted principal axis of the probe centres (leaves
    close in space are probed by the same queries). Deterministic for the seed.

    Parameters
    ----------
    centres : float (L, d)
    counts : int (L,)
        Vectors per leaf (empty leaves get a small weight so that they are spread too).
    n_groups : int, 1 <= n_groups <= L
    probes : int (m, w), optional
        The leaves probed by m sample queries (-1: none), as for ``refine_leaf_groups``.

    Returns
    -------
    int32 (L,): the group of every leaf.
    """
    centres = np.asarray(centres, np.float64)
    counts = np.asarray(counts, np.float64)
    L = centres.shape[0]
    if not 1 <= n_groups <= L:
        raise ValueError(f"n_shards={n_groups} must be between 1 and the number of leaves ({L})")
    weight = counts + max(1e-3, counts.mean() * 1e-3)
    graph = None if probes is None or not np.size(probes) else _CoProbeGraph(probes, L)
    rng = np.random.default_rng(seed)
    groups = np.zeros(L, np.int32)
    stack = [(np.arange(L), n_groups, 0)]
    while stack:
        idx, s, first = stack.pop()
        if s == 1:
            groups[idx] = first
            continue
        s1 = s // 2
        w = weight[idx]
        key = None if graph is None else graph.fiedler(idx, rng)
        if key is None:
            C = centres[idx]
            mean = (w[:, None] * C).sum(0) / w.sum()
            Z = (C - mean) * np.sqrt(w)[:, None]
            # Principal axis (the top right singular vector; sign fixed for determinism).
            _, _, vt = np.linalg.svd(Z, full_matrices=False)
            axis = vt[0] * (1.0 if vt[0][np.argmax(np.abs(vt[0]))] >= 0 else -1.0)
            key = (C - mean) @ axis
        order = np.argsort(key, kind="stable")
        cum = np.cumsum(w[order])
        cut = int(np.searchsorted(cum, cum[-1] * s1 / s))
        if cut < len(cum) and abs(cum[cut] - cum[-1] * s1 / s) < abs((cum[cut - 1] if cut else 0) - cum[-1] * s1 / s):
            cut += 1
        cut = min(max(cut, s1), len(idx) - (s - s1))  # every group keeps at least one leaf
        stack.append((idx[order[cut:]], s - s1, first + s1))
        stack.append((idx[order[:cut]], s1, first))
    return groups


class _CoProbeGraph:
    """The co-probe graph of the leaves, never formed: A[l, l'] = sample queries probing both.

    Products with A (restricted to a set of leaves) come from the probe lists, O(m w) each, so
    memory and time grow with the sample, not with L^2.
    """

    _ITERATIONS = 200
    _BLOCK = 4
    _DENSE_MAX = 1024

    def __init__(self, probes: ArrayLike, L: int) -> None:
        self.probes = np.asarray(probes, np.int64)
        self.L = L

    def fiedler(self, idx: Array, rng: np.random.Generator) -> Array | None:
        """Second eigenvector of D^-1/2 A D^-1/2 over the leaves ``idx`` (scaled by D^-1/2: the
        normalised spectral cut), by block power iteration; None when they share no query."""
        n = len(idx)
        local = np.full(self.L + 1, -1, np.int64)  # index L: the -1 of the probe lists
        local[idx] = np.arange(n)
        P = local[self.probes]
        P = P[(P >= 0).sum(axis=1) >= 2]  # queries joining at least two of these leaves
        if not len(P) or n < 3:
            return None
        P = np.where(P >= 0, P, n)  # row n of the padded V below is zero
        q = np.repeat(np.arange(len(P)), P.shape[1])
        leaf = P.ravel()
        self_count = np.bincount(leaf, minlength=n + 1)[:n].astype(np.float64)

        def A(V: Array) -> Array:  # A @ V for V (n, b), without the diagonal
            sums = np.vstack([V, np.zeros((1, V.shape[1]))])[P].sum(axis=1)  # per query (m, b)
            out = np.stack([np.bincount(leaf, weights=sums[q, i], minlength=n + 1)[:n] for i in range(V.shape[1])], 1)
            return out - self_count[:, None] * V

        if n <= self._DENSE_MAX:  # small sets: the dense graph and an exact eigensolver
            dense = np.zeros((n + 1) * (n + 1))
            for a in range(0, len(P), 2048):  # pairs of co-probed leaves, 2048 queries at a time
                Pb = P[a : a + 2048]
                dense += np.bincount((Pb[:, :, None] * (n + 1) + Pb[:, None, :]).ravel(), minlength=len(dense))
            dense = dense.reshape(n + 1, n + 1)[:n, :n]
            np.fill_diagonal(dense, 0.0)

            def A(V: Array) -> Array:
                return dense @ V

        deg = A(np.ones((n, 1)))[:, 0]
        if not (deg > 0).all():
            return None  # a leaf joined to none of the others: the graph is not connected
        dm = 1.0 / np.sqrt(deg)
        top = np.sqrt(deg) / np.linalg.norm(np.sqrt(deg))  # the trivial eigenvector (eigenvalue 1)

        def M(V: Array) -> Array:  # (I + D^-1/2 A D^-1/2) / 2 with the trivial vector deflated: eigenvalues in [0, 1]
            V = V - top[:, None] * (top @ V)[None, :]
            return (V + dm[:, None] * A(dm[:, None] * V)) / 2

        if n <= self._DENSE_MAX:
            vals, vecs = np.linalg.eigh(np.eye(n) / 2 + (dm[:, None] * dense * dm[None, :]) / 2)
            f = vecs[:, -2] * dm  # the top one is the trivial vector
            return f * (1.0 if f[np.argmax(np.abs(f))] >= 0 else -1.0)
        V, _ = np.linalg.qr(rng.standard_normal((n, min(self._BLOCK, n - 1))))
        for _ in range(self._ITERATIONS):
            W, _ = np.linalg.qr(M(V))
            done = np.linalg.norm(W - V @ (V.T @ W)) < 1e-6 * np.sqrt(W.shape[1])
            V = W
            if done:
                break
        vals, vecs = np.linalg.eigh(V.T @ M(V))
        f = (V @ vecs[:, -1]) * dm
        return f * (1.0 if f[np.argmax(np.abs(f))] >= 0 else -1.0)


#: Largest deviation of a shard's vector count from n / n_shards that the leaf placement allows
#: (both ways). 10 %: on GloVe-190k at 8 shards the 3 % of the former placement cost about 0.04
#: shards visited per query (docs/dask.md).
MAX_IMBALANCE = 0.10
#: Perturbation rounds of the placement's iterated local search (each one refinement).
PLACEMENT_ROUNDS = 6
# Moves without a new best before a Fiduccia-Mattheyses pass stops.
_FM_PATIENCE = 25


class _Refiner:
    """Fiduccia-Mattheyses passes over the leaves for the number of groups a query touches.

    The sample queries are hyperedges over their probed leaves; the objective is the mean number
    of distinct groups per query (the shards a routed search visits). Every group is kept within
    ``max_imbalance`` of its share of the vectors (memory) and, unless ``load_limits`` is None,
    its share of the candidates the sample queries scan (``scan_load``: the work of a shard)
    between the two fractions ``load_limits`` gives.
    ``repair`` first brings groups outside the limits inside them, where moves can. Per leaf and group the
    gain of a move is kept up to date: ``own[l]`` queries of leaf l where it is its group's only
    probed leaf (they stop visiting that group when l leaves) minus ``absent[l, b]`` queries of
    l that touch no leaf of group b (they start visiting b). A pass moves, one at a time, the
    unlocked leaf with the best gain (negative gains too, which gets out of the local optima of
    greedy moves; a pair of moves is a swap) whose move keeps every group within the balance
    limits, locks it, and at the end keeps the best prefix of the pass. O(queries of the moved
    leaf x probe width) per move for the gain updates, O(L x groups) to pick it.
    """

    def __init__(
        self,
        groups: Array,
        probes: Array,
        counts: Array,
        n_groups: int,
        max_imbalance: float,
        load_limits: tuple[float, float] | None,
    ) -> None:
        L = len(groups)
        self.L, self.S = L, n_groups
        self.groups = np.append(np.asarray(groups, np.int64), -1)  # index L: the -1 of the probe lists
        self.counts = np.asarray(counts, np.int64)
        probes = np.asarray(probes, np.int64)
        m, w = probes.shape
        self.rows = np.where(probes >= 0, probes, L)
        # The balanced measures, one column each: vectors, scan load.
        self.wt = np.stack([self.counts.astype(np.float64), scan_load(self.counts, probes)], axis=1)
        share = self.wt.sum(axis=0) / n_groups
        self.cap = share * (1 + max_imbalance)
        self.floor = share * (1 - max_imbalance)
        if load_limits is None:  # the scan load unconstrained
            self.cap[1], self.floor[1] = np.inf, -np.inf
        else:
            total_load = self.wt[:, 1].sum()
            self.floor[1], self.cap[1] = total_load * load_limits[0], total_load * load_limits[1]
        self.share = np.maximum(share, 1e-300)
        flat_q = np.repeat(np.arange(m), w)
        flat_l = probes.ravel()
        keep = flat_l >= 0
        self.flat_q, self.flat_l = flat_q[keep], flat_l[keep]
        order = np.argsort(self.flat_l, kind="stable")
        starts = np.searchsorted(self.flat_l[order], np.arange(L + 1))
        self.queries_of = [self.flat_q[order[starts[l] : starts[l + 1]]] for l in range(L)]
        self.movable = np.diff(starts) > 0
        self.cnt = np.zeros((m, n_groups), np.int32)  # probed leaves of each query per group
        self._recount()

    def sizes(self, g: Array) -> Array:
        """(S, 2): each group's vectors and scan load under the grouping g."""
        return np.stack([np.bincount(g, weights=c, minlength=self.S) for c in self.wt.T], axis=1)

    def _recount(self) -> None:
        g = self.groups[: self.L]
        self.size = self.sizes(g)
        self.cnt[:] = 0
        np.add.at(self.cnt, (self.flat_q, g[self.flat_l]), 1)
        c = self.cnt[self.flat_q]
        self.own = np.zeros(self.L + 1, np.int64)
        self.own[: self.L] = np.bincount(
            self.flat_l, weights=c[np.arange(len(self.flat_l)), g[self.flat_l]] == 1, minlength=self.L
        )
        self.absent = np.zeros((self.L + 1, self.S), np.int64)
        for b in range(self.S):
            self.absent[: self.L, b] = np.bincount(self.flat_l, weights=c[:, b] == 0, minlength=self.L)

    def objective(self) -> float:
        return float((self.cnt > 0).sum(axis=1).mean()) if len(self.cnt) else 0.0

    def set_groups(self, groups: Array) -> None:
        self.groups[: self.L] = groups
        self._recount()

    def move(self, x: int, b: int) -> None:
        a = int(self.groups[x])
        qs = self.queries_of[x]
        ca, cb = self.cnt[qs, a], self.cnt[qs, b]
        n = self.L + 1

        def probed(sel: Array, group: int | None) -> Array:
            """The probed leaves other than x of the queries qs[sel] (those of ``group`` only)."""
            r = self.rows[qs[sel]]
            keep = r != x
            if group is not None:
                keep &= self.groups[r] == group
            return np.bincount(r[keep], minlength=n)

        # A query's count in a drops 2 -> 1: the remaining leaf of a becomes its only one there;
        # b: 1 -> 2, b's leaf there is no longer its only one.
        self.own += probed(ca == 2, a) - probed(cb == 1, b)
        # a: 1 -> 0, the query no longer touches a (moving any of its leaves to a would add a
        # visit); b: 0 -> 1, the query touches b now.
        self.absent[:, a] += probed(ca == 1, None)
        self.absent[:, b] -= probed(cb == 0, None)
        self.cnt[qs, a] -= 1
        self.cnt[qs, b] += 1
        self.size[a] -= self.wt[x]
        self.size[b] += self.wt[x]
        self.groups[x] = b
        self.own[x] = int((self.cnt[qs, b] == 1).sum())
        self.absent[x] = (self.cnt[qs] == 0).sum(axis=0)

    def _within(self, g: Array) -> Array:
        """(L, S): moving leaf l to group b keeps b under the caps and l's group over the floors
        (of both measures; a group already outside a limit can only move back towards it)."""
        ok = np.all(self.size[None, :, :] + self.wt[:, None, :] <= self.cap, axis=2)
        return ok & np.all(self.size[g] - self.wt >= self.floor, axis=1)[:, None]

    def violation(self, size: Array | None = None) -> Array:
        """Per group: how far outside the limits it is (summed over the measures, in shares)."""
        size = self.size if size is None else size
        return ((np.maximum(size - self.cap, 0) + np.maximum(self.floor - size, 0)) / self.share).sum(axis=-1)

    def repair(self) -> None:
        """Greedy moves, each the one that brings the groups closest to the limits (ties: the
        best gain for the objective), until all are within them or no move helps."""
        L, S = self.L, self.S
        g = self.groups[:L]
        rows = np.arange(L)
        for _ in range(L):
            before = self.violation()
            if before.sum() <= 1e-12:
                return
            # Violation of the source and destination groups after each move (l, b).
            src = self.violation(self.size[g] - self.wt)  # (L,)
            dst = self.violation(self.size[None, :, :] + self.wt[:, None, :])  # (L, S)
            delta = src[:, None] + dst - before[g][:, None] - before[None, :]
            delta[rows, g] = np.inf
            best = delta.min()
            if not best < -1e-12:
                return
            gain = np.where(delta <= best + 1e-12, self.own[:L, None] - self.absent[:L], np.iinfo(np.int64).min)
            x, b = divmod(int(np.argmax(gain)), S)
            self.move(x, b)

    def fm_pass(self) -> int:
        """One pass; returns the reduction of the summed visits (>= 0: the best prefix is kept)."""
        L, S = self.L, self.S
        locked = ~self.movable
        history = []
        gain_sum = best_sum = best_len = 0
        patience = _FM_PATIENCE
        g = self.groups[:L]
        lowest = np.iinfo(np.int64).min
        while True:
            ok = self._within(g)
            ok[np.arange(L), g] = False
            ok[locked] = False
            if not ok.any():
                break
            gain = np.where(ok, self.own[:L, None] - self.absent[:L], lowest)
            x, b = divmod(int(np.argmax(gain)), S)
            step = int(gain[x, b])
            history.append((x, int(g[x])))
            self.move(x, b)
            locked[x] = True
            gain_sum += step
            if gain_sum > best_sum:
                best_sum, best_len = gain_sum, len(history)
            elif len(history) - best_len >= patience:
                break
        for x, a in reversed(history[best_len:]):
            self.move(x, a)
        return best_sum


def refine_leaf_groups(
    groups: ArrayLike,
    probes: ArrayLike,
    counts: ArrayLike,
    n_groups: int,
    *,
    max_imbalance: float = MAX_IMBALANCE,
    load_limits: tuple[float, float] | None = None,
    passes: int = 20,
    rounds: int = 0,
    seed: int = 0,
) -> Array:
    """Move leaves between groups to reduce the groups a query's probed leaves fall in.

    ``probes`` (m, w): the leaves probed by m sample queries (-1: none; indexed vectors serve:
    queries follow the data). Objective: the mean number of distinct groups per sample query.
    First greedy moves bring every group within ``max_imbalance`` of its share of the vectors
    (and, when ``load_limits`` (low, high) are given, its fraction of the total scan load
    (``scan_load``) between them) where single moves can (``_Refiner.repair``). Then
    Fiduccia-Mattheyses passes (``_Refiner``) until a pass gains nothing (at most ``passes``),
    every move keeping each group within those limits (a group still outside one is never made
    worse). Then ``rounds`` rounds of an iterated local search: swap the groups of a few random
    pairs of leaves of about the same size (5 % of the leaves; a swap that would break the
    balance is skipped), repair and refine again, and keep the result if the objective is lower.
    Deterministic for the seed.
    """
    groups = np.array(groups, np.int32)
    counts = np.asarray(counts, np.int64)
    probes = np.asarray(probes)
    if n_groups == 1 or probes.ndim != 2 or not probes.size:
        return groups
    r = _Refiner(groups, probes, counts, n_groups, max_imbalance, load_limits)

    def descend() -> None:
        for _ in range(passes):
            if r.fm_pass() <= 0:
                break

    r.repair()
    descend()
    best, best_obj = r.groups[: r.L].copy(), r.objective()
    rng = np.random.default_rng([seed, 7])
    by_size = np.argsort(counts, kind="stable")
    for _ in range(rounds):
        g = best.copy()
        size = r.sizes(g)
        for i in rng.integers(0, len(g) - 1, size=max(1, len(g) // 20)):
            x, y = by_size[i], by_size[i + 1]
            gx, gy = g[x], g[y]
            delta = r.wt[y] - r.wt[x]  # group gx gains it, gy loses it
            if gx == gy or (r.violation(size[[gx, gy]] + [delta, -delta]) > r.violation(size[[gx, gy]]) + 1e-12).any():
                continue
            g[x], g[y] = gy, gx
            size[gx] += delta
            size[gy] -= delta
        r.set_groups(g)
        r.repair()
        descend()
        obj = r.objective()
        if obj < best_obj:
            best, best_obj = r.groups[: r.L].copy(), obj
    return best.astype(np.int32)


def scan_load(counts: ArrayLike, probes: ArrayLike) -> Array:
    """Per leaf: the candidates a sample query scans there on average (its vectors times the
    share of the sample queries ``probes`` (m, w) probing it; -1: none). The work a shard
    does per query is the sum over its leaves."""
    counts = np.asarray(counts, np.float64)
    probes = np.asarray(probes)
    if probes.ndim != 2 or not len(probes):
        return counts.copy()
    hits = np.bincount(probes[probes >= 0].ravel(), minlength=len(counts))[: len(counts)]
    return counts * hits / len(probes)


def balanced_bins(loads: ArrayLike, n_bins: int) -> list[int]:
    """A bin for every item, the bins' summed loads balanced: the heaviest item first, each to
    the least loaded bin (ties: the lower bin). Deterministic."""
    loads = np.asarray(loads, np.float64)
    total = np.zeros(max(1, int(n_bins)))
    out = [0] * len(loads)
    for j in np.argsort(-loads, kind="stable"):
        b = int(np.argmin(total))
        out[int(j)] = b
        total[b] += loads[j]
    return out


def place_leaves(
    centres: ArrayLike,
    counts: ArrayLike,
    probes: ArrayLike,
    n_groups: int,
    *,
    max_imbalance: float = MAX_IMBALANCE,
    load_limits: tuple[float, float] | None = None,
    rounds: int = PLACEMENT_ROUNDS,
    seed: int = 0,
) -> Array:
    """The leaf placement of ``ShardedAVQIndex``: a spectral balanced bisection of the co-probe
    graph (``balanced_leaf_groups``) refined by Fiduccia-Mattheyses passes and an iterated
    local search (``refine_leaf_groups``); every shard within ``max_imbalance`` of its share
    of the vectors (and its fraction of the scan load within ``load_limits``, if given), where
    single leaf moves can reach it. Deterministic for the seed."""
    groups = balanced_leaf_groups(centres, counts, n_groups, probes, seed=seed)
    return refine_leaf_groups(
        groups,
        probes,
        counts,
        n_groups,
        max_imbalance=max_imbalance,
        load_limits=load_limits,
        rounds=rounds,
        seed=seed,
    )


# The placement of shards on workers searches moves and swaps up to this many shards.
_HOME_SEARCH_MAX_SHARDS = 64


def place_shards(
    centres: ArrayLike, counts: ArrayLike, probes: ArrayLike, n_shards: int, n_workers: int, *, seed: int = 0
) -> tuple[Array, list[int]]:
    """The leaves of every shard and the worker (0 .. n_workers - 1) each shard is built on.

    A worker works as hard as the scan load (``scan_load``) of its shards. With one shard per
    worker (n_shards <= n_workers), the placement keeps every shard within ``MAX_IMBALANCE`` of
    its share of the load, as of the vectors. With more shards than workers, no shard may carry
    more than a worker's share (times 1 + ``MAX_IMBALANCE``): a tighter limit per shard would cost
    shard visits (on GloVe-190k at 8 shards, 5.1 instead of 4.5 per query with 10 %); the shards
    are then placed on the workers balanced by load, with as few workers per query as the load
    limits allow (``_home_by_coprobe``).
    """
    one_each = n_shards <= n_workers
    if one_each:
        limits = ((1.0 - MAX_IMBALANCE) / n_shards, (1.0 + MAX_IMBALANCE) / n_shards)
    else:
        limits = (0.0, (1.0 + MAX_IMBALANCE) / max(1, n_workers))
    groups = place_leaves(centres, counts, probes, n_shards, load_limits=limits, seed=seed)
    if one_each:
        return groups, list(range(n_shards))
    load = np.bincount(groups, weights=scan_load(counts, probes), minlength=n_shards)
    return groups, _home_by_coprobe(probes, groups, n_shards, n_workers, load)


def _home_by_coprobe(probes: ArrayLike, groups: Array, n_shards: int, n_workers: int, load: Array) -> list[int]:
    """Workers for the shards (n_shards > n_workers): a worker searches its shards of a query as
    one index (``worker.search``), so its work per query grows with the workers a query visits.
    Starts from the shards balanced by scan load (``balanced_bins``), then moves single shards and
    swaps pairs while that lowers the mean number of workers the sample queries visit and keeps
    every worker within ``MAX_IMBALANCE`` of its share of the load (best gain first; the gains of
    every move and swap come from a few matrix products per step). On GloVe-190k (20 leaves
    probed), workers per query against the load balance alone: 1.77 / 1.73 instead of 1.95 /
    1.94 at 8 / 16 shards on 2 workers, 2.84 instead of 3.74 at 32 shards on 4, 4.51 instead of
    6.39 at 64 shards on 8 (0.3 s). Above ``_HOME_SEARCH_MAX_SHARDS`` shards the load balance
    only."""
    home = np.asarray(balanced_bins(load, n_workers), np.int64)
    probes = np.asarray(probes)
    if n_shards > _HOME_SEARCH_MAX_SHARDS or not len(probes):
        return [int(h) for h in home]
    # hit[q, j]: sample query q probes shard j; per[q, c]: its shards on worker c. Counts are
    # small integers, exact in float32 (the products below run as BLAS matrix products).
    hit = np.zeros((len(probes), n_shards), np.float32)
    rows = np.repeat(np.arange(len(probes)), probes.shape[1])
    valid = probes.ravel() >= 0
    hit[rows[valid], groups[probes.ravel()[valid]]] = 1.0
    load = np.asarray(load, np.float64)
    lo, hi = (1.0 - MAX_IMBALANCE) * load.sum() / n_workers, (1.0 + MAX_IMBALANCE) * load.sum() / n_workers
    shards = np.arange(n_shards)
    for _ in range(4 * n_shards):
        per = hit @ np.eye(n_workers, dtype=np.float32)[home]
        wload = np.bincount(home, weights=load, minlength=n_workers)
        one = (per == 1).astype(np.float32)
        # gain[j, c]: workers visited that moving shard j to worker c saves (queries whose only
        # shard on j's worker is j, minus those with no shard on c yet).
        alone = (hit.T @ one)[shards, home]
        gain = alone[:, None] - hit.T @ (per == 0).astype(np.float32)
        gain[shards, home] = 0.0
        ok = (wload[home] - load >= lo)[:, None] & (wload[None, :] + load[:, None] <= hi)
        move = np.where(ok, gain, 0.0)
        # Swapping j and i (on different workers): both moves, less the queries probing both
        # (their counts do not change): both[j, i] = sum over them of [j alone on its worker].
        both = (hit * one[:, home]).T @ hit
        swap = gain[:, home] + gain[:, home].T - both - both.T
        new_a = wload[home][:, None] - load[:, None] + load[None, :]  # j's worker after the swap
        feasible = (home[:, None] != home[None, :]) & (new_a >= lo) & (new_a <= hi) & (new_a.T >= lo) & (new_a.T <= hi)
        swap = np.where(feasible, swap, 0.0)
        best_move, best_swap = move.max(), swap.max()
        if max(best_move, best_swap) <= 0.5:  # (gains are integers)
            break
        if best_move >= best_swap:
            j, c = np.unravel_index(int(np.argmax(move)), move.shape)
            home[j] = c
        else:
            j, i = np.unravel_index(int(np.argmax(swap)), swap.shape)
            home[j], home[i] = home[i], home[j]
    return [int(h) for h in home]


def route_queries(
    P: Array, leaf_to_shard: Array, leaf_sizes: Array, n_shards: int, reorder_k: int | ArrayLike, compact: bool = False
) -> tuple[dict[int, tuple[Any, ...]], Array, Array]:
    """The work of a routed search: which shard scans which leaves for which queries (native:
    ``native/src/routing.h``, which also states the rule of the re-ranking split).

    P: int (nq, w), the probed leaves of every query, best first (``AVQIndex._probe``), -1 for none.
    Returns (jobs, visited, scanned): jobs maps a shard to (query rows, leaves int32 (rows, width)
    in probe order padded with -1, re-ranking budgets (rows,), candidates, candidates per row
    (rows,)); per query the number of shards visited and the candidates scanned (the re-ranking
    work: ``reranked_per_query``). A query's budget, ``reorder_k``, is split over its shards by
    the vector counts of its probed leaves, each divided by its rank in the probe order + 1; every
    shard gets all of it when it covers the query's candidates (the search is then exact).
    ``reorder_k``: one budget for every query, or an array of one per query (``leaf_margin``).
    ``compact``: each shard's leaves as offsets (rows + 1,) and a flat list without padding, in
    place of the padded matrix: (rows, offsets, leaves, budgets, candidates, candidates per row).
    """
    return route_queries_native(
        np.ascontiguousarray(P, dtype=np.int32),
        np.ascontiguousarray(leaf_to_shard, dtype=np.int32),
        np.ascontiguousarray(leaf_sizes, dtype=np.int64),
        int(n_shards),
        np.ascontiguousarray(np.atleast_1d(reorder_k), dtype=np.int64),
        bool(compact),
    )


def shards_by_group(shards: Iterable[int], shard_group: ArrayLike) -> dict[int, list[int]]:
    """The given shards by search group, each group's in increasing order (the order a worker
    scans them in, ``worker.search``)."""
    groups = np.asarray(shard_group)
    out: dict[int, list[int]] = {}
    for j in sorted(shards):
        out.setdefault(int(groups[j]), []).append(int(j))
    return out


def union_rows(row_arrays: list[Array]) -> tuple[Array, list[Array]]:
    """The union of jobs' query rows (each array increasing and distinct, none empty), increasing,
    and each job's rows as positions in it. One job's rows are the union as they are."""
    if len(row_arrays) == 1:
        return row_arrays[0], [np.arange(len(row_arrays[0]))]
    seen = np.zeros(max(int(r[-1]) for r in row_arrays) + 1, bool)
    for r in row_arrays:
        seen[r] = True
    at = np.cumsum(seen) - 1
    return np.flatnonzero(seen), [at[r] for r in row_arrays]


def group_jobs(jobs: dict[int, tuple[Any, ...]], shard_group: Array) -> dict[int, tuple[Array, Array, Array]]:
    """The jobs of ``route_queries`` as a worker searches them: the shards of one search group
    as one index (``worker.search``). Returns group -> (query rows, leaves int32 (rows, width):
    each row's leaves of the group's shards in increasing shard order, padded with -1,
    re-ranking budgets (rows,): the sum of the shards' budgets)."""
    out = {}
    for g, js in shards_by_group(jobs, shard_group).items():
        if len(js) == 1:
            out[g] = tuple(jobs[js[0]][:3])
            continue
        rows, positions = union_rows([jobs[j][0] for j in js])
        leaves = np.full((len(rows), sum(jobs[j][1].shape[1] for j in js)), -1, np.int32)
        fill = np.zeros(len(rows), np.int64)
        budget = np.zeros(len(rows), np.int64)
        for j, pos in zip(js, positions):
            _, lv, b = jobs[j][:3]
            valid = lv >= 0  # (a prefix of each row)
            cols = fill[pos][:, None] + np.arange(lv.shape[1])
            leaves[np.broadcast_to(pos[:, None], lv.shape)[valid], cols[valid]] = lv[valid]
            fill[pos] += valid.sum(axis=1)
            budget[pos] += b
        out[g] = (rows, leaves[:, : max(1, int(fill.max()))], budget)
    return out


def reranked_per_query(jobs: dict[int, tuple[Any, ...]], shard_group: Array, nq: int, k: int) -> Array:
    """Candidates re-scored per query by the jobs of ``route_queries`` searched by group (as
    ``group_jobs``): a group re-ranks the sum of its shards' budgets once, at most its candidates
    (and at least k)."""
    rerank = np.zeros(nq, np.int64)
    for js in shards_by_group(jobs, shard_group).values():
        budget = np.zeros(nq, np.int64)
        scanned = np.zeros(nq, np.int64)
        seen = np.zeros(nq, bool)
        for j in js:  # (rows, leaves, budgets, candidates, per row), or compact (rows, offsets, leaves, ...)
            rows, b, sc = jobs[j][0], jobs[j][-3], jobs[j][-1]
            budget[rows] += b
            scanned[rows] += sc
            seen[rows] = True
        rerank[seen] += np.minimum(scanned[seen], np.maximum(k, budget[seen]))
    return rerank
