"""scikit-learn estimators (avq_plugin.neighbors): the estimator contract, recall at default
settings, exact distances, X=None semantics, the transformer's graph and pipelines."""

from __future__ import annotations

import functools
import os
import pickle
import subprocess
import sys
import tempfile

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.cluster import DBSCAN
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.manifold import TSNE, Isomap
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier, KNeighborsTransformer, NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import avq_plugin
from avq_plugin import AVQIndex, AVQKNeighborsTransformer, AVQNearestNeighbors, ExactIndex
from avq_plugin import neighbors as avq_neighbors


# ---------------------------------------------------------------------------------- helpers
def recall_at(I, gt, k=10):
    """Fraction of the exact k nearest ids found among the returned k ids."""
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(I, gt)]))


def exact_distances(metric, Q, X, I):
    """float64 distances of the pairs (Q[i], X[I[i, j]]) in the metric's units."""
    Q = np.asarray(Q, np.float64)
    V = np.asarray(X, np.float64)[I]
    if metric in ("euclidean", "sqeuclidean"):
        d2 = ((V - Q[:, None, :]) ** 2).sum(axis=2)
        return np.sqrt(d2) if metric == "euclidean" else d2
    dots = np.einsum("qkd,qd->qk", V, Q)
    if metric == "dot":
        return -dots
    return 1.0 - dots / (np.linalg.norm(V, axis=2) * np.linalg.norm(Q, axis=1)[:, None])


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def glove_xq(glove):
    X, Q, _ = glove
    return X, Q


@pytest.fixture(scope="module")
def blobs():
    """6000 x 24 clustered float32 points (above the exact-search threshold)."""
    rng = np.random.default_rng(7)
    C = rng.standard_normal((40, 24)).astype(np.float32) * 3
    X = C[rng.integers(0, 40, 6200)] + rng.standard_normal((6200, 24)).astype(np.float32)
    return np.ascontiguousarray(X[:6000]), np.ascontiguousarray(X[6000:])


# ---------------------------------------------------------------------------------- estimator checks
# Small inputs use exact search (algorithm="auto"), so every check runs on deterministic, exact
# results: no check is expected to fail.
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {}


def _check_name(check):
    return check.func.__name__ if isinstance(check, functools.partial) else check.__name__


_ARRAY_API_RUNNER = """
import os, pickle, sys, warnings
warnings.simplefilter("error")
estimator, check = pickle.loads(sys.stdin.buffer.read())
check(estimator)
"""


@parametrize_with_checks(
    [AVQNearestNeighbors(), AVQKNeighborsTransformer()],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS.get(type(est).__name__, {}),
)
def test_sklearn_estimator_checks(estimator, check):
    if _check_name(check) == "check_array_api_input" and os.environ.get("SCIPY_ARRAY_API") != "1":
        # This check needs SCIPY_ARRAY_API=1 before SciPy is first imported (it skips itself
        # otherwise): run it in a fresh interpreter with the variable set.
        env = dict(os.environ, SCIPY_ARRAY_API="1")
        proc = subprocess.run(
            [sys.executable, "-c", _ARRAY_API_RUNNER],
            input=pickle.dumps((estimator, check)),
            env=env,
            capture_output=True,
            timeout=300,
            cwd=tempfile.gettempdir(),  # not the source tree: it would shadow the installed package
        )
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        return
    check(estimator)


# ---------------------------------------------------------------------------------- optional dependency
def test_lazy_export_and_missing_sklearn():
    assert avq_plugin.AVQNearestNeighbors is avq_neighbors.AVQNearestNeighbors
    assert "AVQKNeighborsTransformer" in dir(avq_plugin)
    with pytest.raises(AttributeError, match="no attribute"):
        avq_plugin.NoSuchEstimator  # noqa: B018
    code = (
        "import sys\n"
        "sys.modules['sklearn'] = None\n"  # makes 'import sklearn' raise ImportError
        "import avq_plugin\n"
        "avq_plugin.AVQIndex\n"
        "try:\n"
        "    from avq_plugin import AVQNearestNeighbors\n"
        "except ImportError as e:\n"
        "    print('IMPORTERROR', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir()
    )  # not the source tree: it would shadow the package
    assert out.returncode == 0, out.stderr
    assert "IMPORTERROR" in out.stdout and "avq-plugin[sklearn]" in out.stdout, out.stdout


