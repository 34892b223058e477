"""AVQIndex.tune: reaching a target recall on fresh queries, defaults that stick, bad input."""

import math
import pickle

import numpy as np
import pytest

import avq_plugin
from avq_plugin import datasets
from avq_plugin.index import TuneReport


def recall_at_10(I, gt):
    return float((I[:, :, None] == gt[:, None, :10]).any(axis=1).mean())


@pytest.fixture(scope="module")
def glove():
    ds = datasets.load_glove_subset()
    gt, _ = datasets.load_glove_subset_ground_truth("cosine")
    return ds.train, ds.test, gt


@pytest.fixture(scope="module")
def built(glove):
    X, _, _ = glove
    return avq_plugin.AVQIndex(metric="cosine", seed=0).fit(X)


def fresh(index):
    return pickle.loads(pickle.dumps(index))


@pytest.mark.parametrize("target", [0.9, 0.95])
def test_held_out_tuning_reaches_target_on_fresh_queries(glove, built, target):
    X, Q, gt = glove
    index = fresh(built)
    report = index.tune(target_recall=target, k=10, X=X)
    assert isinstance(report, TuneReport)
    assert report.source == "held-out" and report.num_queries == 1000 and report.k == 10
    assert report.reached and report.recall >= report.goal > target
    assert report.qps > 0 and math.isfinite(report.qps)
    # The defaults are now the tuned budget (stored in the index; the parameters keep what was given) ...
    assert (index.leaves_to_search, index.reorder_k) == (built.leaves_to_search, built.reorder_k)
    assert index.default_search_params() == (report.leaves_to_search, report.reorder_k)
    D, I = index.search(Q, k=10)
    D2, I2 = index.search(Q, k=10, leaves_to_search=report.leaves_to_search, reorder_k=report.reorder_k)
    np.testing.assert_array_equal(I, I2)
    # ... and the shipped queries (never used for tuning) land near the target.
    r = recall_at_10(I, gt)
    assert target - 0.02 <= r <= target + 0.04, (r, report)
    # Minimal for its reorder_k: one leaf fewer misses the goal on the tuning queries.
    L, R = report.leaves_to_search, report.reorder_k
    if L > 1:
        below = [rec for (l_, r_, rec) in report.evaluated if (l_, r_) == (L - 1, R)]
        assert below and below[0] < report.goal


def test_higher_target_needs_more_budget(glove, built):
    X, Q, gt = glove
    index = fresh(built)
    # With reorder_k fixed the choice involves no timing: fully deterministic.
    r90 = index.tune(0.9, X=X, reorder_k=40)
    rec90 = recall_at_10(index.search(Q, k=10)[1], gt)
    r95 = index.tune(0.95, X=X, reorder_k=40)
    rec95 = recall_at_10(index.search(Q, k=10)[1], gt)
    assert r90.reorder_k == r95.reorder_k == 40
    assert r90.leaves_to_search < r95.leaves_to_search
    assert rec90 < rec95
    assert rec90 >= 0.88 and rec95 >= 0.93
    again = fresh(built).tune(0.9, X=X, reorder_k=40)
    assert again.leaves_to_search == r90.leaves_to_search and again.recall == r90.recall


def test_given_queries_with_their_own_ground_truth(glove, built):
    X, Q, gt = glove
    index = fresh(built)
    # Exact neighbours from the index itself (float32 re-ranking store), first half of the queries.
    report = index.tune(0.9, queries=Q[:250])
    assert report.source == "queries" and report.num_queries == 250
    assert recall_at_10(index.search(Q[250:], k=10)[1], gt[250:]) >= 0.88
    # Given ground truth and a brute-force one over X choose the same setting as the exact
    # self-search (same queries, same neighbours), when the timing is taken out of the choice.
    a = fresh(built).tune(0.9, queries=Q[:250], reorder_k=40)
    b = fresh(built).tune(0.9, queries=Q[:250], ground_truth=gt[:250], reorder_k=40)
    c = fresh(built).tune(0.9, queries=Q[:250], X=X, reorder_k=40)
    assert a.leaves_to_search == b.leaves_to_search == c.leaves_to_search
    assert a.recall == pytest.approx(b.recall, abs=0.004) and a.recall == c.recall
    # A random subset of the queries keeps each query with its own ground-truth row.
    sub = fresh(built).tune(0.9, queries=Q, ground_truth=gt, num_queries=200, reorder_k=40)
    sub_self = fresh(built).tune(0.9, queries=Q, num_queries=200, reorder_k=40)
    assert sub.num_queries == 200 and sub.leaves_to_search == sub_self.leaves_to_search
    assert sub.recall == pytest.approx(sub_self.recall, abs=0.004)


def test_defaults_survive_serialization(glove, built, tmp_path):
    X, Q, _ = glove
    index = fresh(built)
    report = index.tune(0.9, X=X, reorder_k=30, num_queries=300)
    expected = index.search(Q[:50], k=10)[1]
    path = tmp_path / "tuned.avq"
    index.save(path)
    copies = [
        avq_plugin.AVQIndex.load(path),
        avq_plugin.AVQIndex.from_bytes(index.to_bytes()),
        pickle.loads(pickle.dumps(index)),
    ]
    for c in copies:
        assert c.default_search_params() == (report.leaves_to_search, 30)
        np.testing.assert_array_equal(c.search(Q[:50], k=10)[1], expected)


