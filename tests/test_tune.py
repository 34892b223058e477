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
    assert index.default_leaf_margin() == report.leaf_margin
    D, I = index.search(Q, k=10)
    M = 0.0 if report.leaf_margin is None else report.leaf_margin
    D2, I2 = index.search(Q, k=10, leaves_to_search=report.leaves_to_search, reorder_k=report.reorder_k, leaf_margin=M)
    np.testing.assert_array_equal(I, I2)
    # ... and the shipped queries (never used for tuning) land near the target.
    r = recall_at_10(I, gt)
    assert target - 0.02 <= r <= target + 0.04, (r, report)
    L, R = report.leaves_to_search, report.reorder_k
    if report.leaf_margin is None:
        # Minimal for its reorder_k: one leaf fewer misses the goal on the tuning queries.
        if L > 1:
            below = [rec for (l_, r_, rec) in report.evaluated if (l_, r_) == (L - 1, R)]
            assert below and below[0] < report.goal
    else:
        # Minimal for its (leaves, reorder_k): one margin step less misses the goal.
        below = [rec for (l_, r_, m, rec) in report.evaluated_margins if (l_, r_) == (L, R) and m < report.leaf_margin]
        assert below and max(below) < report.goal


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


# ------------------------------------------------------------------------- layouts
LAYOUT_PARAMS = (
    "metric",
    "num_leaves",
    "dims_per_block",
    "anisotropic_threshold",
    "eta",
    "reorder",
    "leaves_to_search",
    "reorder_k",
    "spill",
    "soar_lambda",
    "training_iterations",
    "seed",
)


@pytest.fixture(scope="module")
def small(glove):
    """6000 GloVe vectors (cosine), an index of them with the defaults (2 dims per block, no
    spilling at d = 50), the shipped queries and their exact neighbours among the 6000."""
    X, Q, _ = glove
    X = X[:6000]
    gt = avq_plugin.ExactIndex(metric="cosine").fit(X).search(Q, k=10)[1]
    return X, Q, gt, avq_plugin.AVQIndex(metric="cosine", seed=0).fit(X)


def params_of(index):
    return {name: getattr(index, name) for name in LAYOUT_PARAMS}


def test_layouts_auto_measures_every_layout_and_keeps_the_fastest(small):
    X, Q, gt, built = small
    index = fresh(built)
    before = params_of(index)
    report = index.tune(0.9, X=X, layouts="auto", num_queries=300, reorder_k=40, margin=0.01)
    # The index's own layout first (measured as it is), then 2 and 4 dims per block, each without and with SOAR.
    got = [(t.dims_per_block, t.spill, t.current) for t in report.layouts]
    assert got == [(2, None, True), (2, "soar", False), (4, None, False), (4, "soar", False)]
    assert all(t.status == "measured" and t.reorder_k == 40 for t in report.layouts)
    assert report.layouts[0].train_seconds == 0 and all(t.train_seconds > 0 for t in report.layouts[1:])
    for t in report.layouts:
        assert t.seconds_per_query > 0 and t.qps == 1 / t.seconds_per_query
        if t.reached:  # minimal for its reorder_k: one leaf fewer misses this layout's goal
            assert t.recall >= 0.91 and any(l_ == t.leaves_to_search - 1 and rec < 0.91 for l_, _, rec in t.evaluated)
        else:  # 4 dims per block at d = 50 and 40 candidates: below 0.9 even with every leaf probed
            assert t.dims_per_block == 4 and t.leaves_to_search == built.num_leaves_ and t.recall < 0.9
    assert [t.reached for t in report.layouts][:2] == [True, True]
    # The choice is the fastest layout reaching the target, and the report's top level is its measurement.
    fastest = min((t for t in report.layouts if t.reached), key=lambda t: t.seconds_per_query)
    chosen = (report.dims_per_block, report.spill)
    assert chosen == (fastest.dims_per_block, fastest.spill)
    assert (report.leaves_to_search, report.reorder_k, report.recall) == (
        fastest.leaves_to_search,
        fastest.reorder_k,
        fastest.recall,
    )
    assert report.qps == pytest.approx(fastest.qps) and report.evaluated == fastest.evaluated
    # The index now has that layout and budget; the constructor parameters are what the user gave.
    assert (index.dims_per_block_, index.spill_) == chosen
    assert index.default_search_params() == (report.leaves_to_search, 40)
    assert params_of(index) == before
    assert recall_at_10(index.search(Q, k=10)[1], gt) >= 0.88
    d = report.as_dict()
    assert [(e["dims_per_block"], e["spill"]) for e in d["layouts"]] == [(t[0], t[1]) for t in got]
    assert (d["dims_per_block"], d["spill"]) == chosen


