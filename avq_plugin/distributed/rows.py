"""Row-range shards (sharding="rows"): every query goes to every shard with the full budget.

The former design, kept for comparison: shard j holds a contiguous range of rows (= ids) of the
input, encoded with the shared quantizer; each shard is a Dask future of an ``AVQIndex`` (Dask
recomputes a lost one from its lineage, or it is reloaded from the saved files). Immutable once
built.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import numpy as np

from ..index import AVQIndex
from . import worker as W
from .base import ShardLostError, _is_loss, _reemit, _ShardedBase, dask, wait
from .manifest import _FORMAT_NAME, FORMAT_VERSION, _package_version, _prepare_directory, _write_manifest
from .merge import merge_topk


class _RowShards(_ShardedBase):
    """sharding="rows" (a mixin of ``ShardedAVQIndex``)."""

    def _fit_rows(self, X, n, d, client, file_bounds):
        # Shards: contiguous row ranges.
        if self.n_shards is None:
            edges = list(file_bounds) if file_bounds is not None else [0, *np.cumsum(X.chunks[0]).tolist()]
        else:
            if self.n_shards > n:
                raise ValueError(f"n_shards={self.n_shards} exceeds the number of vectors ({n})")
            edges = [(n * j) // self.n_shards for j in range(self.n_shards + 1)]
        bounds = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]

        template, L = self._template_task(X, n)
        tok = self._token

        workers = list(client.scheduler_info(n_workers=-1)["workers"]) or [None]
        shard_tasks = []
        for j, (a, b) in enumerate(bounds):
            pieces = X[a:b].to_delayed().ravel().tolist()
            # Round-robin placement (a preference, not a constraint: a lost worker's shards
            # are rebuilt elsewhere).
            where = {} if workers[0] is None else {"workers": workers[j % len(workers)], "allow_other_workers": True}
            with dask.annotate(**where):
                shard_tasks.append(
                    dask.delayed(W.build_row_shard, pure=True)(
                        template, a, self.num_threads, *pieces, dask_key_name=f"avq-shard-{tok}-{j}"
                    )
                )
        futures = client.compute([template, *shard_tasks], optimize_graph=False)
        wait(futures)
        for f in futures:
            if f.status == "error":
                f.result()  # re-raises the worker's exception (e.g. NaN in a chunk)
        self._adopt(futures[0], futures[1:], bounds, n, d, L)
        return self

    def _adopt(self, template, shards, bounds, n, d, L):
        data, fingerprint, messages = template.result()
        # The budget resolved when the quantizer was trained (stored in its file).
        self._default_budget = AVQIndex.from_bytes(data).default_search_params()
        _reemit(messages, stacklevel=4)
        self._template = template
        self._fingerprint = fingerprint
        self._shards = list(shards)
        self._bounds = list(bounds)
        self._ntotal = int(n)
        self._d = int(d)
        self._num_leaves = int(L)

    def _search_rows(self, Q, k, lts, rk, nt, timeout, margin=None):
        client = self.client
        qf = [client.scatter(Q, broadcast=True, hash=False)]

        def rescatter():
            # A worker that died before the broadcast finished can take the only copy of the
            # queries with it: the scheduler then cancels every search that needs them.
            qf[0].release()
            qf[0] = client.scatter(Q, broadcast=True, hash=False)

        try:
            parts = self._run_on_shards(
                lambda j, key: client.submit(
                    W.search_row_shard, self._shards[j], qf[0], k, lts, rk, nt, margin, key=key
                ),
                "search",
                timeout,
                retry_inputs=rescatter,
            )
        finally:
            qf[0].release()
        t1 = time.perf_counter()
        out = merge_topk([p[0] for p in parts], [p[1] for p in parts], k, self.metric)
        self._stats = {
            "queries": int(Q.shape[0]),
            "shards_visited_per_query": float(len(self._shards)),
            "shard_tasks": len(self._shards),
            "dask_tasks": len(self._shards),
            "candidates_scanned_per_query": None,
            "reranked_per_query": None,
            "client_seconds": time.perf_counter() - t1,
        }
        return out

    def _run_on_shards(self, submit, what, timeout, retry_inputs=None):
        """Runs submit(j, key) for every shard; recovers lost shards once from saved files.
        retry_inputs: called before that one retry, which also runs when the lost tasks' shards
        are still held or being recomputed by Dask (their inputs, not the shards, were lost)."""
        client = self.client
        call = uuid.uuid4().hex[:12]
        futures = {j: submit(j, f"avq-{what}-{call}-{j}") for j in range(len(self._shards))}
        for attempt in range(2):
            try:
                wait(list(futures.values()), timeout=timeout)
            except concurrent.futures.CancelledError:
                # Recent distributed raises FuturesCancelledError from wait() when the scheduler
                # dropped tasks with a dead worker ("already forgotten"); the per-future status
                # below tells which shards were lost.
                pass
            lost = {}
            for j, f in futures.items():
                if f.status == "finished":
                    continue
                exc = f.exception() if f.status == "error" else concurrent.futures.CancelledError(f.status)
                shard_ok = self._shards[j].status == "finished"
                if shard_ok and not _is_loss(exc):
                    raise exc  # a genuine error of the task itself
                lost[j] = exc
            if not lost:
                return client.gather([futures[j] for j in range(len(self._shards))])
            inputs_only = retry_inputs is not None and all(
                self._shards[j].status in ("finished", "pending") for j in lost
            )
            if attempt == 0 and (self._saved is not None or inputs_only):
                if self._saved is not None:
                    self._reload_shards(sorted(lost))
                if retry_inputs is not None:
                    retry_inputs()
                for j in lost:
                    futures[j] = submit(j, f"avq-{what}-{call}-{j}-retry")
                continue
            detail = "; ".join(f"shard {j}: {type(e).__name__}: {e}" for j, e in sorted(lost.items()))
            hint = (
                ""
                if self._saved is not None
                else " (save() the index, or load it from files, so that lost shards can be reloaded)"
            )
            raise ShardLostError(
                f"shard(s) {', '.join(map(str, sorted(lost)))} lost (a worker died) and could not be "
                f"recovered{hint}: {detail}",
                sorted(lost),
            )

    def _reload_shards(self, shard_ids):
        directory, manifest = self._saved
        client = self.client
        for j in shard_ids:
            self._shards[j] = client.submit(
                W.open_shard,
                directory,
                j,
                manifest["shards"][j],
                manifest["quantizer_fingerprint"],
                self._mmap,
                True,
                self.num_threads,
                key=f"avq-shard-{self._token}-{j}-reload-{uuid.uuid4().hex[:8]}",
            )
        wait([self._shards[j] for j in shard_ids])

    def _save_rows(self, directory):
        client = self.client
        ready = client.submit(_prepare_directory, directory, pure=False)
        tfile = client.submit(W.save_template, self._template, directory, ready, pure=False)
        names = [f"shard-{j:05d}.avq" for j in range(len(self._shards))]
        entries = self._run_on_shards(
            lambda j, key: client.submit(W.save_row_shard, self._shards[j], directory, names[j], ready, key=key),
            "save",
            None,
        )
        infos = self.shard_info()
        for j, (entry, info) in enumerate(zip(entries, infos)):
            entry.update(shard=j, ntotal=info["ntotal"], id_start=self._bounds[j][0], id_stop=self._bounds[j][1])
        manifest = {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "avq_plugin_version": _package_version(),
            "sharding": "rows",
            "params": self._params(),
            "d": self._d,
            "num_leaves": self._num_leaves,
            "ntotal": self._ntotal,
            "n_shards": len(self._shards),
            "num_threads": self.num_threads,
            "quantizer": tfile.result(),
            "quantizer_fingerprint": self._fingerprint,
            "shards": entries,
        }
        client.submit(_write_manifest, directory, manifest, ready, pure=False).result()
        self._saved = (directory, manifest)
        return manifest

    def _load_rows(self, directory, manifest, mmap, verify):
        client = self.client
        self.replicas = 1
        tok = self._token
        template = client.submit(
            W.load_template, directory, manifest["quantizer"], bool(verify), key=f"avq-train-{tok}"
        )
        workers = list(client.scheduler_info(n_workers=-1)["workers"]) or [None]
        shards = []
        for j, entry in enumerate(manifest["shards"]):
            shards.append(
                client.submit(
                    W.open_shard,
                    directory,
                    j,
                    entry,
                    manifest["quantizer_fingerprint"],
                    bool(mmap),
                    bool(verify),
                    self.num_threads,
                    key=f"avq-shard-{tok}-{j}",
                    # Spread the shards over the workers present; with none yet (e.g. one restarting),
                    # let the scheduler place them.
                    **(
                        {}
                        if workers[0] is None
                        else {"workers": workers[j % len(workers)], "allow_other_workers": True}
                    ),
                )
            )
        wait([template, *shards])
        errors = [f.exception() for f in [template, *shards] if f.status == "error"]
        if errors:
            raise ValueError("; ".join(str(e) for e in errors)) from errors[0]
        if template.result()[1] != manifest["quantizer_fingerprint"]:
            raise ValueError(f"{directory}: the quantizer file does not match the manifest")
        bounds = [(e["id_start"], e["id_stop"]) for e in manifest["shards"]]
        self._adopt(template, shards, bounds, manifest["ntotal"], manifest["d"], manifest["num_leaves"])
        self._saved = (directory, manifest)
        self._mmap = bool(mmap)

    def _shard_info_rows(self):
        client = self.client
        infos = client.gather([client.submit(W.row_shard_info, s, pure=False) for s in self._shards])
        where = client.who_has(self._shards)
        for j, (info, s) in enumerate(zip(infos, self._shards)):
            info["shard"] = j
            info["start"], info["stop"] = self._bounds[j]
            info["workers"] = sorted(where.get(s.key, ()))
        return infos
