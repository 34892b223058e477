"""The benchmark harness: ann-benchmarks' recall rule, true distances, configs, dataset conventions."""

import json
import subprocess
import sys
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
    padded = gt_ids.copy()
    padded[:, 5:] = -1
    assert bench.knn_recall(glove.train, glove.test[:3], padded, glove.distances[:3], "angular")[0] == 0.5
    dup = gt_ids.copy()
    dup[:, 1:] = dup[:, :1]
    assert bench.knn_recall(glove.train, glove.test[:3], dup, glove.distances[:3], "angular")[0] == pytest.approx(0.1)
    short = gt_ids[:, :4]
    assert bench.knn_recall(glove.train, glove.test[:3], short, glove.distances[:3], "angular")[0] == pytest.approx(0.4)
    out_of_range = gt_ids.copy()
    out_of_range[:, 0] = len(glove.train)
    assert bench.knn_recall(glove.train, glove.test[:3], out_of_range, glove.distances[:3], "angular")[
        0
    ] == pytest.approx(0.9)


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
    assert t == {"k": 10, "epsilon": 1e-3, "targets": [0.8, 0.9, 0.95, 0.99], "interpolate": True}
    for system in bench.SYSTEMS:
        for n in (20000, 190000, 10**7):
            for metric in ("angular", "euclidean"):
                for quick in (False, True):
                    c = bench.load_system_config(cfg_dir, system, n, metric, quick)
                    assert c.builds and c.query_args
                    assert all(len(v) == len(c.query_arg_names) for v in c.query_args)
    for n in (20000, 190000):  # avq at every layout tune(layouts="auto") chooses among
        avq = bench.load_system_config(cfg_dir, "avq", n, "euclidean")
        layouts = {(b["args"]["dims_per_block"], b["args"]["spill"]) for b in avq.builds}
        assert {(2, "none"), (2, "soar"), (4, "none"), (4, "soar")} <= layouts
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


# ----------------------------------------------------------------------------- the avq-bench CLI
CONFIGS = str(Path(__file__).resolve().parent.parent / "benchmark_configs")
FAST = ["--quick", "--reps", "1", "--min-time", "0", "--configs", CONFIGS]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_cli(capsys, *argv):
    rc = bench.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *fragments):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("avq-bench: error: ") and "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_cli_end_to_end_writes_json_csv_png(tmp_path, capsys):
    import matplotlib.image as matplotlib_image  # [test] extra

    out_dir = tmp_path / "out"
    rc, out, err = run_cli(
        capsys, "--algorithms", "avq,exact,faiss", "--max-queries", "100", "--out", str(out_dir), "--quiet", *FAST
    )
    assert rc == 0, err
    assert err == ""  # --quiet: no progress lines or bars
    # The printed table: best QPS per target and the AVQ / peer ratios.
    assert "Best QPS at recall@10 >= target" in out and "avq/faiss" in out and "avq/exact" in out
    for t in ("@0.8", "@0.9", "@0.95", "@0.99"):
        assert t in out
    res = json.loads((out_dir / "results.json").read_text())
    assert res["dataset"]["name"] == "glove50-20k" and res["dataset"]["n_test"] == 100
    assert {b["system"] for b in res["builds"]} == {"avq", "exact", "faiss"}
    assert res["settings"]["modes"] == ["single"] and res["settings"]["threads"] == 1
    exact = [q for b in res["builds"] if b["system"] == "exact" for q in b["queries"]]
    assert exact and all(q["recall"] == 1.0 for q in exact)
    avq = [q["recall"] for b in res["builds"] if b["system"] == "avq" for q in b["queries"]]
    assert max(avq) > 0.95 and min(avq) < 0.9  # the quick grid spans the targets
    assert set(res["summary"]["ratios"]["single"]) == {"faiss", "exact"}
    rows = (out_dir / "results.csv").read_text().splitlines()
    assert rows[0].split(",") == list(bench.CSV_COLUMNS)
    assert len(rows) - 1 == sum(len(b["queries"]) for b in res["builds"])
    assert any(r.split(",")[7] == "1" for r in rows[1:])  # Pareto flags
    png = out_dir / "recall_vs_qps.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    img = matplotlib_image.imread(str(png))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert (out_dir / "report.txt").read_text().startswith("glove50-20k")
    md = (out_dir / "summary.md").read_text()
    assert "| avq / faiss |" in md and "| system | QPS @0.8 |" in md