def test_layouts_copies_are_deterministic_and_equal_a_refit(small):
    """Each layout is the index retrained with only the layout changed: the same seed gives the same
    copies, recalls and budgets, and the adopted state equals AVQIndex(that layout).fit(X)."""
    X, Q, _, _ = small
    # codes only, 8 dims per block: no budget reaches 0.5 (recall@10 about 0.24 with every leaf probed),
    # while 2 dims per block does, so the choice involves no timing.
    codes8 = avq_plugin.AVQIndex(metric="cosine", dims_per_block=8, reorder=None, seed=3).fit(X)
    a, b = fresh(codes8), fresh(codes8)
    ra = a.tune(0.5, X=X, layouts=[(2, "none")], num_queries=200)
    rb = b.tune(0.5, X=X, layouts=[[2, None], (2, None)], num_queries=200)  # duplicates are measured once
    assert [(t.dims_per_block, t.spill, t.reached) for t in ra.layouts] == [(8, None, False), (2, None, True)]
    for ta, tb in zip(ra.layouts, rb.layouts):
        assert (ta.leaves_to_search, ta.reorder_k, ta.recall, ta.evaluated) == (
            tb.leaves_to_search,
            tb.reorder_k,
            tb.recall,
            tb.evaluated,
        )
    assert (ra.dims_per_block, ra.spill, ra.reorder_k) == (2, None, None) and ra.reached
    assert a.dims_per_block_ == b.dims_per_block_ == 2 and a.dims_per_block == 8
    refit = avq_plugin.AVQIndex(metric="cosine", dims_per_block=2, reorder=None, seed=3).fit(X)
    ids = np.arange(0, len(X), 97)
    np.testing.assert_array_equal(a.get_codes(ids), refit.get_codes(ids))
    lts = ra.leaves_to_search
    np.testing.assert_array_equal(a.search(Q, k=10)[1], refit.search(Q, k=10, leaves_to_search=lts)[1])
    np.testing.assert_array_equal(a.search(Q, k=10)[1], b.search(Q, k=10)[1])


def test_layouts_none_reaching_the_target_keeps_the_best_recall_and_warns(small):
    X, _, _, _ = small
    index = avq_plugin.AVQIndex(metric="cosine", dims_per_block=8, reorder=None, seed=3).fit(X)
    with pytest.warns(UserWarning, match=r"target_recall=0\.99 not reached.*with dims_per_block=2, spill=None"):
        report = index.tune(0.99, X=X, layouts=[(2, None)], num_queries=100)
    assert not report.reached and not any(t.reached for t in report.layouts)
    assert (report.dims_per_block, index.dims_per_block_) == (2, 2)
    assert report.recall == max(t.recall for t in report.layouts)
    assert report.leaves_to_search == index.num_leaves_


