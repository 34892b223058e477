"""The YAML sweeps of ``benchmark_configs/``: where they are, what they say, resolved for a dataset."""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._common import ANN_BENCHMARKS_EPSILON, INSTALL_HINT

# --------------------------------------------------------------------------- configuration


def find_config_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Locate the ``benchmark_configs/`` directory.

    Parameters
    ----------
    explicit : str or os.PathLike, optional
        Directory given with ``--configs``; it must exist.

    Returns
    -------
    pathlib.Path
        ``explicit`` if given; else ``./benchmark_configs`` in the current
        working directory; else ``benchmark_configs/`` in the repository root
        that contains this package (source checkouts and editable installs).

    Raises
    ------
    FileNotFoundError
        If no such directory exists.
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_dir():
            raise FileNotFoundError(f"--configs {path}: not a directory")
        return path
    candidates = [
        Path.cwd() / "benchmark_configs",
        Path(__file__).resolve().parents[2] / "benchmark_configs",
    ]
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        "no benchmark_configs/ directory found (looked in "
        + ", ".join(str(p) for p in candidates)
        + "); run from the avq-plugin repository root or pass --configs DIR"
    )


def _yaml_load(path: Path) -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise ImportError(f"avq-bench needs PyYAML to read {path}: {INSTALL_HINT}") from exc
    with open(path) as f:
        return yaml.safe_load(f)


def load_targets(config_dir: Path) -> dict:
    """Read ``targets.yaml``: recall depth ``k``, ``epsilon`` and recall ``targets``.

    Parameters
    ----------
    config_dir : pathlib.Path
        Directory holding the YAML files.

    Returns
    -------
    dict
        ``{"k": int, "epsilon": float, "targets": list of float, "interpolate": bool}``;
        ``interpolate`` (default False) reports the QPS at each target interpolated on each
        system's recall-QPS Pareto frontier instead of the best measured setting reaching it.
    """
    raw = _yaml_load(config_dir / "targets.yaml") or {}
    targets = sorted(float(t) for t in raw.get("targets", [0.9, 0.95]))
    return {
        "k": int(raw.get("k", 10)),
        "epsilon": float(raw.get("epsilon", ANN_BENCHMARKS_EPSILON)),
        "targets": targets,
        "interpolate": bool(raw.get("interpolate", False)),
    }


def resolve_num_leaves(value: Any, n: int) -> int:
    """Turn a ``num_leaves``/``nlist`` config value into a count.

    Parameters
    ----------
    value : int or str
        An integer, ``"sqrt"`` (``round(sqrt(n))``) or ``"sqrt*F"`` (for
        example ``"sqrt*2"``: ``round(F * sqrt(n))``).
    n : int
        Number of database vectors.

    Returns
    -------
    int
        At least 1 and at most ``n``.

    Examples
    --------
    >>> resolve_num_leaves("sqrt", 20000), resolve_num_leaves("sqrt*2", 10000), resolve_num_leaves(64, 10)
    (141, 200, 10)
    """
    if isinstance(value, str):
        text = value.replace(" ", "")
        if text == "sqrt":
            factor = 1.0
        elif text.startswith("sqrt*"):
            factor = float(text[5:])
        else:
            raise ValueError(f"num_leaves must be an int, 'sqrt' or 'sqrt*F', got {value!r}")
        count = int(round(factor * math.sqrt(n)))
    else:
        count = int(value)
    return max(1, min(count, n))


@dataclass
class SystemConfig:
    """The part of one system's YAML file that applies to a dataset.

    Attributes
    ----------
    system : str
        ``"avq"``, ``"scann"``, ``"faiss"`` or ``"exact"``.
    size_class : str
        Name of the selected size class.
    builds : list of dict
        ``{"name": str, "args": dict}``, metric overrides already merged, plus ``query_args``
        (list of tuple) for a build with a grid of its own.
    query_arg_names : list of str
        Names of the query arguments, in order.
    query_args : list of tuple
        One tuple of values per query setting (for builds without their own).
    """

    system: str
    size_class: str
    builds: list
    query_arg_names: list
    query_args: list