def test_cli_npy_input_computes_and_caches_exact_ground_truth(tmp_path, capsys):
    glove = datasets.load_glove_subset()
    X, Q = tmp_path / "X.npy", tmp_path / "Q.npy"
    np.save(X, glove.train[:3000].astype(np.float64))
    np.save(Q, glove.test[:40])
    cache = tmp_path / "cache"
    args = [
        str(X),
        str(Q),
        "--metric",
        "l2",
        "--algorithms",
        "exact",
        "--k",
        "5",
        "--cache-dir",
        str(cache),
        "--batch",
        *FAST,
    ]
    rc, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "a"))
    assert rc == 0, err
    assert "computed" in err and len(list(cache.glob("gt-*.npz"))) == 1
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["dataset"]["metric"] == "euclidean" and res["targets"]["k"] == 5
    assert res["settings"]["modes"] == ["batch"]
    assert all(q["recall"] == 1.0 for b in res["builds"] for q in b["queries"])  # exact vs computed GT
    with np.load(next(cache.glob("gt-*.npz"))) as z:
        nb = z["neighbors"]
    ref = np.argsort(cdist(glove.test[:40].astype(np.float64), glove.train[:3000].astype(np.float64)), 1)
    np.testing.assert_array_equal(nb[:, :5], ref[:, :5])
    rc, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "b"))
    assert rc == 0 and "cached" in err and "computed" not in err


def test_cli_hdf5_without_ground_truth(tmp_path, capsys):
    import h5py  # [test] extra

    glove = datasets.load_glove_subset()
    path = tmp_path / "nogt.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = "angular"
        f["train"] = glove.train[:2000]
        f["test"] = glove.test[:20]
    rc, out, err = run_cli(capsys, str(path), "--algorithms", "exact", "--ground-truth", "file", *FAST)
    assert_one_line_error(rc, err, "nogt", "no ground truth")
    rc, out, err = run_cli(
        capsys,
        str(path),
        "--algorithms",
        "exact",
        "--cache-dir",
        str(tmp_path / "c"),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
        *FAST,
    )
    assert rc == 0, err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["dataset"]["n_train"] == 2000
    assert all(q["recall"] == 1.0 for b in res["builds"] for q in b["queries"])


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    glove = datasets.load_glove_subset()
    X, Q20 = tmp_path / "X.npy", tmp_path / "Q20.npy"
    np.save(X, glove.train[:500])
    np.save(Q20, glove.test[:5, :20])
    out = ["--out", str(tmp_path / "never")]
    cases = [
        (["--algorithms", "avq,annoy,foo"], ["unknown algorithms annoy, foo"]),
        ([str(tmp_path / "missing.hdf5")], ["missing.hdf5", "no such file"]),
        ([str(X), str(tmp_path / "missing.npy"), "--metric", "l2"], ["missing.npy", "no such file"]),
        ([str(X), str(Q20), "--metric", "l2"], ["d=50", "d=20"]),
        ([str(X), str(X)], ["--metric"]),
        ([str(X)], ["needs its queries"]),
        ([str(X), str(X), "--metric", "hamming"], ["metric"]),
        (["--k", "0"], ["--k"]),
        (["--threads", "0"], ["--threads"]),
        (["--no-such-flag"], ["--no-such-flag"]),
    ]
    for argv, fragments in cases:
        rc, _, err = run_cli(capsys, *argv, *out, *FAST)
        assert_one_line_error(rc, err, *fragments)

    # A library named with --algorithms must be installed; by default a missing one is skipped.
    class Missing(bench.Runner):
        def __init__(self):
            raise bench.SystemUnavailable("scann not installed: skipped (pip install avq-plugin[bench])")

    monkeypatch.setitem(bench.RUNNERS, "scann", Missing)
    rc, _, err = run_cli(capsys, "--algorithms", "exact,scann", *out, *FAST)
    assert_one_line_error(rc, err, "scann was requested but is not available")
    assert not (tmp_path / "never").exists()
    monkeypatch.setattr(bench.cli, "SYSTEMS", ("scann", "exact"))  # the list the command line offers
    rc, stdout, err = run_cli(capsys, "--max-queries", "10", "--out", str(tmp_path / "ok"), *FAST)
    assert rc == 0 and "note: scann not installed" in stdout and "note: scann not installed" in err


def test_python_dash_m_is_the_same_command(tmp_path):
    # The installed package, run from a neutral directory (the source tree has no compiled module).
    p = subprocess.run(
        [sys.executable, "-m", "avq_plugin.bench", "--algorithms", "nope"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode == 2
    assert p.stderr.strip() == "avq-bench: error: unknown algorithm nope; choose from " + ",".join(bench.SYSTEMS)


def test_git_commit_names_the_checkout_of_the_configs(tmp_path):
    # avq-bench records the commit of the repository its configs come from, wherever it is
    # started: a checkout with a clean and then a modified tracked file, and a plain directory.
    from avq_plugin.bench.run import _git_commit

    repo = tmp_path / "repo"
    (repo / "benchmark_configs").mkdir(parents=True)
    (repo / "benchmark_configs" / "targets.yaml").write_text("targets: [0.9]\n")

    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=repo,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "configs")
    head = git("rev-parse", "HEAD")
    assert _git_commit(str(repo / "benchmark_configs")) == {"git_commit": head, "git_dirty": False}
    (repo / "benchmark_configs" / "targets.yaml").write_text("targets: [0.95]\n")
    assert _git_commit(str(repo / "benchmark_configs")) == {"git_commit": head, "git_dirty": True}
    plain = tmp_path / "plain"
    plain.mkdir()
    assert _git_commit(str(plain)) == {}