def test_tuned_layout_survives_serialization(small, tmp_path):
    X, Q, _, _ = small
    index = avq_plugin.AVQIndex(metric="cosine", dims_per_block=8, reorder=None, seed=3).fit(X)
    report = index.tune(0.5, X=X, layouts=[(2, "soar")], num_queries=100)
    assert (index.dims_per_block_, index.spill_) == (2, "soar") == (report.dims_per_block, report.spill)
    expected = index.search(Q[:50], k=10)[1]
    index.save(tmp_path / "layout.avq")
    copies = [
        avq_plugin.AVQIndex.load(tmp_path / "layout.avq"),
        avq_plugin.AVQIndex.load(tmp_path / "layout.avq", mmap=True),
        avq_plugin.AVQIndex.from_bytes(index.to_bytes()),
        pickle.loads(pickle.dumps(index)),
    ]
    for c in copies:
        assert (c.dims_per_block_, c.spill_, c.num_blocks) == (2, "soar", 25)
        assert c.default_search_params() == index.default_search_params()
        np.testing.assert_array_equal(c.search(Q[:50], k=10)[1], expected)
    assert copies[-1].dims_per_block == 8  # pickle keeps the parameters as given, too
    assert copies[0].dims_per_block == 2  # a file stores the record (as for anisotropic_threshold)


def test_layouts_time_budget_and_interrupt_leave_the_index_consistent(small):
    X, Q, _, built = small
    index = fresh(built)
    with pytest.warns(UserWarning, match="time budget"):
        report = index.tune(0.95, X=X, layouts="auto", num_queries=100, time_budget_s=1e-9)
    assert [t.status for t in report.layouts] == ["measured", "skipped", "skipped", "skipped"]
    assert report.layouts[1].recall is None and report.layouts[1].as_dict()["qps"] is None
    assert (index.dims_per_block_, index.spill_) == (2, None)
    # Ctrl-C (here raised by the progress callback while a copy trains) stops tuning; the index is as it was.
    stages = []

    def interrupt(stage, done, total, info):
        stages.append((stage, done, total, info))
        if stage != "tune layouts":
            raise KeyboardInterrupt

    index = fresh(built)
    index.progress = interrupt
    with pytest.raises(KeyboardInterrupt):
        index.tune(0.9, X=X, layouts="auto", reorder_k=40, num_queries=100)
    assert stages[0] == ("tune layouts", 0, 4, "dims_per_block=2, spill=None")
    assert stages[1][:3] == ("tune layouts", 1, 4) and "leaves_to_search=" in stages[1][3]
    assert stages[2] == ("tune layouts", 1, 4, "dims_per_block=2, spill='soar'")
    assert index.default_search_params() == built.default_search_params()
    assert (index.dims_per_block_, index.spill_) == (2, None)
    np.testing.assert_array_equal(index.search(Q[:20], k=10)[1], built.search(Q[:20], k=10)[1])


def test_tune_layouts_function_changes_nothing(small):
    from avq_plugin import tuning

    X, _, _, built = small
    index = fresh(built)
    report, winner = tuning.tune_layouts(index, [(4, None)], 0.9, X=X, num_queries=100, reorder_k=40)
    assert [(t.dims_per_block, t.spill) for t in report.layouts] == [(2, None), (4, None)]
    assert (index.dims_per_block_, index.default_search_params()) == (2, built.default_search_params())
    if (report.dims_per_block, report.spill) == (2, None):
        assert winner is None
    else:
        assert winner is not index and winner.dims_per_block_ == 4 and winner.ntotal == index.ntotal
    # Without layouts, the report names the index's layout and lists no trials.
    plain = tuning.tune(index, 0.9, X=X, num_queries=100, reorder_k=40)
    assert (plain.dims_per_block, plain.spill, plain.layouts) == (2, None, ())


