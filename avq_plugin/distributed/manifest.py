"""Saved sharded indexes: the directory layout, the JSON manifest and its checks, file helpers."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Any

#: File name of the manifest inside a saved sharded index directory.
MANIFEST_NAME = "manifest.json"
#: Version of the manifest layout written by ``save``; ``load`` rejects newer ones.
#: 1: row shards; 2: adds "sharding" ("rows" or "leaves"), and for leaves the leaf placement.
FORMAT_VERSION = 2
_FORMAT_NAME = "avq-sharded-index"
_QUANTIZER_FILE = "quantizer.avq"
# AVQIndex parameters a sharded index passes on to its shards (and stores in the manifest).
_PARAM_NAMES = (
    "metric",
    "num_leaves",
    "dims_per_block",
    "anisotropic_threshold",
    "eta",
    "eta_formula",
    "reorder",
    "leaves_to_search",
    "reorder_k",
    "training_iterations",
    "kmeans_iterations",
    "training_sample_size",
    "seed",
)


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _prepare_directory(path: str) -> bool:
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{path} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not os.path.exists(os.path.join(path, MANIFEST_NAME)):
        raise ValueError(f"{path} is a non-empty directory without a {MANIFEST_NAME}: refusing to write into it")
    os.makedirs(path, exist_ok=True)
    return True


def _write_manifest(directory: str, manifest: dict[str, Any], ready: object) -> bool:
    # Written last, atomically: a directory with a manifest always has every file it lists.
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    _atomic_write_bytes(os.path.join(directory, MANIFEST_NAME), data)
    return True


def _read_manifest(directory: str) -> Any:
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ValueError(f"{directory}: not a saved sharded index (no {MANIFEST_NAME})")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: corrupted manifest ({exc})") from None


def _check_file(directory: str, entry: dict[str, Any], what: str, verify: bool) -> str:
    path = os.path.join(directory, entry["file"])
    if not os.path.isfile(path):
        raise ValueError(f"{what} is missing: {path}")
    size = os.path.getsize(path)
    if size != entry["bytes"]:
        raise ValueError(f"{what} is corrupt: {path} has {size} bytes, the manifest says {entry['bytes']}")
    if verify and _file_sha256(path) != entry["sha256"]:
        raise ValueError(f"{what} is corrupt: sha256 of {path} does not match the manifest")
    return path


def _package_version() -> str:
    from .. import __version__

    return __version__


def _check_manifest(m: Any, directory: str) -> None:
    where = os.path.join(directory, MANIFEST_NAME)
    if not isinstance(m, dict) or m.get("format") != _FORMAT_NAME:
        raise ValueError(f"{where}: not a sharded AVQ index manifest")
    version = m.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{where}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where}: format_version {version} is newer than this avq_plugin reads "
            f"({FORMAT_VERSION}); upgrade avq_plugin"
        )
    required = (
        "params",
        "d",
        "num_leaves",
        "ntotal",
        "n_shards",
        "num_threads",
        "quantizer",
        "quantizer_fingerprint",
        "shards",
    )
    missing = [key for key in required if key not in m]
    if missing:
        raise ValueError(f"{where}: missing fields {missing}")
    if not isinstance(m["params"], dict) or any(p not in m["params"] for p in _PARAM_NAMES):
        raise ValueError(f"{where}: incomplete params")
    shards = m["shards"]
    if not isinstance(shards, list) or len(shards) != m["n_shards"] or not shards:
        raise ValueError(f"{where}: the shard list does not match n_shards={m['n_shards']!r}")
    sharding = m.get("sharding", "rows")
    if sharding == "leaves":
        _check_leaf_manifest(m, where)
        return
    if sharding != "rows":
        raise ValueError(f"{where}: unknown sharding {sharding!r}")
    expected_start = 0
    for j, e in enumerate(shards):
        keys = ("file", "bytes", "sha256", "ntotal", "id_start", "id_stop")
        if not isinstance(e, dict) or any(key not in e for key in keys):
            raise ValueError(f"{where}: shard {j} entry is incomplete")
        if os.path.basename(e["file"]) != e["file"]:
            raise ValueError(f"{where}: shard {j} file name {e['file']!r} must be relative to the directory")
        if e["id_start"] != expected_start or e["id_stop"] - e["id_start"] != e["ntotal"]:
            raise ValueError(f"{where}: shard {j} id range [{e['id_start']}, {e['id_stop']}) is inconsistent")
        expected_start = e["id_stop"]
    if expected_start != m["ntotal"]:
        raise ValueError(f"{where}: the shards hold {expected_start} vectors, the manifest says {m['ntotal']}")


def _check_leaf_manifest(m: dict[str, Any], where: str) -> None:
    placement = m.get("leaf_to_shard")
    if not isinstance(placement, list) or len(placement) != m["num_leaves"]:
        raise ValueError(f"{where}: leaf_to_shard must list the shard of each of the {m['num_leaves']} leaves")
    if any(not isinstance(s, int) or not 0 <= s < m["n_shards"] for s in placement):
        raise ValueError(f"{where}: leaf_to_shard names a shard outside [0, {m['n_shards']})")
    groups = m.get("shard_groups", list(range(m["n_shards"])))  # (absent: written before groups)
    if (
        not isinstance(groups, list)
        or len(groups) != m["n_shards"]
        or any(not isinstance(g, int) or isinstance(g, bool) or not 0 <= g < m["n_shards"] for g in groups)
    ):
        raise ValueError(f"{where}: shard_groups must give each of the {m['n_shards']} shards a group in [0, n_shards)")
    if not isinstance(m.get("next_id"), int):
        raise ValueError(f"{where}: missing next_id")
    total = 0
    for j, e in enumerate(m["shards"]):
        keys = ("file", "bytes", "sha256", "ntotal")
        if not isinstance(e, dict) or any(key not in e for key in keys):
            raise ValueError(f"{where}: shard {j} entry is incomplete")
        if os.path.basename(e["file"]) != e["file"]:
            raise ValueError(f"{where}: shard {j} file name {e['file']!r} must be relative to the directory")
        total += e["ntotal"]
    if total != m["ntotal"]:
        raise ValueError(f"{where}: the shards hold {total} vectors, the manifest says {m['ntotal']}")
