"""Leaf-routed shards: placement of whole leaves, routed search, live updates and files.

One quantizer is trained for the whole data set; each shard holds whole leaves (balanced by
vector count, co-probed leaves together: ``placement.py``); the client keeps the trained, empty
index as a router, computes every query's probed leaves once and sends each query only to the
shards owning them, with one ``reorder_k`` budget split across those shards. Shards live in the
workers' registries (``worker.py``), possibly replicated (``replicas.py``).
"""

from __future__ import annotations

import time

import numpy as np

from .. import _validation as V
from .._index_protected import margin_reorder_k
from ..index import AVQIndex
from . import worker as W
from .base import ShardLostError, _reemit, dask, wait
from .manifest import (
    _FORMAT_NAME,
    _QUANTIZER_FILE,
    FORMAT_VERSION,
    _package_version,
    _prepare_directory,
    _write_manifest,
)
from .merge import merge_rows
from .placement import place_shards, reranked_per_query, route_queries, shards_by_group, union_rows
from .replicas import _Replicas
from .sources import _allocate
from .wire import pack_jobs

# Sample queries (indexed vectors) whose probed leaves guide the leaf placement.
_PLACEMENT_SAMPLE = 20000


class _LeafShards(_Replicas):
    """sharding="leaves" (a mixin of ``ShardedAVQIndex``)."""

    def _fit_leaves(self, X, n, d, client):
        template_task, L = self._template_task(X, n)
        tok = self._token
        template = client.compute(template_task, optimize_graph=False)
        wait([template])
        data, fingerprint, messages = template.result()
        router = AVQIndex.from_bytes(data)
        router.num_threads = V.resolve_threads(None)
        workers = sorted(self._live_workers())
        S = self.n_shards or max(1, len(workers))
        if S > L:
            raise ValueError(f"n_shards={S} exceeds the number of leaves ({L})")
        if self.replicas > len(workers):
            raise ValueError(
                f"replicas={self.replicas} needs at least as many workers (the cluster has {len(workers)})"
            )
        lts_place = min(L, router.default_search_params()[0])
        row_chunks = X.chunks[0]
        offsets = np.concatenate([[0], np.cumsum(row_chunks)]).astype(np.int64)
        alloc = _allocate(min(n, _PLACEMENT_SAMPLE), row_chunks)
        blocks = X.to_delayed().ravel()
        assign_tasks = []
        for i, (block, size, m) in enumerate(zip(blocks, row_chunks, alloc)):
            rows = np.sort(np.random.default_rng([self.seed, i, 1]).choice(size, size=int(m), replace=False))
            assign_tasks.append(
                dask.delayed(W.assign_chunk, pure=True)(
                    template, block, rows, lts_place, dask_key_name=f"avq-assign-{tok}-{i}"
                )
            )
        assigned = client.compute(assign_tasks, optimize_graph=False)
        counts_f = [client.submit(W.chunk_counts, a, L, pure=False) for a in assigned]
        probes_f = [client.submit(W.second, a, pure=False) for a in assigned]
        wait(counts_f + probes_f)
        for f in counts_f + probes_f:
            if f.status == "error":
                f.result()  # re-raises the worker's exception (e.g. NaN in a chunk)
        counts = np.sum(client.gather(counts_f), axis=0).astype(np.int64)
        probes = [p for p in client.gather(probes_f) if p is not None and len(p)]
        probes = np.concatenate(probes) if probes else np.zeros((0, lts_place), np.int32)
        groups, home = place_shards(router._probe_centers(), counts, probes, S, len(workers), seed=self.seed)

        piece_tasks = [
            [
                dask.delayed(W.rows_for_shard, pure=True)(block, assigned[i], groups, j, int(offsets[i]))
                for i, block in enumerate(blocks)
            ]
            for j in range(S)
        ]
        flat = client.compute([t for tasks in piece_tasks for t in tasks], optimize_graph=False)
        pieces = [flat[j * len(blocks) : (j + 1) * len(blocks)] for j in range(S)]
        builds = [
            client.submit(
                W.build,
                tok,
                j,
                template,
                self.num_threads,
                *pieces[j],
                key=f"avq-build-{tok}-{j}",
                workers=[workers[home[j] % len(workers)]],
                allow_other_workers=True,
                pure=False,
            )
            for j in range(S)
        ]
        wait(builds)
        for f in builds:
            if f.status == "error":
                f.result()
        infos = client.gather(builds)
        del pieces, flat, assigned, builds, template  # the client keeps the quantizer's bytes
        self._template = None
        self._template_bytes = data
        self._fingerprint = fingerprint
        self._router = router
        self._default_budget = router.default_search_params()
        self._leaf_to_shard = groups
        self._leaf_sizes = counts
        self._holders = [[info["worker"]] for info in infos]
        self._shard_group = np.asarray(home, np.int32)
        self._make_groups_whole()
        self._n_shards = S
        self._ntotal, self._d, self._num_leaves, self._next_id = int(n), int(d), int(L), int(n)
        _reemit(messages, stacklevel=4)
        self._add_replicas(wait_for_them=True)
        return self

    def _search_routed(self, Q, k, lts, rk, nt, timeout, margin=None):
        t0 = time.perf_counter()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._refresh_replicas(recent=True)
        nq = Q.shape[0]
        P = self._widen_short_probes(Q, self._router._probe(Q, lts, leaf_margin=margin), k)
        if margin is not None:  # each query's budget as one AVQIndex's (native margin_reorder_k)
            rk = margin_reorder_k(rk, (P >= 0).sum(axis=1).astype(np.int64), lts, self._ntotal)
        # Queries with the same best leaf sent together: a worker's scans of consecutive
        # queries then share the leaves' codes and vectors in cache (in-process, one AVQIndex,
        # 10,000 GloVe queries in this order: 8-20 % less CPU in _search_leaves).
        order = np.argsort(P[:, 0], kind="stable")
        P, Qs = P[order], Q[order]
        jobs, visited, total = route_queries(P, self._leaf_to_shard, self._leaf_sizes, self._n_shards, rk, compact=True)
        rerank = np.zeros(nq, np.int64)
        client_s = time.perf_counter() - t0
        parts, tasks, shard_tasks = [], 0, 0
        remaining = dict(jobs)
        while remaining:
            t1 = time.perf_counter()
            flight = self._send_routed(Qs, k, remaining, nt)
            tasks += len(flight)
            shard_tasks += sum(len(f[0]) for f in flight)
            client_s += time.perf_counter() - t1
            results = self._collect([f[2] for f in flight], deadline)
            for (shards, rows_w, _), (ok, res) in zip(flight, results):
                if ok:  # else: the shards of a lost replica go again, to another one
                    parts.append((order[rows_w], res[0], res[1]))
                    done = {j: remaining.pop(j) for j in shards}
                    rerank += reranked_per_query(done, self._shard_group, nq, k)
        t2 = time.perf_counter()
        D, I = merge_rows(nq, k, parts, self.metric)
        client_s += time.perf_counter() - t2
        self._stats = {
            "queries": int(nq),
            "shards_visited_per_query": float(visited.mean()) if nq else 0.0,
            "shard_tasks": int(shard_tasks),
            "dask_tasks": int(tasks),
            "candidates_scanned_per_query": float(total.mean()) if nq else 0.0,
            "reranked_per_query": float(rerank.mean()) if nq else 0.0,
            "client_seconds": client_s,
        }
        if self.replicas > 1:
            self._add_replicas(recent=True)
        return D, I

    def _send_routed(self, Q, k, jobs, nt):
        """Sends each search group's jobs to its least busy live worker holding the whole group
        (work = candidates to scan), one actor call per worker; returns [(shards, query rows,
        pending call)]."""
        busy, plan = {}, {}
        self._recover_all(jobs)
        groups = shards_by_group(jobs, self._shard_group)
        work = {g: sum(jobs[j][4] for j in js) for g, js in groups.items()}
        for g in sorted(groups, key=lambda g: (-work[g], g)):
            hs = self._group_holders(groups[g])
            w = min(hs, key=lambda w: (busy.get(w, 0), w))
            busy[w] = busy.get(w, 0) + work[g]
            plan.setdefault(w, []).extend(groups[g])
        calls, rows_of_call = [], []
        for w, shards in plan.items():
            shards.sort()  # (the worker orders a query's jobs of one group by their best leaf)
            rows_w, pos = union_rows([jobs[j][0] for j in shards])
            # (compact routing: rows, offsets, leaves, budgets, ...; wire.Job: shard, rows, leaves, budgets, group, offsets)
            job_list = [
                (j, p, jobs[j][2], jobs[j][3], int(self._shard_group[j]), jobs[j][1]) for j, p in zip(shards, pos)
            ]
            packed = pack_jobs(job_list, len(rows_w), self._num_leaves)
            calls.append((w, (self._token, Q[rows_w], k, packed, nt)))
            rows_of_call.append(rows_w)
        pending = self._call_searchers(calls)
        return [(shards, rows_w, p) for shards, rows_w, p in zip(plan.values(), rows_of_call, pending)]

    def _widen_short_probes(self, Q, P, k):
        """As one AVQIndex does: a query whose probed leaves hold fewer than k vectors probes
        the next leaves, best first, until they hold k (or every leaf is probed)."""
        need = min(k, self._ntotal)
        short = np.flatnonzero(np.where(P >= 0, self._leaf_sizes[P], 0).sum(axis=1) < need)
        if not len(short):
            return P
        full = self._router._probe(Q[short], self._num_leaves)
        cum = np.cumsum(self._leaf_sizes[full], axis=1)
        n_probe = np.minimum((cum < need).sum(axis=1) + 1, full.shape[1])
        width = max(P.shape[1], int(n_probe.max()))
        wide = np.full((P.shape[0], width), -1, np.int32)
        wide[:, : P.shape[1]] = P
        wide[short] = np.where(np.arange(width) < n_probe[:, None], full[:, :width], -1)
        return wide

    def add(self, X, ids=None):
        """Add vectors (sharding="leaves"): each goes to the shard owning its leaf, on every replica.

        ids : int64 (n,), optional
            Default: max id + 1 onwards. An id already in the index is a ValueError (nothing is
            added). Searches may run meanwhile (they see each shard before or after the add).

        Returns self.
        """
        self._require_leaves("add")
        X = V.as_float_matrix(X, "X", d=self._d, nonzero_rows=self.metric == "cosine")
        ids = V.as_ids(ids, X.shape[0])
        with self._update_lock:
            if ids is None:
                ids = np.arange(self._next_id, self._next_id + X.shape[0], dtype=np.int64)
            self._check_new_ids(ids)
            leaves = self._router._probe(X, 1)[:, 0]
            shard = self._leaf_to_shard[leaves]
            self._wait_rebuilds()
            calls, owner = [], []
            for j in np.unique(shard):
                sel = np.flatnonzero(shard == j)
                for w in self._holders_or_recover(int(j)):
                    calls.append((w, W.add, (self._token, int(j), X[sel], ids[sel])))
                    owner.append(int(j))
            results = self._run_pinned(calls, "add")
            applied = {j for j, (ok, _) in zip(owner, results) if ok}
            lost = sorted(set(owner) - applied)
            with self._lock:
                np.add.at(self._leaf_sizes, leaves[np.isin(shard, list(applied))], 1)
                self._ntotal += int(np.isin(shard, list(applied)).sum())
                self._next_id = max(self._next_id, int(ids.max()) + 1)
                self._dirty.update(int(j) for j in np.unique(shard))
            if lost:
                raise ShardLostError(
                    f"shard(s) {', '.join(map(str, lost))} lost every replica during add; their vectors were not added",
                    lost,
                )
        self._add_replicas()
        return self

    def _check_new_ids(self, ids):
        calls = [(self._holders_or_recover(j)[0], W.contains, (self._token, j, ids)) for j in range(self._n_shards)]
        for ok, res in self._run_pinned(calls, "contains"):
            if not ok:
                raise ShardLostError("a worker died while ids were checked; retry", [])
            if res.any():
                raise ValueError(f"id {int(ids[np.argmax(res)])} is already in the index")

    def remove(self, ids):
        """Delete vectors by id from every shard and replica (sharding="leaves"). Returns the number removed."""
        self._require_leaves("remove")
        ids = V.as_ids(ids, None, unique=False, reject_padding=False)
        with self._update_lock:
            self._wait_rebuilds()
            calls, owner = [], []
            for j in range(self._n_shards):
                for w in self._holders_or_recover(j):
                    calls.append((w, W.remove, (self._token, j, ids)))
                    owner.append(j)
            results = self._run_pinned(calls, "remove")
            removed, done = 0, set()
            with self._lock:
                for j, (ok, res) in zip(owner, results):
                    if not ok or j in done:
                        continue
                    done.add(j)
                    count, sizes = res
                    removed += count
                    mine = self._leaf_to_shard == j
                    self._leaf_sizes[mine] = sizes[mine]
                    if count:
                        self._dirty.add(j)
                self._ntotal -= removed
            lost = sorted(set(range(self._n_shards)) - done)
            if lost:
                raise ShardLostError(f"shard(s) {', '.join(map(str, lost))} lost every replica during remove", lost)
        return removed

    def _shard_info_leaves(self):
        self._refresh_replicas()
        calls, owner = [], []
        for j in range(self._n_shards):
            for w in self._holders_or_recover(j):
                calls.append((w, W.info, (self._token, j)))
                owner.append(j)
        infos = {}
        for j, (ok, res) in zip(owner, self._run_pinned(calls, "info")):
            if ok:
                infos.setdefault(j, dict(res, workers=[], replica_memory_usage=0))
                infos[j]["workers"].append(res["worker"])
                infos[j]["replica_memory_usage"] += res["memory_usage"]
        out = []
        for j in range(self._n_shards):
            info = infos.get(j, {"shard": j, "workers": []})
            info.pop("worker", None)
            info["workers"] = sorted(info["workers"])
            info["num_leaves"] = int((self._leaf_to_shard == j).sum())
            info["search_group"] = int(self._shard_group[j])
            out.append(info)
        return out

    def _save_leaves(self, directory):
        client = self.client
        client.submit(_prepare_directory, directory, pure=False).result()
        qentry = client.submit(
            W.write_bytes_entry, directory, _QUANTIZER_FILE, self._template_bytes, pure=False
        ).result()
        names = [f"shard-{j:05d}.avq" for j in range(self._n_shards)]
        entries = {}
        todo = set(range(self._n_shards))
        while todo:
            calls = [
                (self._holders_or_recover(j)[0], W.save, (self._token, j, directory, names[j])) for j in sorted(todo)
            ]
            for j, (ok, res) in zip(sorted(todo), self._run_pinned(calls, "save")):
                if ok:
                    entries[j] = dict(res, shard=j)
                    todo.discard(j)
        manifest = {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "avq_plugin_version": _package_version(),
            "sharding": "leaves",
            "params": self._params(),
            "d": self._d,
            "num_leaves": self._num_leaves,
            "ntotal": sum(e["ntotal"] for e in entries.values()),
            "n_shards": self._n_shards,
            "replicas": self.replicas,
            "num_threads": self.num_threads,
            "next_id": self._next_id,
            "leaf_to_shard": [int(s) for s in self._leaf_to_shard],
            "shard_groups": [int(g) for g in self._shard_group],
            "leaf_sizes": [int(s) for s in self._leaf_sizes],
            "quantizer": qentry,
            "quantizer_fingerprint": self._fingerprint,
            "shards": [entries[j] for j in range(self._n_shards)],
        }
        client.submit(_write_manifest, directory, manifest, None, pure=False).result()
        self._saved = (directory, manifest)
        self._dirty = set()
        return manifest

    def _load_leaves(self, directory, manifest, mmap, verify):
        client = self.client
        data, fingerprint, _ = client.submit(
            W.load_template, directory, manifest["quantizer"], bool(verify), pure=False
        ).result()
        if fingerprint != manifest["quantizer_fingerprint"]:
            raise ValueError(f"{directory}: the quantizer file does not match the manifest")
        workers = sorted(self._live_workers())
        if not workers:
            raise ValueError("the cluster has no workers to load the shards")
        S = manifest["n_shards"]
        R = min(self.replicas, len(workers))
        # (A manifest without groups: each shard its own group, as before groups existed.)
        groups = np.asarray(manifest.get("shard_groups", range(S)), np.int32)
        rank = {int(g): i for i, g in enumerate(np.unique(groups))}
        calls, owner = [], []
        for j, entry in enumerate(manifest["shards"]):
            for r in range(R):
                w = workers[(rank[int(groups[j])] + r) % len(workers)]  # a group's shards together
                args = (self._token, j, directory, entry, fingerprint, bool(mmap), bool(verify), self.num_threads)
                calls.append((w, W.load, args))
                owner.append(j)
        try:
            results = self._run_pinned(calls, "load")
        except ValueError:
            client.run(W.drop, self._token)
            raise
        self._holders = [[] for _ in range(S)]
        for j, (w, _, _), (ok, _) in zip(owner, calls, results):
            if ok:
                self._holders[j].append(w)
        self._router = AVQIndex.from_bytes(data)
        self._router.num_threads = V.resolve_threads(None)
        self._default_budget = self._router.default_search_params()
        self._template_bytes = data
        self._fingerprint = fingerprint
        self._leaf_to_shard = np.asarray(manifest["leaf_to_shard"], np.int32)
        self._leaf_sizes = np.asarray(manifest["leaf_sizes"], np.int64)
        self._n_shards = S
        self._shard_group = groups
        self._ntotal, self._d, self._num_leaves = manifest["ntotal"], manifest["d"], manifest["num_leaves"]
        self._next_id = manifest["next_id"]
        self._saved = (directory, manifest)
        self._mmap = bool(mmap)
        self._make_groups_whole()
        self._add_replicas(wait_for_them=True)
