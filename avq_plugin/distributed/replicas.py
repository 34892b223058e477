"""Replicas of leaf shards: which workers hold each shard, tasks pinned to them, lost copies re-created.

Every replica is an ``AVQIndex`` in the registry of one worker (``worker.py``). The client keeps,
per shard, the list of live workers holding it; a task on a shard runs on one of them (a strict
worker restriction, so Dask never moves a shard behind the index's back); a worker that dies or
leaves is dropped from the lists and the missing copies are rebuilt in the background from a
surviving one (bytes moved by Dask), or reloaded from the saved files when no copy is left.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid

import numpy as np

from . import worker as W
from .base import _POLL_S, Actor, ShardLostError, _is_loss, _ShardedBase, wait


class _Replicas(_ShardedBase):
    """Replica bookkeeping for leaf shards (a mixin of ``ShardedAVQIndex``)."""

    def _run_pinned(self, calls, what, deadline=None):
        """Runs fn(*args) on worker w for each (w, fn, args); a call whose worker died (or lost
        the replica) gives (False, exc) and marks the worker lost; other errors propagate.
        Returns [(ok, result or exception)] in call order."""
        client = self.client
        call = uuid.uuid4().hex[:12]
        futs = [
            client.submit(fn, *args, key=f"avq-{what}-{call}-{i}", workers=[w], allow_other_workers=False, pure=False)
            for i, (w, fn, args) in enumerate(calls)
        ]
        out = [None] * len(futs)
        pending = set(range(len(futs)))
        try:
            while pending:
                try:
                    wait([futs[i] for i in pending], timeout=_POLL_S, return_when="FIRST_COMPLETED")
                except (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError):
                    pass
                except concurrent.futures.CancelledError:
                    pass  # per-future status below
                progressed = False
                for i in sorted(pending):
                    f = futs[i]
                    if f.status == "pending":
                        continue
                    pending.discard(i)
                    progressed = True
                    if f.status == "finished":
                        out[i] = (True, f.result())
                        continue
                    exc = f.exception() if f.status == "error" else concurrent.futures.CancelledError(f.status)
                    if isinstance(exc, W.ReplicaMissing) or _is_loss(exc):
                        out[i] = (False, exc)
                        self._mark_lost(calls[i][0])
                    else:
                        raise exc
                if pending and not progressed:
                    pending.difference_update(self._drop_departed([c[0] for c in calls], sorted(pending), out))
                if deadline is not None and pending and time.monotonic() > deadline:
                    raise TimeoutError(f"{what}: the workers did not answer in time")
        finally:
            for i in pending:
                futs[i].cancel()
        return out

    def _searcher(self, w):
        """The search actor of this index on worker w (created on first use; the client holds it)."""
        with self._lock:
            entry = self._searchers.get(w)
            if entry is not None and entry[0].status not in ("finished", "pending"):
                # The actor went with its worker (a search whose list of live workers is recent,
                # not fresh, can name a worker that died since; Dask's handle would raise a
                # RuntimeError): a lost call, as the worker's death mid-search is.
                del self._searchers[w]
                raise OSError(f"worker {w} lost its search actor ({entry[0].status})")
        if entry is None:
            fut = self.client.submit(
                W.Searcher,
                actor=True,
                key=f"avq-actor-{self._token}-{uuid.uuid4().hex[:8]}",
                workers=[w],
                allow_other_workers=False,
                pure=False,
            )
            while True:  # a task pinned to a worker that left would wait for ever
                try:
                    fut.result(timeout=_POLL_S)
                    # The handle Dask returns is bound to the default client, which need not be
                    # this index's (another client made later, then closed, would break every
                    # search): a handle made while this index's client is current is bound to it.
                    with self.client.as_current():
                        entry = (fut, Actor(W.Searcher, w, fut.key))
                    break
                except (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError):
                    if w not in set(self._live_workers()):
                        fut.cancel()
                        raise OSError(f"worker {w} left the cluster") from None
            with self._lock:
                entry = self._searchers.setdefault(w, entry)
            if entry[0] is not fut:  # another thread made one first: drop this one
                fut.release()
        return entry[1]

    def _call_searchers(self, calls):
        """Sends ``Searcher.search(*args)`` to worker w for each (w, args) without waiting.
        Returns the pending calls, for ``_collect``."""
        out = []
        for w, args in calls:
            try:
                out.append((w, self._searcher(w).search(*args)))
            except Exception as exc:  # the worker died before or while its actor was created
                if not (_is_loss(exc) or isinstance(exc, OSError)):
                    raise
                out.append((w, exc))
        return out

    def _collect(self, pending, deadline=None):
        """Results of ``_call_searchers``: [(ok, result or exception)] in call order. A call whose
        worker died (or lost the replica) gives (False, exc) and marks the worker lost; other
        errors propagate."""
        out = [None] * len(pending)
        todo = list(range(len(pending)))
        while todo:
            i = todo[0]
            w, fut = pending[i]
            try:
                if isinstance(fut, BaseException):
                    raise fut
                out[i] = (True, fut.result(timeout=_POLL_S))
                todo.pop(0)
                continue
            except (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError):
                for i in self._drop_departed([p[0] for p in pending], list(todo), out):
                    todo.remove(i)
                if deadline is not None and todo and time.monotonic() > deadline:
                    raise TimeoutError("search: the workers did not answer in time") from None
            except Exception as exc:
                if not (isinstance(exc, (W.ReplicaMissing, OSError)) or _is_loss(exc)):
                    raise
                todo.pop(0)
                out[i] = (False, exc)
                self._mark_lost(w)
        return out

    def _drop_departed(self, workers, todo, out):
        """The entries i of todo whose worker (workers[i]) left the cluster: each gets a lost
        call in out[i] and its worker is marked lost. None while no worker is known to be live."""
        live = set(self._live_workers())
        gone = [i for i in todo if live and workers[i] not in live]
        for i in gone:
            out[i] = (False, RuntimeError(f"worker {workers[i]} left the cluster"))
            self._mark_lost(workers[i])
        return gone

    def _mark_lost(self, w):
        self._forget_live_workers()  # the next search asks the scheduler again
        with self._lock:
            self._searchers.pop(w, None)
            for hs in self._holders:
                if w in hs:
                    hs.remove(w)

    def _refresh_replicas(self, recent=False):
        """Forgets replicas on workers that left; starts rebuilding missing replicas. recent: a
        search's check (the live workers asked for within _LIVE_WORKERS_TTL_S will do)."""
        live = set(self._live_workers(recent=recent))
        if not live:
            return  # no worker at all: leave the table as it is (the search fails on its tasks)
        with self._lock:
            for hs in self._holders:
                hs[:] = [w for w in hs if w in live]
            for w in [w for w in self._searchers if w not in live]:
                del self._searchers[w]
        self._add_replicas(live=live)

    def _add_replicas(self, wait_for_them=False, live=None, recent=False):
        """Copies shards with fewer than `replicas` live replicas from a surviving one to other
        workers (Dask moves the bytes); in the background unless wait_for_them. Not while an
        update runs (the update waits for the copies instead). recent: as _refresh_replicas."""
        if self.replicas == 1 and not self._rebuilding:
            return
        if not self._update_lock.acquire(blocking=False):
            return
        try:
            client = self.client
            live = set(self._live_workers(recent=recent)) if live is None else live
            started = []
            with self._lock:
                for j, (target, fut) in list(self._rebuilding.items()):
                    if fut.done() or target not in live:
                        fut.cancel()
                        del self._rebuilding[j]
                load = {w: 0 for w in live}
                for hs in self._holders:
                    for w in hs:
                        load[w] = load.get(w, 0) + 1
                for j, hs in enumerate(self._holders):
                    if not hs or len(hs) >= self.replicas or j in self._rebuilding:
                        continue
                    # Workers already holding shards of j's search group first: groups stay whole.
                    mates = self._group_mates(j)
                    candidates = sorted(
                        (-sum(w in self._holders[m] for m in mates), load[w], w) for w in live if w not in hs
                    )
                    if not candidates:
                        continue
                    target = candidates[0][-1]
                    load[target] += 1
                    key = f"{self._token}-{j}-{uuid.uuid4().hex[:8]}"
                    blob = client.submit(
                        W.to_bytes, self._token, j, key=f"avq-copy-{key}", workers=[hs[0]], allow_other_workers=False
                    )
                    fut = client.submit(
                        W.put_bytes,
                        self._token,
                        j,
                        blob,
                        self.num_threads,
                        key=f"avq-replica-{key}",
                        workers=[target],
                        allow_other_workers=False,
                    )
                    self._rebuilding[j] = (target, fut)
                    fut.add_done_callback(lambda f, j=j, target=target: self._replica_done(j, target, f))
                    started.append(fut)
        finally:
            self._update_lock.release()
        if wait_for_them and started:
            self._wait_rebuilds()
            for hs in self._holders:
                if len(hs) < min(self.replicas, len(live)):
                    raise RuntimeError("could not place every replica (workers left during the build)")

    def _replica_done(self, j, target, fut):
        with self._lock:
            if self._rebuilding.get(j, (None, None))[1] is fut:
                del self._rebuilding[j]
            if fut.status == "finished" and target not in self._holders[j]:
                self._holders[j].append(target)

    def _wait_rebuilds(self):
        """Blocks until no replica copy is in flight (copies to or from dead workers are dropped)."""
        while True:
            with self._lock:
                futs = [f for _, f in self._rebuilding.values() if not f.done()]
            if not futs:
                with self._lock:  # callbacks may not have run yet
                    for j, (target, f) in list(self._rebuilding.items()):
                        self._replica_done(j, target, f)
                return
            try:
                wait(futs, timeout=_POLL_S)
            except (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError):
                live = set(self._live_workers())
                with self._lock:
                    for j, (target, f) in list(self._rebuilding.items()):
                        if target not in live or not self._holders[j]:
                            f.cancel()
                            del self._rebuilding[j]
            except concurrent.futures.CancelledError:
                pass

    def _holders_or_recover(self, j):
        """Live replica workers of shard j; reloads the saved copy when none is left."""
        with self._lock:
            hs = list(self._holders[j])
        if hs:
            return hs
        if self._saved is not None and j not in self._dirty:
            directory, manifest = self._saved
            live = self._live_workers()
            mates = self._group_mates(j)
            with self._lock:
                load = {w: sum(w in h for h in self._holders) for w in live}
                near = {w: sum(w in self._holders[m] for m in mates) for w in live}
            for w in sorted(live, key=lambda w: (-near[w], load[w], w)):
                args = (
                    self._token,
                    j,
                    directory,
                    manifest["shards"][j],
                    manifest["quantizer_fingerprint"],
                    self._mmap,
                    True,
                    self.num_threads,
                )
                ((ok, _),) = self._run_pinned([(w, W.load, args)], "reload")
                if ok:
                    with self._lock:
                        self._holders[j] = [w]
                    return [w]
        hint = (
            " (its saved copy predates later updates)"
            if self._saved is not None
            else " (save() the index, or use replicas=2, so that a lost shard can be recovered)"
        )
        raise ShardLostError(f"shard(s) {j} lost (a worker died) and could not be recovered{hint}", [j])

    def _group_mates(self, j):
        """The other shards of shard j's search group."""
        if self._shard_group is None:
            return []
        g = self._shard_group[j]
        return [int(m) for m in np.flatnonzero(self._shard_group == g) if m != j]

    def _group_holders(self, shards):
        """Live workers holding every listed shard (shards of one search group, each with a live
        replica). When no worker holds them all, the missing shards are copied now to the worker
        holding most of them, so that the group is searched as one index."""
        with self._lock:
            sets = [set(self._holders[j]) for j in shards]
        whole = set.intersection(*sets)
        if whole:
            return sorted(whole)
        with self._update_lock:  # no add/remove meanwhile: the copies are current
            with self._lock:
                have = {}
                for j in shards:
                    for w in self._holders[j]:
                        have[w] = have.get(w, 0) + 1
                load = {w: sum(w in h for h in self._holders) for w in have}
                target = min(have, key=lambda w: (-have[w], load[w], w))
                missing = [j for j in shards if target not in self._holders[j]]
                sources = {j: self._holders[j][0] for j in missing}
            calls = []
            for j in missing:
                blob = self.client.submit(
                    W.to_bytes, self._token, j, workers=[sources[j]], allow_other_workers=False, pure=False
                )
                calls.append((target, W.put_bytes, (self._token, j, blob, self.num_threads)))
            results = self._run_pinned(calls, "regroup")
            if not all(ok for ok, _ in results):
                raise ShardLostError(f"a worker died while shards {missing} were copied to {target}; retry", [])
            with self._lock:
                for j in missing:
                    if target not in self._holders[j]:
                        self._holders[j].append(target)
        return [target]

    def _make_groups_whole(self):
        """Every search group held whole by at least one worker (fit and load place them so; a
        worker Dask chose otherwise gets the missing shards)."""
        for g in np.unique(self._shard_group):
            self._group_holders([int(j) for j in np.flatnonzero(self._shard_group == g)])

    def _recover_all(self, shards):
        """Recovers every listed shard that has no live replica; one ShardLostError naming all
        the shards that cannot be recovered."""
        lost = []
        for j in sorted(shards):
            try:
                self._holders_or_recover(j)
            except ShardLostError:
                lost.append(j)
        if lost:
            hint = (
                " (their saved copy predates later updates)"
                if self._saved is not None
                else " (save() the index, or use replicas=2, so that a lost shard can be recovered)"
            )
            raise ShardLostError(
                f"shard(s) {', '.join(map(str, lost))} lost (a worker died) and could not be recovered{hint}", lost
            )