# ---------------------------------------------------------------------------------- recall at defaults
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_glove_subset_recall_and_distances_at_defaults(glove_xq, metric):
    X, Q = glove_xq
    nn = AVQNearestNeighbors(n_neighbors=10, metric=metric, random_state=0).fit(X)
    assert isinstance(nn.index_, AVQIndex)  # 20,000 rows: the approximate index
    D, I = nn.kneighbors(Q)
    ref = NearestNeighbors(n_neighbors=10, metric=metric, algorithm="brute").fit(X)
    De, Ie = ref.kneighbors(Q)
    r = recall_at(I, Ie)
    assert r >= 0.95, r
    assert D.shape == I.shape == (len(Q), 10) and I.dtype == np.int64 and D.dtype == np.float64
    assert (np.diff(D, axis=1) >= 0).all()
    np.testing.assert_allclose(D, exact_distances(metric, Q, X, I), rtol=1e-5, atol=1e-6)
    # Where the ids agree with the exact search, so do the distances.
    same = I == Ie
    np.testing.assert_allclose(D[same], De[same], rtol=1e-4, atol=1e-5)
    # Training points as queries (X=None), on a sample of rows.
    Dt, It = nn.kneighbors()
    rows = np.arange(0, len(X), 10)
    Ite = ref.kneighbors(X[rows], n_neighbors=11, return_distance=False)
    Ite = np.array([[j for j in r_ if j != i][:10] for i, r_ in zip(rows, Ite)])
    assert recall_at(It[rows], Ite) >= 0.95
    assert not (It == np.arange(len(X))[:, None]).any()