def _expand_query_args(raw: Any, names: Sequence[str], optional: Sequence[str] = ()) -> list[tuple]:
    """List of lists -> tuples; mapping name -> values -> Cartesian product. A list entry may
    leave out trailing names listed in ``optional`` (``optional_query_args``): they are None,
    which the bench does not pass to the system."""
    if raw is None:
        return [()]
    if isinstance(raw, dict):
        if sorted(raw) != sorted(names):
            raise ValueError(f"query_args keys {sorted(raw)} != query_arg_names {list(names)}")
        return list(itertools.product(*(raw[name] for name in names)))
    out = []
    for item in raw:
        item = tuple(item) if isinstance(item, (list, tuple)) else (item,)
        left_out = list(names[len(item) :])
        if len(item) > len(names) or any(name not in optional for name in left_out):
            raise ValueError(f"query args {item} do not match names {list(names)}")
        out.append(item + (None,) * len(left_out))
    return out


#: Sub-directory of ``benchmark_configs/`` holding one grid file per dataset family.
FAMILY_DIR = "families"


@dataclass
class Family:
    """One dataset family's grids (``benchmark_configs/families/<name>.yaml``).

    Attributes
    ----------
    name : str
        The file stem.
    path : pathlib.Path
        The file.
    match : dict
        When ``--family auto`` picks it: ``metric``, ``min_dim``/``max_dim``, ``min_n``/``max_n``
        (each optional, bounds inclusive).
    systems : dict
        ``{system: section}``; a section has the keys of a size class (``builds``,
        ``query_args``, ``quick``) plus ``query_arg_names`` and optional ``metric_overrides``.
    """

    name: str
    path: Path
    match: dict
    systems: dict

    def matches(self, metric: str, dim: int, n_train: int) -> bool:
        m = self.match
        if m.get("metric") is not None and m["metric"] != metric:
            return False
        lo_d, hi_d = m.get("min_dim"), m.get("max_dim")
        lo_n, hi_n = m.get("min_n"), m.get("max_n")
        return (
            (lo_d is None or dim >= int(lo_d))
            and (hi_d is None or dim <= int(hi_d))
            and (lo_n is None or n_train >= int(lo_n))
            and (hi_n is None or n_train <= int(hi_n))
        )


def load_family(path: str | os.PathLike) -> Family:
    """Read one family file (see :class:`Family`)."""
    path = Path(path)
    raw = _yaml_load(path) or {}
    systems = raw.get("systems")
    if not isinstance(systems, dict) or not systems:
        raise ValueError(f"{path}: a family file needs a non-empty 'systems' mapping")
    for name, sec in systems.items():
        if not isinstance(sec, dict) or not sec.get("builds"):
            raise ValueError(f"{path}: systems.{name} needs 'builds'")
    return Family(path.stem, path, dict(raw.get("match") or {}), systems)


def find_family(config_dir: Path, choice: str | None, metric: str, dim: int, n_train: int) -> Family | None:
    """The family grid to use for a dataset.

    Parameters
    ----------
    config_dir : pathlib.Path
        Directory holding the YAML files; family files are in its ``families/``.
    choice : str or None
        ``"auto"``: the one family whose ``match`` admits the dataset (None if none does; an
        error if several do); ``"none"`` or None: no family (the per-system size classes);
        otherwise a family name (file stem in ``families/``) or a path to a family file.
    metric, dim, n_train
        The dataset's metric (``"angular"``/``"euclidean"``), dimension and size.

    Returns
    -------
    Family or None
    """
    if choice is None or choice == "none":
        return None
    fam_dir = config_dir / FAMILY_DIR
    if choice != "auto":
        path = Path(choice)
        if not path.is_file():
            path = fam_dir / f"{choice}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in fam_dir.glob("*.yaml")) if fam_dir.is_dir() else []
            raise ValueError(f"family {choice!r} not found (known: {', '.join(known) or 'none'})")
        return load_family(path)
    if not fam_dir.is_dir():
        return None
    hits = [f for f in (load_family(p) for p in sorted(fam_dir.glob("*.yaml"))) if f.matches(metric, dim, n_train)]
    if len(hits) > 1:
        raise ValueError(
            f"families {', '.join(f.name for f in hits)} all match {metric} d={dim} n={n_train}: "
            "make their 'match' ranges disjoint or pass --family"
        )
    return hits[0] if hits else None


