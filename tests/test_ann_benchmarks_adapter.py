"""The ann-benchmarks definition in adapters/ann_benchmarks/avq/.

config.yml is parsed and expanded the way ann-benchmarks' definitions.py does (own code below:
ann-benchmarks is not imported), every definition is instantiated from module.py and answers
queries on real data: the shipped GloVe subset (angular, and the same vectors as euclidean data)
and scikit-learn's digits (euclidean, fewer points than leaves). module.py imports
``from ..base.module import BaseANN``; it is loaded inside a stand-in package whose
``base.module`` holds ann-benchmarks' BaseANN when that is importable, else a minimal stand-in.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import re
import sys
import types

import numpy as np
import pytest
import yaml

from avq_plugin.datasets import load_glove_subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADAPTER_DIR = os.path.join(ROOT, "adapters", "ann_benchmarks")
DEF_DIR = os.path.join(ADAPTER_DIR, "avq")
CONFIG = os.path.join(DEF_DIR, "config.yml")
GRID = os.path.join(ROOT, "benchmark_configs", "ann_benchmarks_avq.yaml")
PKG = "_avq_annb_host"  # stands for ann_benchmarks.algorithms
K = 10


# --------------------------------------------------------------------------- loading
class _StandInBaseANN:
    """What module.py relies on from ann-benchmarks' BaseANN (used when it is not installed)."""

    def done(self):
        pass

    def get_memory_usage(self):
        return None

    def batch_query(self, X, n):
        self.res = [self.query(q, n) for q in X]

    def get_batch_results(self):
        return self.res

    def get_additional(self):
        return {}

    def __str__(self):
        return self.name