def test_ids_and_int8_reorder(glove):
    X, Q, gt = glove
    rng = np.random.default_rng(0)
    ids = rng.permutation(10**6)[: len(X)].astype(np.int64)
    index = avq_plugin.AVQIndex(metric="cosine", reorder="int8", seed=0).fit(X, ids)
    report = index.tune(0.9, X=X, ids=ids, num_queries=500)
    assert report.reached
    I = index.search(Q, k=10)[1]
    inverse = {int(v): i for i, v in enumerate(ids)}
    rows = np.vectorize(lambda v: inverse.get(int(v), -1))(I)
    assert recall_at_10(rows, gt) >= 0.88
    # Without X or ground truth there is no exact vector to compare with.
    with pytest.raises(ValueError, match="reorder='int8'"):
        index.tune(0.9, queries=Q)
    with pytest.raises(ValueError, match="ids of X"):
        index.tune(0.9, X=X)  # default ids 0..n-1 are not the index's ids


def test_unreachable_target_warns_and_uses_largest_budget(glove):
    X, _, _ = glove
    index = avq_plugin.AVQIndex(metric="cosine", reorder="none", seed=0).fit(X)
    with pytest.warns(UserWarning, match=r"target_recall=1 not reached.*reaches recall@10 = 0\.\d+"):
        report = index.tune(1.0, X=X, num_queries=200)
    assert not report.reached and report.recall < 1.0
    assert report.leaves_to_search == index.num_leaves_ and report.reorder_k is None
    assert index.default_search_params()[0] == index.num_leaves_
    assert index.leaves_to_search is None  # the stored budget changed, not the parameter


def test_time_budget_exhausted(glove, built):
    X, _, _ = glove
    index = fresh(built)
    with pytest.warns(UserWarning, match="time budget"):
        report = index.tune(0.95, X=X, num_queries=100, time_budget_s=1e-9)
    assert report.leaves_to_search == index.num_leaves_


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"target_recall": 0.0}, ValueError, r"target_recall must be in \(0, 1\]"),
        ({"target_recall": 1.01}, ValueError, r"target_recall must be in \(0, 1\]"),
        ({"target_recall": float("nan")}, ValueError, "target_recall"),
        ({"target_recall": "0.9"}, TypeError, "target_recall"),
        ({"target_recall": True}, TypeError, "target_recall"),
        ({"k": 0}, ValueError, "k must be >= 1"),
        ({"k": 2.5}, TypeError, "k must be an integer"),
        ({"time_budget_s": 0}, ValueError, "time_budget_s"),
        ({"margin": -0.1}, ValueError, "margin"),
        ({"num_queries": 0}, ValueError, "num_queries"),
    ],
)
def test_bad_arguments(glove, built, kwargs, error, match):
    X, _, _ = glove
    with pytest.raises(error, match=match):
        fresh(built).tune(**{"X": X, **kwargs})


def test_bad_data_arguments(glove, built):
    X, Q, gt = glove
    index = fresh(built)
    codes_only = avq_plugin.AVQIndex(metric="cosine", reorder=None, eta=4.0, seed=0).fit(X)
    with pytest.raises(ValueError, match="pass X="):
        codes_only.tune(0.9)
    with pytest.raises(ValueError, match="rows but the index holds"):
        index.tune(0.9, X=X[:100])
    with pytest.raises(ValueError, match="features"):
        index.tune(0.9, queries=Q[:, :10])
    with pytest.raises(ValueError, match="ground_truth must be"):
        index.tune(0.9, queries=Q, ground_truth=gt[:10])
    with pytest.raises(ValueError, match="pass queries too"):
        index.tune(0.9, X=X, ground_truth=gt)
    with pytest.raises(ValueError, match="not trained"):
        avq_plugin.AVQIndex(metric="cosine").tune(0.9, X=X)
    assert index.default_search_params() == built.default_search_params()


def test_held_out_tuning_without_X_uses_the_stored_vectors(glove, built):
    """reorder="float32" keeps the indexed vectors: tune() needs no X, and draws the same held-out
    sample (by id) with the same exact neighbours as tune(X=X), so it makes the same choice."""
    X, _, _ = glove
    with_x = fresh(built).tune(0.9, k=10, X=X, num_queries=300, reorder_k=40)
    index = fresh(built)
    without_x = index.tune(0.9, k=10, num_queries=300, reorder_k=40)
    assert without_x.source == "held-out" and without_x.num_queries == 300
    assert (without_x.leaves_to_search, without_x.reorder_k) == (with_x.leaves_to_search, with_x.reorder_k)
    assert without_x.recall == pytest.approx(with_x.recall, abs=1e-9)
    assert without_x.evaluated == with_x.evaluated
    assert index.default_search_params() == (without_x.leaves_to_search, 40)


def test_tuning_function_returns_a_report_without_changing_the_index(glove, built):
    from avq_plugin import tuning

    X, _, _ = glove
    index = fresh(built)
    before = index.default_search_params()
    report = tuning.tune(index, 0.9, k=10, X=X, num_queries=200, reorder_k=40)
    assert isinstance(report, TuneReport) and report.recall >= 0.9
    assert index.default_search_params() == before
