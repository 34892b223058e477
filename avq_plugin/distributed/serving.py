"""Dask settings for a cluster that serves searches.

Two of Dask's monitors run by the clock in every process, busy or idle, and cost CPU that a
serving cluster spends on nothing it needs:

- the event-loop tick (``distributed.admin.tick.interval``, 20 ms by default), which times the
  loop to warn when it was blocked (the warning comes after ``tick.limit``, 3 s: a coarser tick
  still catches it);
- the workers' statistical profiler (``distributed.worker.profile.enabled``), which walks every
  thread's stack every 10 ms to draw the dashboard's profile page.

On the 2-worker LocalCluster of docs/dask.md, with nothing to do, the client process (client and
scheduler) burned 3-6 % of a core and the two workers 5-9 %; with these settings 1-2 % and 0-2 %.
At 76,000 queries per second that is 1-2 µs per query, 5-10 % of a whole search of one
``AVQIndex`` on GloVe-190k. Nothing else changes: the dashboard keeps its other pages.
``ShardedAVQIndex`` applies them to a local cluster it starts itself (no client given and none
current). Dask's own test clusters run with the same two values
(``distributed.utils_test.config_for_cluster_tests``).

Use them when the cluster starts (the scheduler and the workers read them then)::

    import dask
    from distributed import Client, LocalCluster
    from avq_plugin.distributed import serving_config

    with dask.config.set(serving_config()):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1)
    client = Client(cluster)

or, for ``dask scheduler`` / ``dask worker`` processes, the same keys in a Dask YAML file::

    distributed:
      admin:
        tick:
          interval: 500ms
      worker:
        profile:
          enabled: false
"""

from __future__ import annotations

from typing import Any

#: The settings (flat Dask config keys); ``serving_config()`` returns a copy.
SERVING_CONFIG: dict[str, Any] = {
    "distributed.admin.tick.interval": "500ms",
    "distributed.worker.profile.enabled": False,
}


def serving_config() -> dict[str, Any]:
    """Dask settings for a cluster that serves searches: the event-loop tick every 500 ms (20 ms
    by default) and the workers' statistical profiler off. Pass to ``dask.config.set`` before the
    cluster starts. See the module's docstring for what they cost and what they change."""
    return dict(SERVING_CONFIG)
