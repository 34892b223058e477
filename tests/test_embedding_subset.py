"""The shipped sentence-embedding subset (benchmarks/embeddings/data): shape, exact ground truth, usable by the index."""

from pathlib import Path

import numpy as np
import pytest

import avq_plugin
from avq_plugin import datasets

SUBSET = Path(__file__).resolve().parent.parent / "benchmarks" / "embeddings" / "data" / datasets.EMBEDDING_SUBSET_FILE


@pytest.fixture(scope="module")
def emb():
    return datasets.load_embedding_subset(SUBSET)


def test_shapes_and_conventions(emb):
    assert emb.name == "debian-minilm-384-20k" and emb.metric == "angular"
    assert emb.train.shape == (20000, 384) and emb.test.shape == (1000, 384)
    assert emb.train.dtype == emb.test.dtype == np.float32 and emb.train.flags.c_contiguous
    assert emb.neighbors.shape == emb.distances.shape == (1000, 100) and emb.neighbors.dtype == np.int64
    assert (np.diff(emb.distances, axis=1) >= 0).all()
    # sentence-transformer outputs are unit vectors; int8 storage keeps them within 1e-2
    np.testing.assert_allclose(np.linalg.norm(emb.train, axis=1), 1.0, atol=1e-2)
    assert len(np.unique(emb.train, axis=0)) == 20000  # deduplicated texts, distinct vectors


def test_ground_truth_is_exact(emb):
    X = emb.train.astype(np.float64)
    Q = emb.test[:64].astype(np.float64)
    cos = (Q @ X.T) / np.linalg.norm(Q, axis=1)[:, None] / np.linalg.norm(X, axis=1)[None, :]
    ref = np.argsort(-cos, axis=1, kind="stable")[:, :100]
    np.testing.assert_allclose(emb.distances[:64], 1.0 - np.take_along_axis(cos, ref, 1), atol=1e-6)
    # ids agree except where two distances tie to float32 precision
    same = emb.neighbors[:64] == ref
    assert same.mean() > 0.999


def test_environment_variable_and_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.EMBEDDING_SUBSET_ENV, str(SUBSET))
    assert datasets.load_embedding_subset().train.shape == (20000, 384)
    with pytest.raises(FileNotFoundError):
        datasets.load_embedding_subset(tmp_path / "nope.npz")


def test_index_reaches_high_recall_on_it(emb):
    index = avq_plugin.AVQIndex(metric="cosine", num_leaves=141, dims_per_block=4, seed=0, num_threads=1)
    index.fit(emb.train)
    ids = index.search(emb.test[:300], k=10, leaves_to_search=20, reorder_k=200, num_threads=1)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, emb.neighbors[:300, :10])])
    assert recall > 0.9
