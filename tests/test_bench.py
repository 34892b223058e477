"""The benchmark harness: ann-benchmarks' recall rule, true distances, configs, dataset conventions."""
from pathlib import Path

import numpy as np
import pytest

from avq_plugin import bench, datasets
cdist = pytest.importorskip("scipy.spatial.distance").cdist
pytest.importorskip("yaml")


def reference_recall(train, test, ids, gt_dist, metric, k=10, eps=1e-3):
    """Literal per-query port of ann-benchmarks' knn (plotting/metrics.py get_recall_values)."""
    recalls = []
    for i in range(len(test)):
        t = gt_dist[i][k - 1] + eps
        row = [j for j in ids[i][:k]]
        dists = []
        for j in row:
            a, b = np.asarray(test[i], np.float64), np.asarray(train[j], np.float64)
            if metric == "angular":
                dists.append(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
            else:
                dists.append(np.linalg.norm(a - b))
        recalls.append(sum(d <= t for d in dists) / k)
    return float(np.mean(recalls))


@pytest.fixture(scope="module")
def glove():
    return datasets.load_glove_subset()


def test_ground_truth_ids_score_one(glove):
    r, per = bench.knn_recall(glove.train, glove.test, glove.neighbors[:, :10], glove.distances, "angular")
    assert r == 1.0 and per.shape == (500,)


def test_matches_reference_on_random_perturbations(glove):
    rng = np.random.default_rng(1)
    ids = glove.neighbors[:, :30].copy()
    for row in ids:
        rng.shuffle(row)  # some true top-10 pushed out, some 11..30 pulled in
    mine, _ = bench.knn_recall(glove.train, glove.test, ids, glove.distances, "angular")
    ref = reference_recall(glove.train, glove.test, ids, glove.distances, "angular")
    assert mine == pytest.approx(ref, abs=1e-12)
    assert 0.2 < mine < 0.5


def test_epsilon_admits_near_ties():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    q = np.array([[0.0, 0.0]])
    gt = np.array([[1.0, 1.0005, 1.5]])  # fake: 2nd true distance slightly below the real one (1.0)
    # id 1 has true distance 1.0 <= 1.0005 + 1e-3 -> hit; id 3 far -> miss
    r, _ = bench.knn_recall(train, q, np.array([[1, 3]]), gt, "euclidean", k=2)
    assert r == 0.5
    r, _ = bench.knn_recall(train, q, np.array([[1, 3]]), gt, "euclidean", k=2, epsilon=0.0)
    assert r == 0.5
    gt2 = np.array([[1.0, 0.9985, 1.5]])  # threshold 0.9995 < 1.0 -> miss without eps slack
    assert bench.knn_recall(train, q, np.array([[0, 1]]), gt2, "euclidean", k=2)[0] == 0.0


def test_padding_duplicates_and_short_rows(glove):
    gt_ids = glove.neighbors[:3, :10].copy()
    padded = gt_ids.copy(); padded[:, 5:] = -1
    assert bench.knn_recall(glove.train, glove.test[:3], padded, glove.distances[:3], "angular")[0] == 0.5
    dup = gt_ids.copy(); dup[:, 1:] = dup[:, :1]
    assert bench.knn_recall(glove.train, glove.test[:3], dup, glove.distances[:3], "angular")[0] == pytest.approx(0.1)
    short = gt_ids[:, :4]
    assert bench.knn_recall(glove.train, glove.test[:3], short, glove.distances[:3], "angular")[0] == pytest.approx(0.4)
    out_of_range = gt_ids.copy(); out_of_range[:, 0] = len(glove.train)
    assert bench.knn_recall(glove.train, glove.test[:3], out_of_range, glove.distances[:3], "angular")[0] == pytest.approx(0.9)


def test_only_first_k_columns_used(glove):
    ids = np.concatenate([np.full((500, 10), -1), glove.neighbors[:, :10]], axis=1)
    assert bench.knn_recall(glove.train, glove.test, ids, glove.distances, "angular")[0] == 0.0


def test_true_distances_match_cdist(glove):
    ids = glove.neighbors[:20, :7]
    d = bench.true_distances(glove.train, glove.test[:20], ids, "angular")
    full = cdist(glove.test[:20].astype(np.float64), glove.train.astype(np.float64), "cosine")
    np.testing.assert_allclose(d, np.take_along_axis(full, ids, 1), atol=1e-12)
    np.testing.assert_allclose(d, glove.distances[:20, :7], atol=1e-6)
    rng = np.random.default_rng(0)
    X, Q = rng.normal(size=(100, 9)), rng.normal(size=(4, 9))
    ids = rng.integers(0, 100, size=(4, 5))
    de = bench.true_distances(X, Q, ids, "euclidean")
    np.testing.assert_allclose(de, np.take_along_axis(cdist(Q, X), ids, 1), atol=1e-12)


def test_euclidean_against_reference():
    rng = np.random.default_rng(3)
    X, Q = rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)
    full = cdist(Q.astype(np.float64), X.astype(np.float64))
    order = np.argsort(full, 1)
    gt = np.take_along_axis(full, order, 1)[:, :100].astype(np.float32)
    ids = order[:, rng.permutation(25)[:10]]
    mine = bench.knn_recall(X, Q, ids, gt, "euclidean")[0]
    assert mine == pytest.approx(reference_recall(X, Q, ids, gt, "euclidean"), abs=1e-12)