def load_system_config(
    config_dir: Path,
    system: str,
    n_train: int,
    metric: str,
    quick: bool = False,
    family: Family | None = None,
) -> SystemConfig:
    """Read ``<system>.yaml`` and select the grid for a dataset.

    The file holds ``query_arg_names``, optional ``metric_overrides``
    (``{angular|euclidean: {arg: value}}``, merged into every build's args) and
    ``size_classes``: a list whose first entry with ``max_n >= n_train``
    (``max_n: null`` means unbounded) is used. A size class has ``builds``
    (``[{name, args}]``), ``query_args`` (a list of value lists, or a mapping
    ``name -> values`` expanded as a Cartesian product) and ``quick`` (the same
    keys, ``builds`` given as names, used with ``--quick``).

    Parameters
    ----------
    config_dir : pathlib.Path
        Directory holding the YAML files.
    system : str
        System name, also the file stem.
    n_train : int
        Number of database vectors; selects the size class.
    metric : {"angular", "euclidean"}
        Dataset metric; selects ``metric_overrides``.
    quick : bool, default=False
        Use the size class's ``quick`` grid.

    family : Family, optional
        A dataset family's grids (:func:`find_family`); a system it lists uses its section
        instead of ``<system>.yaml`` (reported as size class ``family:<name>``).

    Returns
    -------
    SystemConfig
        The selected builds and query settings.
    """
    chosen: dict[str, Any] | None
    if family is not None and system in family.systems:
        raw = family.systems[system]
        chosen = dict(raw, name=f"family:{family.name}")
    else:
        raw = _yaml_load(config_dir / f"{system}.yaml")
        chosen = None
        for size_class in raw["size_classes"]:
            max_n = size_class.get("max_n")
            if max_n is None or n_train <= int(max_n):
                chosen = size_class
                break
        if chosen is None:
            raise ValueError(f"{system}.yaml: no size class admits n_train={n_train}")
    assert chosen is not None
    names = list(raw.get("query_arg_names") or [])
    optional = list(raw.get("optional_query_args") or [])
    if not set(optional) <= set(names) or names[len(names) - len(optional) :] != optional:
        raise ValueError(f"{system}: optional_query_args {optional} must be the last query_arg_names {names}")
    overrides = (raw.get("metric_overrides") or {}).get(metric) or {}

    builds = [dict(b) for b in chosen["builds"]]
    query_raw = chosen.get("query_args")
    if quick and chosen.get("quick"):
        q = chosen["quick"]
        if q.get("builds"):
            by_name = {b["name"]: b for b in builds}
            unknown = [name for name in q["builds"] if name not in by_name]
            if unknown:
                raise ValueError(f"{system}.yaml: quick builds {unknown} are not defined")
            builds = [by_name[name] for name in q["builds"]]
        query_raw = q.get("query_args", query_raw)

    grid = _expand_query_args(query_raw, names, optional)
    resolved: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for b in builds:
        args = {**(b.get("args") or {}), **overrides}
        key = json.dumps(args, sort_keys=True, default=str)
        if key in seen:
            print(f"  note: {system} build {b['name']} equals {seen[key]} for {metric} data; skipped", file=sys.stderr)
            continue
        seen[key] = b["name"]
        entry = {"name": b["name"], "args": args}
        full = not (quick and chosen.get("quick", {}).get("query_args"))
        if b.get("query_args") is not None and full:
            entry["query_args"] = _expand_query_args(b["query_args"], names, optional)  # this build's own grid
        if b.get("more_query_args") is not None and full:  # settings added to the grid for this build
            base = entry.get("query_args", grid)
            entry["query_args"] = base + _expand_query_args(b["more_query_args"], names, optional)
        resolved.append(entry)
    return SystemConfig(system, chosen.get("name", "?"), resolved, names, grid)