@pytest.mark.parametrize(
    "layouts, error, match",
    [
        ("fast", ValueError, "layouts must be 'auto' or a list"),
        (4, TypeError, "layouts must be 'auto' or a list"),
        ([], ValueError, "layouts must not be empty"),
        ([4], TypeError, r"layouts: each layout must be a \(dims_per_block, spill\) pair"),
        ([(4,)], ValueError, r"layouts: each layout must be a \(dims_per_block, spill\) pair"),
        ([(4, None, 1)], ValueError, "pair"),
        ([(0, None)], ValueError, "layouts: dims_per_block must be >= 1"),
        ([(9, None)], ValueError, "layouts: dims_per_block must be <= 8"),
        ([(2.0, None)], TypeError, "layouts: dims_per_block must be an integer"),
        ([(True, None)], TypeError, "layouts: dims_per_block must be an integer"),
        ([(2, "auto")], ValueError, "layouts: spill must be None, 'none' or 'soar'"),
        ([(2, "SOAR")], ValueError, "layouts: spill"),
    ],
)
def test_bad_layouts(small, layouts, error, match):
    X, _, _, built = small
    index = fresh(built)
    with pytest.raises(error, match=match):
        index.tune(0.9, X=X, layouts=layouts)
    assert index.default_search_params() == built.default_search_params()


def test_layouts_need_the_indexed_vectors(small):
    X, Q, _, built = small
    index = fresh(built)
    with pytest.raises(ValueError, match="layouts= trains the index with each layout.*pass X="):
        index.tune(0.9, layouts="auto")
    with pytest.raises(ValueError, match="pass X="):
        index.tune(0.9, queries=Q[:50], layouts=[(4, None)])
    with pytest.raises(ValueError, match="rows but the index holds"):
        index.tune(0.9, X=X[:100], layouts="auto")


# ------------------------------------------------------------------------- leaf_margin
def _timed(monkeypatch, margin_faster):
    """Replace the timings of tune by a cost model, so the choice between a margin setting and the
    fixed budget is made deterministically: margin settings cost 0.5 (or 100) times a fixed one of the same budget."""
    from avq_plugin import tuning

    def fake(index, s, L, R, M=None):
        base = 1e-3 * L + 1e-5 * (R or 0)
        return base if M is None else base * (0.5 if margin_faster else 100.0)

    monkeypatch.setattr(tuning, "_seconds_per_pass", fake)


def test_tune_chooses_and_stores_a_leaf_margin(glove, built, monkeypatch, tmp_path):
    X, Q, gt = glove
    index = fresh(built)
    _timed(monkeypatch, margin_faster=True)
    report = index.tune(0.95, X=X, leaf_margin="always")
    monkeypatch.undo()
    assert report.leaf_margin is not None and 0 < report.leaf_margin <= 0.64
    assert report.reached and report.recall >= report.goal
    L, R, M = report.leaves_to_search, report.reorder_k, report.leaf_margin
    # The margin search ran from smaller budgets than the fastest fixed one, and the chosen margin
    # is the smallest of its 0.01 grid reaching the goal from (L, R).
    fixed = [(l_, r_) for (l_, r_, rec) in report.evaluated if rec >= report.goal]
    assert any(L < l_ and R < r_ for l_, r_ in fixed)
    tried = {(l_, r_, round(m, 2)): rec for (l_, r_, m, rec) in report.evaluated_margins}
    assert tried[(L, R, round(M, 2))] >= report.goal
    if M > 0.01:
        assert tried[(L, R, round(M - 0.01, 2))] < report.goal
    # Stored: search() uses it, leaf_margin=0 turns it off, and every copy keeps it.
    assert index.default_search_params() == (L, R) and index.default_leaf_margin() == M
    I = index.search(Q, k=10)[1]
    np.testing.assert_array_equal(I, index.search(Q, k=10, leaves_to_search=L, reorder_k=R, leaf_margin=M)[1])
    fixed_count = index.search(Q, k=10, leaf_margin=0)[1]
    assert not np.array_equal(I, fixed_count)
    np.testing.assert_array_equal(fixed_count, built.search(Q, k=10, leaves_to_search=L, reorder_k=R)[1])
    assert recall_at_10(I, gt) >= 0.93
    path = tmp_path / "margin.avq"
    index.save(path)
    for c in (
        avq_plugin.AVQIndex.load(path),
        avq_plugin.AVQIndex.load(path, mmap=True),
        avq_plugin.AVQIndex.from_bytes(index.to_bytes()),
        fresh(index),
    ):
        assert c.default_leaf_margin() == M
        np.testing.assert_array_equal(c.search(Q, k=10)[1], I)
    # Assigning a budget attribute keeps the margin; a later tune without margins removes it.
    index.leaves_to_search = L + 1
    assert index.default_search_params() == (L + 1, R) and index.default_leaf_margin() == M
    again = index.tune(0.95, X=X, leaf_margin=None)
    assert again.leaf_margin is None and again.evaluated_margins == []
    assert index.default_leaf_margin() is None
    # The untuned index has none, and its file has no margin section.
    assert built.default_leaf_margin() is None
    assert b"MRGN" not in built.to_bytes() and b"MRGN" in c.to_bytes()


