"""avq-bench's dataset-family grids, interleaved timing, interpolated QPS at targets and ScaNN's SOAR."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from avq_plugin import bench, datasets
from avq_plugin.bench.config import find_family, load_family
from avq_plugin.bench.report import best_at_targets

pytest.importorskip("yaml")

CONFIGS = Path(__file__).resolve().parent.parent / "benchmark_configs"


def test_repository_families_parse_and_match_their_datasets():
    fam = {f.stem: load_family(f) for f in (CONFIGS / "families").glob("*.yaml")}
    assert {"embeddings", "glove"} <= set(fam)
    assert find_family(CONFIGS, "auto", "angular", 384, 100_000).name == "embeddings"
    assert find_family(CONFIGS, "auto", "angular", 768, 1_000_000).name == "embeddings"
    assert find_family(CONFIGS, "auto", "angular", 50, 190_000).name == "glove"
    # the shipped 20k subset and euclidean sets keep the per-system size classes
    assert find_family(CONFIGS, "auto", "angular", 50, 20_000) is None
    assert find_family(CONFIGS, "auto", "euclidean", 784, 60_000) is None
    for f in fam.values():
        for system in f.systems:
            for quick in (False, True):
                c = bench.load_system_config(CONFIGS, system, 100_000, "angular", quick, family=f)
                assert c.size_class == f"family:{f.name}" and c.builds and c.query_args
                assert all(len(v) == len(c.query_arg_names) for v in c.query_args)
                assert all(len(v) == len(c.query_arg_names) for b in c.builds for v in b.get("query_args", []))
        hnsw = bench.load_system_config(CONFIGS, "hnswlib", 100_000, "angular", family=f)
        assert sorted(b["args"]["M"] for b in hnsw.builds) == [16, 32, 48]
        assert {b["args"]["ef_construction"] for b in hnsw.builds} == {200}
        scann = bench.load_system_config(CONFIGS, "scann", 100_000, "angular", family=f)
        soar = [b for b in scann.builds if b["args"].get("soar_lambda") is not None]
        assert soar and len(soar) < len(scann.builds)  # with and without SOAR
        assert all(b["args"]["soar_lambda"] == 1.5 and b["args"]["overretrieve_factor"] == 2.0 for b in soar)
        # avq at every layout tune(layouts="auto") chooses among: {2, 4} dims per block x {no spill, SOAR}
        avq = bench.load_system_config(CONFIGS, "avq", 100_000, "angular", family=f)
        layouts = {(b["args"]["dims_per_block"], b["args"]["spill"]) for b in avq.builds}
        assert {(2, "none"), (2, "soar"), (4, "none"), (4, "soar")} <= layouts, f.name
    # a system the family does not list falls back to its own file
    c = bench.load_system_config(CONFIGS, "exact", 100_000, "angular", family=fam["embeddings"])
    assert not c.size_class.startswith("family:")


def _write_family(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_find_family_choices_and_errors(tmp_path):
    shutil.copy(CONFIGS / "targets.yaml", tmp_path / "targets.yaml")
    fam_a = "match: {metric: angular, min_dim: 10}\nsystems:\n  hnswlib:\n    query_arg_names: [ef]\n    builds: [{name: h, args: {M: 8, ef_construction: 40}}]\n    query_args: [[10], [20]]\n"
    _write_family(tmp_path / "families" / "a.yaml", fam_a)
    assert find_family(tmp_path, "none", "angular", 50, 10) is None
    assert find_family(tmp_path, None, "angular", 50, 10) is None
    assert find_family(tmp_path, "a", "euclidean", 5, 10).name == "a"  # a name skips the match rule
    assert find_family(tmp_path, str(tmp_path / "families" / "a.yaml"), "angular", 5, 10).name == "a"
    assert find_family(tmp_path, "auto", "angular", 9, 10) is None
    with pytest.raises(ValueError, match="not found"):
        find_family(tmp_path, "nosuch", "angular", 50, 10)
    _write_family(tmp_path / "families" / "b.yaml", fam_a)
    with pytest.raises(ValueError, match="all match"):
        find_family(tmp_path, "auto", "angular", 50, 10)
    _write_family(tmp_path / "families" / "bad.yaml", "match: {}\nsystems: {}\n")
    with pytest.raises(ValueError, match="systems"):
        find_family(tmp_path, "bad", "angular", 50, 10)


def test_a_build_may_carry_its_own_grid(tmp_path):
    path = _write_family(
        tmp_path / "families" / "f.yaml",
        "systems:\n  hnswlib:\n    query_arg_names: [ef]\n"
        "    builds:\n      - {name: h1, args: {M: 8, ef_construction: 40}}\n"
        "      - {name: h2, args: {M: 12, ef_construction: 40}, query_args: {ef: [5, 7, 9]}}\n"
        "    query_args: [[10], [20]]\n",
    )
    c = bench.load_system_config(tmp_path, "hnswlib", 1000, "angular", family=load_family(path))
    assert c.query_args == [(10,), (20,)]
    assert "query_args" not in c.builds[0] and c.builds[1]["query_args"] == [(5,), (7,), (9,)]


def test_optional_query_args_and_settings_added_to_one_build(tmp_path):
    text = (
        "systems:\n  avq:\n    query_arg_names: [leaves_to_search, reorder_k, leaf_margin]\n"
        "    optional_query_args: [leaf_margin]\n"
        "    builds:\n      - {name: a, args: {dims_per_block: 2}}\n"
        "      - {name: b, args: {dims_per_block: 4}, more_query_args: [[5, 15, 0.3]]}\n"
        "    query_args: [[2, 20], [4, 40, 0.2]]\n"
    )
    path = _write_family(tmp_path / "families" / "f.yaml", text)
    c = bench.load_system_config(tmp_path, "avq", 1000, "angular", family=load_family(path))
    assert c.query_args == [(2, 20, None), (4, 40, 0.2)]
    assert "query_args" not in c.builds[0]
    assert c.builds[1]["query_args"] == [(2, 20, None), (4, 40, 0.2), (5, 15, 0.3)]
    # only the declared optional names may be left out, and only at the end
    _write_family(path.parent / "g.yaml", text.replace("[[2, 20], [4, 40, 0.2]]", "[[2]]"))
    with pytest.raises(ValueError, match="do not match"):
        bench.load_system_config(tmp_path, "avq", 1000, "angular", family=load_family(path.parent / "g.yaml"))
    _write_family(
        path.parent / "h.yaml", text.replace("optional_query_args: [leaf_margin]", "optional_query_args: [reorder_k]")
    )
    with pytest.raises(ValueError, match="must be the last"):
        bench.load_system_config(tmp_path, "avq", 1000, "angular", family=load_family(path.parent / "h.yaml"))


def _results(points, interpolate, targets=(0.8, 0.9, 0.99, 0.999)):
    queries = [{"mode": "single", "recall": r, "qps": q, "query_args": {"x": i}} for i, (r, q) in enumerate(points)]
    return {
        "targets": {"targets": list(targets), "interpolate": interpolate},
        "builds": [{"system": "s", "name": "b", "queries": queries}],
    }


def test_qps_at_targets_interpolated_on_the_pareto_frontier():
    pts = [(0.85, 1000.0), (0.93, 500.0), (0.90, 300.0), (0.97, 200.0), (0.995, 50.0)]  # (0.90, 300) dominated
    measured = best_at_targets(_results(pts, False))["s"]["single"]
    assert measured[0.9]["qps"] == 500.0 and measured[0.99]["qps"] == 50.0 and measured[0.999] is None
    best = best_at_targets(_results(pts, True))["s"]["single"]
    assert best[0.8]["qps"] == 1000.0 and best[0.8]["below"] is None  # nothing below: the measured point
    assert best[0.9]["qps"] == pytest.approx(1000.0 * 0.5 ** (0.05 / 0.08))
    assert best[0.9]["measured_qps"] == 500.0 and best[0.9]["below"]["qps"] == 1000.0
    assert best[0.99]["qps"] == pytest.approx(200.0 * 0.25 ** (0.02 / 0.025))
    assert best[0.999] is None  # never extrapolated
    # interpolation only ever credits between the neighbours on the frontier
    for t in (0.9, 0.99):
        assert best[t]["measured_qps"] <= best[t]["qps"] <= best[t]["below"]["qps"]


def test_interleaved_run_times_every_setting_in_rounds(tmp_path):
    # Two systems the test extra installs (faiss-cpu and avq), not an optional peer: on a fresh
    # machine with only `pip install ".[test]"` every build below must run.
    g = datasets.load_glove_subset()
    ds = datasets.Dataset("g3k", "angular", g.train[:3000], g.test[:40], None, None)
    ds = bench.ensure_ground_truth(ds, 10, "compute", cache_dir=tmp_path / "cache")
    shutil.copy(CONFIGS / "targets.yaml", tmp_path / "targets.yaml")
    _write_family(
        tmp_path / "families" / "small.yaml",
        "match: {metric: angular, max_dim: 64}\nsystems:\n"
        "  faiss:\n    query_arg_names: [nprobe, k_factor]\n"
        "    builds:\n      - {name: f8, args: {factory: 'IVF{nlist},PQ{m}x4fsr', nlist: 8, dims_per_block: 2, refine: flat}}\n"
        "      - {name: f16, args: {factory: 'IVF{nlist},PQ{m}x4fsr', nlist: 16, dims_per_block: 2, refine: flat}}\n"
        "    query_args: [[2, 2], [8, 4]]\n"
        "  avq:\n    query_arg_names: [leaves_to_search, reorder_k]\n"
        "    builds: [{name: a, args: {num_leaves: 20, dims_per_block: 2, seed: 0}}]\n"
        "    query_args: [[2, 20], [8, 60]]\n",
    )
    kw = dict(reps=2, modes=("single",), min_time=0.0, log=None)
    res = bench.run_benchmark(ds, tmp_path, ["faiss", "avq"], interleave=True, **kw)
    assert res["settings"]["family"] == "small" and res["settings"]["interleave"] is True
    assert [(b["system"], b["name"]) for b in res["builds"]] == [("faiss", "f8"), ("faiss", "f16"), ("avq", "a")]
    for b in res["builds"]:
        assert b["error"] is None and len(b["queries"]) == 2
        for q in b["queries"]:
            assert len(q["seconds"]) == 2 and q["best_seconds"] == min(q["seconds"])
            assert q["qps"] == pytest.approx(40 / q["best_seconds"])
    one = bench.run_benchmark(ds, tmp_path, ["faiss", "avq"], only_builds=["f16"], **kw)
    assert [b["name"] for b in one["builds"]] == ["f16"]
    with pytest.raises(ValueError, match="nosuch"):
        bench.run_benchmark(ds, tmp_path, ["faiss"], only_builds=["nosuch"], **kw)
    plain = bench.run_benchmark(ds, tmp_path, ["faiss", "avq"], family="small", **kw)
    assert plain["settings"]["interleave"] is False
    recalls = [[q["recall"] for q in b["queries"]] for b in res["builds"]]
    assert recalls == [[q["recall"] for q in b["queries"]] for b in plain["builds"]]


def test_scann_runner_builds_with_soar_spilling():
    pytest.importorskip("scann")
    from avq_plugin.bench.runners import make_runner

    g = datasets.load_glove_subset()
    X, Q = g.train[:4000], g.test[:50]
    gt = bench.compute_ground_truth(X, Q, "angular", 10)[1]
    args = dict(
        num_leaves=40,
        spherical=True,
        quantize_centroids=True,
        training_sample_size="all",
        dims_per_block=2,
        anisotropic_quantization_threshold=0.2,
    )
    recalls = {}
    for name, extra in (("plain", {}), ("soar", {"soar_lambda": 1.5, "overretrieve_factor": 2.0})):
        r = make_runner("scann")
        r.build(X, "angular", {**args, **extra})
        assert ("soar_lambda=1.5" in r.resolved) == (name == "soar")
        fn = r.single_fn(10, {"leaves_to_search": 3, "reorder": 60})
        ids = np.stack([np.asarray(r.ids_single(fn(q)))[:10] for q in Q])
        assert all(len(set(row.tolist())) == 10 for row in ids)  # spilled copies never repeat an id
        recalls[name] = bench.knn_recall(X, Q, ids, gt, "angular", k=10)[0]
        r.close()
    assert recalls["soar"] >= recalls["plain"] - 0.02 and recalls["soar"] > 0.5
    with pytest.raises(ValueError, match="SOAR"):
        make_runner("scann").build(X, "euclidean", {**args, "soar_lambda": 1.5})