def _load_module():
    if PKG + ".avq.module" in sys.modules:
        return sys.modules[PKG + ".avq.module"]
    try:
        from ann_benchmarks.algorithms.base.module import BaseANN
    except ImportError:
        BaseANN = _StandInBaseANN
    host = types.ModuleType(PKG)
    host.__path__ = []
    base_pkg = types.ModuleType(PKG + ".base")
    base_pkg.__path__ = []
    base_mod = types.ModuleType(PKG + ".base.module")
    base_mod.BaseANN = BaseANN
    avq_pkg = types.ModuleType(PKG + ".avq")
    avq_pkg.__path__ = [DEF_DIR]
    sys.modules.update({PKG: host, PKG + ".base": base_pkg, PKG + ".base.module": base_mod, PKG + ".avq": avq_pkg})
    spec = importlib.util.spec_from_file_location(PKG + ".avq.module", os.path.join(DEF_DIR, "module.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "_avq_generate_config", os.path.join(ADAPTER_DIR, "generate_config.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- expansion
def _combinations(args):
    """A list: each list element is a set of alternatives (a scalar a fixed value); a dict: the
    product of its values, each combination one dict."""
    if isinstance(args, list):
        return [list(c) for c in itertools.product(*[a if isinstance(a, list) else [a] for a in args])]
    if isinstance(args, dict):
        keys = list(args)
        vals = [args[k] if isinstance(args[k], list) else [args[k]] for k in keys]
        return [dict(zip(keys, c)) for c in itertools.product(*vals)]
    raise TypeError(f"cannot expand {type(args).__name__}")


def _expand_key(group, key):
    if key.endswith("_groups"):
        parts = [_combinations(g) if isinstance(g, dict) else g for g in group[key]]
        return _combinations(parts)
    return _combinations(group[key])


def _substitute(value, subs):
    if isinstance(value, dict):
        return {k: _substitute(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, subs) for v in value]
    if isinstance(value, str) and value in subs:
        return subs[value]
    return value


def expand(config, point_type, metric, dimension, count=K):
    """Definitions of one config.yml for a dataset: dicts with algorithm, constructor, module,
    arguments and query_argument_groups, as ann-benchmarks' get_definitions builds them."""
    entries = list(config.get(point_type, {}).get("any", [])) + list(config.get(point_type, {}).get(metric, []))
    subs = {"@metric": metric, "@dimension": dimension, "@count": count}
    out = []
    for entry in entries:
        for group in entry["run_groups"].values():
            if "arg_groups" in group:
                arg_sets = _expand_key(group, "arg_groups")
            elif "args" in group:
                arg_sets = _expand_key(group, "args")
            else:
                raise ValueError(f"run group without args: {group}")
            if "query_arg_groups" in group:
                query_sets = _expand_key(group, "query_arg_groups")
            elif "query_args" in group:
                query_sets = _expand_key(group, "query_args")
            else:
                query_sets = []
            for a in arg_sets:
                args = list(entry.get("base_args", [])) + (a if isinstance(a, list) else [a])
                out.append(
                    {
                        "algorithm": entry["name"],
                        "constructor": entry["constructor"],
                        "module": entry["module"],
                        "docker_tag": entry["docker_tag"],
                        "arguments": [_substitute(x, subs) for x in args],
                        "query_argument_groups": query_sets,
                    }
                )
    return out


def result_file(definition, query_args, batch=False):
    """results/<...>/<algorithm>[-batch]/<name>.hdf5 below the dataset/count level."""
    stem = re.sub(r"\W+", "_", json.dumps(definition["arguments"] + query_args, sort_keys=True)).strip("_")
    return f"{definition['algorithm']}{'-batch' if batch else ''}/{stem}.hdf5"


def _instantiate(module, definition):
    return getattr(module, definition["constructor"])(*definition["arguments"])


# --------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def config():
    with open(CONFIG) as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def glove():
    ds = load_glove_subset()
    return ds.train, ds.test[:200]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits  # scikit-learn is in the [test] extra; data ships with it

    X = load_digits().data.astype(np.float32)
    return X[:1600].copy(), X[1600:].copy()


def _true_kth(train, test, metric, k=K):
    """Distance of the k-th true neighbour in ann-benchmarks' units (1 - cos, plain L2)."""
    if metric == "angular":
        tn = train / np.linalg.norm(train, axis=1, keepdims=True)
        qn = test / np.linalg.norm(test, axis=1, keepdims=True)
        d = 1.0 - qn.astype(np.float64) @ tn.T.astype(np.float64)
    else:
        d = np.sqrt(
            np.maximum(
                (test.astype(np.float64) ** 2).sum(1)[:, None]
                - 2 * test.astype(np.float64) @ train.T.astype(np.float64)
                + (train.astype(np.float64) ** 2).sum(1)[None, :],
                0,
            )
        )
    return np.sort(d, axis=1)[:, k - 1]


def _recall(train, test, results, metric, kth):
    """ann-benchmarks' k-nn recall: returned points within the k-th true distance + 1e-3."""
    hits = 0
    for q, ids, t in zip(test, results, kth):
        x = train[np.asarray(ids, dtype=np.int64)]
        if metric == "angular":
            d = 1.0 - (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))
        else:
            d = np.linalg.norm(x - q, axis=1)
        hits += int(np.sum(np.sort(d)[:K] <= t + 1e-3))
    return hits / (K * len(test))


def _check_ids(ids, n_train):
    ids = list(ids)
    assert 0 < len(ids) <= K
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert all(0 <= int(i) < n_train for i in ids), "id out of range (or -1 padding)"


# --------------------------------------------------------------------------- tests
def test_config_is_generated_from_the_grid():
    gen = _load_generator()
    with open(GRID) as fh:
        grid = yaml.safe_load(fh)
    with open(CONFIG) as fh:
        assert fh.read() == gen.render(grid), (
            "adapters/ann_benchmarks/avq/config.yml differs from benchmark_configs/ann_benchmarks_avq.yaml: "
            "run python adapters/ann_benchmarks/generate_config.py"
        )
    # Every grid pair reaches config.yml unchanged, in order.
    cfg = yaml.safe_load(gen.render(grid))
    for metric, groups in grid["point_types"]["float"].items():
        run_groups = cfg["float"][metric][0]["run_groups"]
        assert list(run_groups) == [g["name"] for g in groups]
        for g in groups:
            assert run_groups[g["name"]]["query_args"] == [g["query_args"]]


def test_expansion_matches_the_grid(config):
    with open(GRID) as fh:
        grid = yaml.safe_load(fh)
    for metric, dim in (("angular", 100), ("euclidean", 784)):
        defs = expand(config, "float", metric, dim)
        groups = grid["point_types"]["float"][metric]
        assert len(defs) == len(groups)
        for d, g in zip(defs, groups):
            b = g["build"]
            assert d["algorithm"] == "avq" and d["constructor"] == "AVQ"
            assert d["module"] == "ann_benchmarks.algorithms.avq" and d["docker_tag"] == "ann-benchmarks-avq"
            assert d["arguments"][:1] + d["arguments"][2:] == [b["n_leaves"], b["dims_per_block"], metric]
            T = d["arguments"][1]
            assert math.isnan(T) if b["avq_threshold"] is None else T == b["avq_threshold"]
            # one query-argument group per pair, passed as set_query_arguments([lts, rk])
            assert d["query_argument_groups"] == [[p] for p in g["query_args"]]
    # hamming/jaccard datasets get no avq definition
    assert expand(config, "bit", "hamming", 64) == []


def test_no_result_file_collisions(config):
    seen = {}
    for metric in ("angular", "euclidean"):
        for batch in (False, True):
            for d in expand(config, "float", metric, 50):
                for qa in d["query_argument_groups"]:
                    f = result_file(d, qa, batch)
                    assert f not in seen, f"{f}: {d['arguments']} {qa} collides with {seen[f]}"
                    seen[f] = (d["arguments"], qa)
    # The check itself catches the classic collision ([0.1] and [0, 1] both give 0_1).
    a = {"algorithm": "avq", "arguments": [0.1]}
    b = {"algorithm": "avq", "arguments": [0, 1]}
    assert result_file(a, []) == result_file(b, [])


def test_placeholders_are_substituted(config):
    for metric in ("angular", "euclidean"):
        for d in expand(config, "float", metric, 50):
            assert not any(isinstance(a, str) and a.startswith("@") for a in d["arguments"])
            assert d["arguments"][-1] == metric
    # the expansion substitutes nested placeholders and leaves query args alone, like upstream
    cfg = {
        "float": {
            "any": [
                {
                    "name": "x",
                    "constructor": "C",
                    "module": "m",
                    "docker_tag": "t",
                    "base_args": ["@metric"],
                    "run_groups": {
                        "g": {"arg_groups": [{"k": "@count", "d": ["@dimension", 2]}], "query_args": [["@count", 3]]}
                    },
                }
            ]
        }
    }
    defs = expand(cfg, "float", "euclidean", 7, count=5)
    assert [d["arguments"] for d in defs] == [["euclidean", {"k": 5, "d": 7}], ["euclidean", {"k": 5, "d": 2}]]
    assert defs[0]["query_argument_groups"] == [["@count"], [3]]


def _grid_sample(pairs):
    """Lowest, middle and highest budget of a run group (keeps the test fast)."""
    return [pairs[0], pairs[len(pairs) // 2], pairs[-1]]


@pytest.mark.parametrize("metric", ["angular", "euclidean"])
def test_every_definition_answers_queries(config, glove, metric):
    """GloVe subset (20k x 50) as angular data and, with the same vectors, as euclidean data."""
    module = _load_module()
    train, test = glove
    kth = _true_kth(train, test, metric)
    train_before = train.copy()
    for d in expand(config, "float", metric, train.shape[1]):
        algo = _instantiate(module, d)
        algo.fit(train)
        np.testing.assert_array_equal(train, train_before)  # fit never writes into the caller's array
        index = algo._index
        recalls = []
        for (qa,) in _grid_sample([g for g in d["query_argument_groups"]]):
            algo.set_query_arguments(qa)
            assert algo._index is index  # no rebuild
            name = str(algo)
            for token in [
                f"n_leaves={d['arguments'][0]}",
                f"dims_per_block={d['arguments'][2]}",
                f"metric={metric}",
                f"leaves_to_search={qa[0]}",
                f"reorder_k={qa[1]}",
            ]:
                assert token in name, (token, name)
            single = [algo.query(q, K) for q in test]
            for ids in single:
                _check_ids(ids, len(train))
            algo.batch_query(test, K)
            batch = algo.get_batch_results()
            assert len(batch) == len(test)
            for s, b in zip(single, batch):
                np.testing.assert_array_equal(s, b)  # native batched search gives the same answers
            recalls.append(_recall(train, test, single, metric, kth))
            extra = algo.get_additional()
            assert extra["leaves_searched"] == min(qa[0], algo._built_leaves)
            assert extra["reorder_k_used"] == max(qa[1], K)
            assert 0 < extra["index_memory_kb"] < 64 * 1024
        # Measured (seed 0): lowest budget 0.22-0.31, middle 0.78-0.95, largest 0.97-1.0 (the
        # largest probes half of the leaves or more with 500-2000 candidates re-ranked).
        assert recalls[-1] >= 0.95, (d["arguments"], recalls)
        assert recalls[1] >= 0.70, (d["arguments"], recalls)
        assert recalls[0] < recalls[1] <= recalls[-1], (d["arguments"], recalls)
        algo.done()


def test_euclidean_small_data_and_clamping(config, digits):
    """Digits (1600 x 64): fewer points than several definitions' n_leaves, so the leaves built
    and leaves_to_search are clamped; float64 input is accepted and left unchanged."""
    module = _load_module()
    train, test = digits
    kth = _true_kth(train, test, "euclidean")
    train64 = train.astype(np.float64)
    before = train64.copy()
    d = next(d for d in expand(config, "float", "euclidean", 64) if d["arguments"][0] > len(train))
    algo = _instantiate(module, d)
    algo.fit(train64)
    np.testing.assert_array_equal(train64, before)
    assert algo._built_leaves == len(train)
    assert f"n_leaves={d['arguments'][0]} (built {len(train)})" in str(algo)
    (qa,) = d["query_argument_groups"][-1]
    algo.set_query_arguments(*qa)  # the two-argument form works too
    assert algo.get_additional()["leaves_searched"] == min(qa[0], len(train))
    if qa[0] > len(train):
        assert "clamped" in str(algo)
    res = [algo.query(q.astype(np.float64), K) for q in test]
    for ids in res:
        _check_ids(ids, len(train))
    assert _recall(train, test, res, "euclidean", kth) >= 0.97
    # one leaf of ~1 point: the probe widens to the next leaves (issue 11), K ids, no -1 padding
    algo.set_query_arguments(1, 30)
    short = [algo.query(q, K) for q in test[:20]]
    assert all(len(ids) == K for ids in short)
    for ids in short:
        assert len(ids) == len(set(ids)) and all(int(i) >= 0 for i in ids)
    algo.batch_query(test[:20], K)
    for s, b in zip(short, algo.get_batch_results()):
        np.testing.assert_array_equal(s, b)


def test_angular_normalisation_and_zero_rows():
    module = _load_module()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 16)).astype(np.float32)
    X[:1000] *= 100.0  # norms must not matter under angular
    X[5] = 0.0  # a zero row is kept (as the zero vector), not rejected
    before = X.copy()
    algo = module.AVQ(50, 0.2, 2, "angular")
    algo.fit(X)
    np.testing.assert_array_equal(X, before)
    algo.set_query_arguments([50, 200])  # every leaf: exact up to ties
    q = X[1234] * 3.0
    ids = list(algo.query(q, K))
    cos = (X @ q) / np.maximum(np.linalg.norm(X, axis=1) * np.linalg.norm(q), 1e-30)
    assert set(ids) == set(np.argsort(-cos)[:K].tolist())


def test_bad_arguments():
    module = _load_module()
    with pytest.raises(ValueError, match="metric"):
        module.AVQ(100, 0.2, 2, "hamming")
    with pytest.raises(ValueError, match="n_leaves"):
        module.AVQ(0, 0.2, 2, "angular")
    with pytest.raises(ValueError, match="dims_per_block"):
        module.AVQ(100, 0.2, 9, "angular")
    with pytest.raises(ValueError, match="avq_threshold"):
        module.AVQ(100, -1.0, 2, "angular")
    algo = module.AVQ(10, 0.2, 2, "euclidean")
    assert "avq_threshold=0.2" in str(algo)
    assert "avq_threshold=nan" in str(module.AVQ(10, float("nan"), 2, "euclidean"))
    with pytest.raises(ValueError, match="fit"):
        algo.set_query_arguments(1, 10) or algo.query(np.zeros(4, np.float32), K)
    algo.fit(np.random.default_rng(1).standard_normal((500, 4)).astype(np.float32))
    algo2 = module.AVQ(10, 0.2, 2, "euclidean")
    algo2.fit(np.random.default_rng(1).standard_normal((500, 4)).astype(np.float32))
    with pytest.raises(ValueError, match="set_query_arguments"):
        algo2.query(np.zeros(4, np.float32), K)
    for bad in [(0, 10), (5, 0), (2.5, 10), ([1, 2, 3],), ([1],)]:
        with pytest.raises(ValueError):
            algo.set_query_arguments(*bad)


def test_leaf_margin_query_argument():
    # [leaves_to_search, reorder_k, leaf_margin] (angular): AVQIndex.search with that margin on the
    # normalised data, single and batch; named; rejected on euclidean data and when malformed.
    module = _load_module()
    ds = load_glove_subset()
    X, Q = ds.train[:5000], ds.test[:50]
    algo = module.AVQ(70, 0.2, 2, "angular")
    algo.fit(X)
    algo.set_query_arguments([3, 30, 0.2])
    assert "leaf_margin=0.2" in str(algo)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    want = algo._index.search(Q, K, leaves_to_search=3, reorder_k=30, leaf_margin=0.2)[1]
    fixed = algo._index.search(Q, K, leaves_to_search=3, reorder_k=30)[1]
    assert (want != fixed).any()
    np.testing.assert_array_equal(np.array([algo.query(q, K) for q in Q]), want)
    algo.batch_query(Q, K)
    np.testing.assert_array_equal(np.array(algo.get_batch_results()), want)
    assert np.allclose(algo._index.search(Xn[:3], 1, leaves_to_search=70, reorder_k=100)[0][:, 0], 1.0, atol=1e-5)
    algo.set_query_arguments(3, 30)  # the pair form turns it off again
    assert "leaf_margin" not in str(algo)
    np.testing.assert_array_equal(np.array([algo.query(q, K) for q in Q]), fixed)
    for bad in ([3, 30, -0.1], [3, 30, float("nan")], [3, 30, "0.2"], [3, 30, True], [3, 30, 0.2, 1]):
        with pytest.raises(ValueError, match="leaf_margin|set_query_arguments"):
            algo.set_query_arguments(bad)
    euclid = module.AVQ(10, float("nan"), 2, "euclidean")
    with pytest.raises(ValueError, match="angular"):
        euclid.set_query_arguments([3, 30, 0.2])