def test_digits_recall_at_defaults_and_forced_avq(digits):
    X, _ = digits
    ref = NearestNeighbors(n_neighbors=10, algorithm="brute").fit(X)
    De, Ie = ref.kneighbors()
    # Defaults: 1797 rows is below EXACT_SEARCH_THRESHOLD, so the search is exact.
    nn = AVQNearestNeighbors(n_neighbors=10).fit(X)
    assert isinstance(nn.index_, ExactIndex) and len(X) < avq_neighbors.EXACT_SEARCH_THRESHOLD
    D, I = nn.kneighbors()
    np.testing.assert_allclose(D, De, rtol=1e-6, atol=1e-6)
    assert recall_at(I, Ie) >= 0.99  # exact up to ties between equal distances
    # The approximate index at its default budget on the same data.
    nn = AVQNearestNeighbors(n_neighbors=10, algorithm="avq", random_state=0).fit(X)
    assert isinstance(nn.index_, AVQIndex)
    D, I = nn.kneighbors()
    assert recall_at(I, Ie) >= 0.95
    np.testing.assert_allclose(D, exact_distances("euclidean", X, X, I), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------- metrics and units
@pytest.mark.parametrize("algorithm", ["brute", "avq"])
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine", "dot"])
def test_metric_units(blobs, metric, algorithm):
    X, Q = blobs
    nn = AVQNearestNeighbors(n_neighbors=8, metric=metric, algorithm=algorithm, random_state=0).fit(X)
    assert nn.effective_metric_ == metric
    D, I = nn.kneighbors(Q)
    np.testing.assert_allclose(D, exact_distances(metric, Q, X, I), rtol=1e-6, atol=1e-6)
    assert (np.diff(D, axis=1) >= 0).all()
    if metric == "dot":
        S = -(Q.astype(np.float64) @ X.T.astype(np.float64))
    else:
        sk_metric = metric
        S = NearestNeighbors(metric=sk_metric, algorithm="brute").fit(X).kneighbors(Q, n_neighbors=len(X))[0][:, :8]
    best = np.sort(S, axis=1)[:, :8] if metric == "dot" else S
    if algorithm == "brute":
        np.testing.assert_allclose(D, best, rtol=1e-5, atol=1e-5)
    else:  # approximate: never better than exact, and nearly always equal
        assert (D >= best - 1e-5).all()
        assert np.mean(np.isclose(D, best, rtol=1e-5, atol=1e-5)) >= 0.95


def test_metric_aliases_and_unknown_metric():
    X = np.random.default_rng(0).standard_normal((50, 4))
    for alias, eff in [("l2", "euclidean"), ("ip", "dot"), ("inner_product", "dot")]:
        assert AVQNearestNeighbors(metric=alias).fit(X).effective_metric_ == eff
    with pytest.raises(ValueError, match="metric='manhattan' is not supported.*cosine.*euclidean"):
        AVQNearestNeighbors(metric="manhattan").fit(X)
    with pytest.raises(ValueError, match="all-zero row"):
        AVQNearestNeighbors(metric="cosine").fit(np.vstack([X, np.zeros((1, 4))]))


# ---------------------------------------------------------------------------------- X=None, errors
@pytest.mark.parametrize("algorithm", ["brute", "avq"])
def test_kneighbors_x_none_matches_sklearn_with_duplicates(algorithm):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 6)).astype(np.float32)
    X[100:110] = X[5]  # 11 identical rows: more duplicates than neighbours asked for
    X[200] = X[201]
    nn = AVQNearestNeighbors(n_neighbors=5, algorithm=algorithm, num_leaves=8, leaves_to_search=8, random_state=0).fit(
        X
    )
    D, I = nn.kneighbors()
    De, Ie = NearestNeighbors(n_neighbors=5).fit(X).kneighbors()
    assert not (I == np.arange(len(X))[:, None]).any()
    np.testing.assert_allclose(D, De, atol=1e-6)
    assert (I[200, 0], D[200, 0]) == (201, 0.0) and (I[201, 0], D[201, 0]) == (200, 0.0)
    assert (D[100:110] == 0).all() and (D[5] == 0).all()
    G = nn.kneighbors_graph(mode="distance")
    assert G.shape == (400, 400) and (np.diff(G.indptr) == 5).all() and G.diagonal().sum() == 0


def test_rows_short_of_candidates_are_completed():
    # 50 leaves of ~8 points and one probed leaf cannot hold 20 neighbours: the index widens
    # the probe to the next best leaves (issue 11), so each row is complete (no -1 padding).
    X = np.random.default_rng(4).standard_normal((400, 8)).astype(np.float32)
    nn = AVQNearestNeighbors(n_neighbors=20, algorithm="avq", num_leaves=50, leaves_to_search=1, random_state=0).fit(X)
    D, I = nn.kneighbors(X[:50] + 0.01)
    assert (I >= 0).all() and all(len(set(r)) == 20 for r in I)
    De, Ie = NearestNeighbors(n_neighbors=20).fit(X).kneighbors(X[:50] + 0.01)
    np.testing.assert_allclose(D, exact_distances("euclidean", X[:50] + 0.01, X, I), rtol=1e-6)
    assert recall_at(I, Ie, k=20) >= 0.45  # a minimal probe of ~3 leaves (measured 0.51)
    assert (I[:, 0] == np.arange(50)).all()