def test_bad_shapes(glove):
    with pytest.raises(ValueError):
        bench.knn_recall(glove.train, glove.test, glove.neighbors[:10, :10], glove.distances, "angular")
    with pytest.raises(ValueError):
        bench.knn_recall(glove.train, glove.test, glove.neighbors[:, :10], glove.distances[:, :5], "angular")
    with pytest.raises(ValueError):
        bench.true_distances(glove.train, glove.test, glove.neighbors[:, :10], "cosine")


def test_resolve_num_leaves():
    assert bench.resolve_num_leaves("sqrt", 190000) == 436
    assert bench.resolve_num_leaves("sqrt*0.5", 40000) == 100
    assert bench.resolve_num_leaves(5000, 100) == 100
    with pytest.raises(ValueError):
        bench.resolve_num_leaves("log", 100)


def test_yaml_configs_parse_for_all_size_classes():
    cfg_dir = bench.find_config_dir(str(Path(__file__).resolve().parent.parent / "benchmark_configs"))
    t = bench.load_targets(cfg_dir)
    assert t == {"k": 10, "epsilon": 1e-3, "targets": [0.9, 0.95]}
    for system in ("avq", "scann", "faiss", "exact"):
        for n in (20000, 190000, 10**7):
            for metric in ("angular", "euclidean"):
                for quick in (False, True):
                    c = bench.load_system_config(cfg_dir, system, n, metric, quick)
                    assert c.builds and c.query_args
                    assert all(len(v) == len(c.query_arg_names) for v in c.query_args)
    c = bench.load_system_config(cfg_dir, "scann", 20000, "euclidean")
    assert len(c.builds) == 1 and c.builds[0]["args"]["spherical"] is False  # T=0.2/0.3 collapse


def test_dataset_ground_truth_conventions():
    for metric in ("cosine", "dot", "l2"):
        ids, s = datasets.load_glove_subset_ground_truth(metric)
        assert ids.dtype == np.int64 and s.dtype == np.float32 and ids.shape == (500, 100)
        step = np.diff(s, axis=1)
        assert (step <= 0).all() if metric in ("cosine", "dot") else (step >= 0).all()
    g = datasets.load_glove_subset()
    X, Q = g.train.astype(np.float64), g.test.astype(np.float64)
    ids, s = datasets.load_glove_subset_ground_truth("dot")
    np.testing.assert_allclose(s[:, :5], np.einsum("qd,qkd->qk", Q, X[ids[:, :5]]), rtol=1e-6)
    with pytest.raises(ValueError):
        datasets.load_glove_subset_ground_truth("angular")