def test_tune_keeps_the_fixed_count_when_it_is_faster(glove, built, monkeypatch):
    X, _, _ = glove
    index = fresh(built)
    _timed(monkeypatch, margin_faster=False)
    report = index.tune(0.95, X=X, leaf_margin="always")
    assert report.leaf_margin is None and report.evaluated_margins
    assert index.default_leaf_margin() is None


def test_auto_tries_margins_on_given_queries_only(glove, built, monkeypatch):
    """Held-out points choose margins too wide for real queries (docs/parameters.md): "auto"
    tries margins when tuning on given queries, not on held-out points."""
    X, Q, gt = glove
    _timed(monkeypatch, margin_faster=True)
    held_out = fresh(built).tune(0.95, X=X, num_queries=300)
    assert held_out.source == "held-out" and held_out.evaluated_margins == [] and held_out.leaf_margin is None
    index = fresh(built)
    given = index.tune(0.95, queries=Q, ground_truth=gt)
    assert given.source == "queries" and given.evaluated_margins and given.leaf_margin is not None
    assert index.default_leaf_margin() == given.leaf_margin


def test_tune_tries_no_margin_under_l2_or_a_fixed_reorder_k(glove, built):
    X, _, _ = glove
    l2 = avq_plugin.AVQIndex(metric="l2", seed=0).fit(X[:6000])
    report = l2.tune(0.9, X=X[:6000], num_queries=200, leaf_margin="always")
    assert report.leaf_margin is None and report.evaluated_margins == []
    report = fresh(built).tune(0.9, X=X, num_queries=200, reorder_k=40, leaf_margin="always")
    assert report.leaf_margin is None and report.evaluated_margins == []


@pytest.mark.parametrize(
    "value, error", [("yes", ValueError), (0.3, TypeError), (True, TypeError), ("Auto", ValueError)]
)
def test_tune_rejects_bad_leaf_margin(glove, built, value, error):
    X, _, _ = glove
    with pytest.raises(error, match="leaf_margin must be 'auto'"):
        fresh(built).tune(0.9, X=X, leaf_margin=value)


def test_stored_leaf_margin_is_checked(glove, built):
    from avq_plugin import _native

    index = fresh(built)
    native = index._require_trained()
    lts, rk = index.default_search_params()
    for bad in (float("nan"), float("inf"), 1e39):
        with pytest.raises(ValueError, match="default_leaf_margin"):
            native.set_default_search_params(lts, rk, bad)
    native.set_default_search_params(lts, rk, -5.0)  # negative: none
    assert index.default_leaf_margin() is None
    l2 = avq_plugin.AVQIndex(metric="l2", seed=0).fit(np.ascontiguousarray(glove[0][:2000]))
    with pytest.raises(ValueError, match="default_leaf_margin needs metric"):
        l2._require_trained().set_default_search_params(lts, rk, 0.2)
    p = l2._require_trained().params()
    p.default_leaf_margin = 0.2
    with pytest.raises(ValueError, match="default_leaf_margin needs metric"):
        _native.Index(p)