def test_n_neighbors_limits_and_bad_input(digits):
    X, _ = digits
    X = X[:60]
    nn = AVQNearestNeighbors(n_neighbors=3).fit(X)
    assert nn.kneighbors(n_neighbors=59)[1].shape == (60, 59)
    with pytest.raises(ValueError, match="Expected n_neighbors <= n_samples_fit"):
        nn.kneighbors(n_neighbors=60)  # X=None asks for 61 including self
    with pytest.raises(ValueError, match="Expected n_neighbors <= n_samples_fit"):
        nn.kneighbors(X[:2], n_neighbors=61)
    with pytest.raises(ValueError, match="n_neighbors must be >= 1"):
        nn.kneighbors(X[:2], n_neighbors=0)
    with pytest.raises(NotFittedError):
        AVQNearestNeighbors().kneighbors(X)
    with pytest.raises(NotFittedError):
        AVQKNeighborsTransformer().transform(X)
    bad = X[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        nn.kneighbors(bad)
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        AVQNearestNeighbors().fit(bad)
    with pytest.raises(ValueError, match="features"):
        nn.kneighbors(X[:2, :10])
    with pytest.raises(TypeError, match="[Ss]parse"):
        AVQNearestNeighbors().fit(sp.csr_matrix(X))
    with pytest.raises(TypeError, match="[Ss]parse"):
        nn.kneighbors(sp.csr_matrix(X[:2]))
    for params, err in [
        ({"n_jobs": 0}, ValueError),
        ({"n_neighbors": 2.5}, TypeError),
        ({"algorithm": "kd_tree"}, ValueError),
        ({"dims_per_block": 9}, ValueError),
        ({"random_state": "x"}, TypeError),
        ({"radius": -1.0}, ValueError),
        ({"num_leaves": 100, "algorithm": "avq"}, ValueError),
    ]:
        est = AVQNearestNeighbors(**params)  # __init__ only stores
        with pytest.raises(err):
            est.fit(X)


def test_dataframe_feature_names(digits):
    import pandas as pd  # in the [test] extra (optional for users)

    X, _ = digits
    df = pd.DataFrame(X[:100], columns=[f"px{i}" for i in range(X.shape[1])])
    nn = AVQNearestNeighbors(n_neighbors=3).fit(df)
    assert list(nn.feature_names_in_) == list(df.columns)
    assert nn.kneighbors(df.iloc[:5])[1].shape == (5, 3)
    with pytest.warns(UserWarning, match="feature names"):
        nn.kneighbors(X[:5])


def test_n_jobs_and_random_state_mapping(blobs):
    X, Q = blobs
    assert AVQNearestNeighbors().fit(X[:100]).index_.num_threads == 1
    assert AVQNearestNeighbors(n_jobs=-1).fit(X[:100]).index_.num_threads == (os.cpu_count() or 1)
    a = AVQNearestNeighbors(algorithm="avq", random_state=5).fit(X)
    assert a.index_.seed == 5
    b = AVQNearestNeighbors(algorithm="avq", random_state=np.random.RandomState(1)).fit(X)
    c = AVQNearestNeighbors(algorithm="avq", random_state=np.random.RandomState(1)).fit(X)
    assert b.index_.seed == c.index_.seed
    for est in (b, c):
        np.testing.assert_array_equal(est.kneighbors(Q)[1], b.kneighbors(Q)[1])


# ---------------------------------------------------------------------------------- determinism, persistence
def test_determinism_pickle_joblib_clone(blobs, tmp_path):
    X, Q = blobs
    params = dict(n_neighbors=7, metric="cosine", algorithm="avq", random_state=11, n_jobs=2)
    a = AVQNearestNeighbors(**params).fit(X)
    b = AVQNearestNeighbors(**params).fit(X)
    Da, Ia = a.kneighbors(Q)
    Db, Ib = b.kneighbors(Q)
    np.testing.assert_array_equal(Ia, Ib)
    np.testing.assert_array_equal(Da, Db)
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(c.kneighbors(Q)[1], Ia)
    joblib.dump(a, tmp_path / "nn.joblib")
    d = joblib.load(tmp_path / "nn.joblib")
    np.testing.assert_array_equal(d.kneighbors(Q)[0], Da)
    e = clone(a)
    assert e.get_params() == a.get_params() and not hasattr(e, "index_")
    e.set_params(n_neighbors=3)
    assert e.fit(X).kneighbors(Q[:4])[1].shape == (4, 3)
    t = AVQKNeighborsTransformer(n_neighbors=4, algorithm="avq", random_state=0).fit(X)
    G = t.transform(Q)
    G2 = pickle.loads(pickle.dumps(t)).transform(Q)
    assert (G != G2).nnz == 0


# ---------------------------------------------------------------------------------- radius
@pytest.mark.parametrize("algorithm", ["brute", "avq"])
def test_radius_neighbors(blobs, algorithm):
    X, Q = blobs
    radius = 6.5
    nn = AVQNearestNeighbors(radius=radius, algorithm=algorithm, random_state=0).fit(X)
    ref = NearestNeighbors(radius=radius, algorithm="brute").fit(X)
    D, I = nn.radius_neighbors(Q[:100])
    De, Ie = ref.radius_neighbors(Q[:100])
    assert D.dtype == object and I.dtype == object and D.shape == (100,)
    found = total = 0
    for q, d, i, _de, ie in zip(Q[:100], D, I, De, Ie):
        assert (d <= radius).all() and (np.diff(d) >= 0).all()
        np.testing.assert_allclose(d, np.linalg.norm(X[i].astype(np.float64) - q, axis=1), rtol=1e-6)
        assert set(i) <= set(ie)
        found += len(i)
        total += len(ie)
    assert total > 2000  # rows with many neighbours exercise the candidate rounds
    assert found / total >= (1.0 if algorithm == "brute" else 0.95)
    # Training points: self excluded, duplicates kept.
    Dt, It = nn.radius_neighbors(radius=radius)
    Ite = ref.radius_neighbors(return_distance=False)
    assert all(r not in set(i) for r, i in enumerate(It))
    if algorithm == "brute":
        assert all(set(a) == set(b) for a, b in zip(It, Ite))
    G = nn.radius_neighbors_graph(Q[:100], mode="distance", sort_results=True)
    assert G.shape == (100, len(X)) and G.nnz == found
    with pytest.raises(ValueError, match="return_distance must be True"):
        nn.radius_neighbors(Q[:2], return_distance=False, sort_results=True)


# ---------------------------------------------------------------------------------- transformer
@pytest.mark.parametrize("algorithm", ["auto", "avq"])
@pytest.mark.parametrize("mode", ["distance", "connectivity"])
def test_transformer_graph_matches_kneighbors_transformer(digits, mode, algorithm):
    X, _ = digits
    ours = AVQKNeighborsTransformer(n_neighbors=6, mode=mode, algorithm=algorithm, random_state=0)
    ref = KNeighborsTransformer(n_neighbors=6, mode=mode)
    G = ours.fit_transform(X)
    Ge = ref.fit_transform(X)
    assert isinstance(G, sp.csr_matrix) and G.shape == Ge.shape == (len(X), len(X))
    np.testing.assert_array_equal(np.diff(G.indptr), np.diff(Ge.indptr))
    per_row = 7 if mode == "distance" else 6
    assert (np.diff(G.indptr) == per_row).all()
    if mode == "distance":  # each training point is its own first neighbour, at distance 0
        assert (G.indices[G.indptr[:-1]] == np.arange(len(X))).all()
        assert (G.data[G.indptr[:-1]] == 0).all()
    pattern, pattern_ref = G.copy(), Ge.copy()
    pattern.data[:] = 1
    pattern_ref.data[:] = 1
    if algorithm == "auto":  # exact search on 1797 rows: the same graph up to ties in distance
        assert (pattern != pattern_ref).nnz <= 0.005 * G.nnz
    else:
        assert (pattern != pattern_ref).nnz <= 0.05 * G.nnz
    rows_ours = G.data.reshape(len(X), per_row)
    rows_ref = np.sort(Ge.data.reshape(len(X), per_row), axis=1)  # sklearn's rows are not sorted
    if algorithm == "auto":
        np.testing.assert_allclose(rows_ours, rows_ref, rtol=1e-6, atol=1e-6)
    elif mode == "distance":
        assert (rows_ours >= rows_ref - 1e-4).all()
        assert np.mean(np.isclose(rows_ours, rows_ref, rtol=1e-5)) >= 0.95
    Gq = ours.transform(X[:10] + 0.5)
    assert Gq.shape == (10, len(X)) and (np.diff(Gq.indptr) == per_row).all()
    names = ours.get_feature_names_out()
    assert len(names) == len(X) and names[0].startswith("avqkneighborstransformer")


@pytest.mark.parametrize("algorithm", ["auto", "avq"])
def test_pipeline_precomputed_classifier_on_digits(digits, algorithm):
    X, y = digits
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    exact = make_pipeline(
        KNeighborsTransformer(n_neighbors=10), KNeighborsClassifier(n_neighbors=10, metric="precomputed")
    )
    ours = make_pipeline(
        AVQKNeighborsTransformer(n_neighbors=10, algorithm=algorithm, random_state=0),
        KNeighborsClassifier(n_neighbors=10, metric="precomputed"),
    )
    acc_exact = exact.fit(Xtr, ytr).score(Xte, yte)
    acc_ours = ours.fit(Xtr, ytr).score(Xte, yte)
    assert acc_exact > 0.95
    assert acc_ours >= acc_exact - 0.01, (acc_ours, acc_exact)


def test_transformer_in_isomap_tsne_dbscan(digits):
    X, y = digits
    X = X[:400]
    t = AVQKNeighborsTransformer(n_neighbors=16, algorithm="avq", random_state=0)
    iso = make_pipeline(clone(t), Isomap(n_neighbors=16, metric="precomputed"))
    emb = iso.fit_transform(X)
    assert emb.shape == (400, 2) and np.isfinite(emb).all()
    tsne = make_pipeline(
        clone(t), TSNE(metric="precomputed", perplexity=5, init="random", max_iter=250, random_state=0)
    )
    emb = tsne.fit_transform(X)
    assert emb.shape == (400, 2) and np.isfinite(emb).all()
    G = clone(t).fit_transform(X)
    eps = float(np.median(G.data[G.data > 0]))
    labels = DBSCAN(eps=eps, min_samples=3, metric="precomputed").fit_predict(G)
    exact_labels = DBSCAN(eps=eps, min_samples=3, metric="precomputed").fit_predict(
        KNeighborsTransformer(n_neighbors=16).fit_transform(X)
    )
    assert (labels >= 0).sum() > 100
    assert np.mean(labels == exact_labels) >= 0.95


def test_transformer_set_output(digits):
    X, _ = digits
    t = AVQKNeighborsTransformer(n_neighbors=3).set_output(transform="default")
    assert sp.issparse(t.fit_transform(X[:50]))


# ---------------------------------------------------------------------------------- target_recall
def test_target_recall_tunes_the_budget(glove_xq):
    X, Q = glove_xq
    Ie = (
        NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(X).kneighbors(Q, return_distance=False)
    )
    chosen = []
    for target in (0.8, 0.95):
        nn = AVQNearestNeighbors(n_neighbors=10, metric="cosine", target_recall=target, random_state=0).fit(X)
        report = nn.tune_report_
        assert report.k == 10 and report.reached and report.recall >= target
        lts, rk = nn.index_.default_search_params()
        assert lts == report.leaves_to_search and rk == report.reorder_k == 200
        # Fresh queries (not in the index): at the target, within sampling noise.
        assert recall_at(nn.kneighbors(Q)[1], Ie) >= target - 0.015
        chosen.append(lts)
    assert chosen[0] < chosen[1]
    again = AVQNearestNeighbors(n_neighbors=10, metric="cosine", target_recall=0.95, random_state=0).fit(X)
    assert again.index_.default_search_params()[0] == chosen[1]  # deterministic choice
    assert AVQNearestNeighbors().fit(X[:100]).tune_report_ is None
    with pytest.raises(ValueError, match="not both"):
        AVQNearestNeighbors(target_recall=0.9, leaves_to_search=3).fit(X[:100])
    with pytest.raises(ValueError, match="target_recall must be in"):
        AVQNearestNeighbors(target_recall=1.5).fit(X[:100])


def test_docstring_examples():
    import doctest

    result = doctest.testmod(avq_neighbors, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0
