"""Reports of a results dict: text tables, summary, Markdown, CSV, the recall-vs-QPS plot and the output files."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._common import INSTALL_HINT

# --------------------------------------------------------------------------- report


def _mb(nbytes: int | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**20:.1f}"


def _fmt_qa(qa: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in qa.items()) or "-"


def _pareto(points: list[dict]) -> set:
    """Indices of points not dominated in (recall up, qps up)."""
    best, keep = -1.0, set()
    for i in sorted(range(len(points)), key=lambda j: (-points[j]["recall"], -points[j]["qps"])):
        if points[i]["qps"] > best:
            keep.add(i)
            best = points[i]["qps"]
    return keep


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def best_at_targets(results: dict) -> dict:
    """Best QPS at each recall target, per system and mode.

    Two rules, chosen by ``results["targets"]["interpolate"]`` (``targets.yaml``):

    - measured (default): the highest QPS among the settings whose recall reaches the target;
    - interpolated: on the system's recall-QPS Pareto frontier (all its builds together), the QPS
      at exactly the target, log-linear in QPS between the frontier points on either side of it
      (the measured rule when no frontier point lies below the target). Never extrapolated: a
      target above every recall stays unreached. Grids of different step sizes then compare
      fairly, since a coarse grid no longer pays for overshooting the target.

    Parameters
    ----------
    results : dict
        Output of :func:`run_benchmark`.

    Returns
    -------
    dict
        ``{system: {mode: {target: {"qps", "recall", "build", "query_args"} or None}}}``; with
        interpolation, ``qps`` is the interpolated value and the entry also has ``measured_qps``
        (of the setting named, the first on the frontier reaching the target) and ``below`` (the
        frontier point under the target: ``{"qps", "recall", "build", "query_args"}`` or None).
    """
    interpolate = bool(results["targets"].get("interpolate", False))
    points: dict = {}
    for b in results["builds"]:
        for q in b["queries"]:
            per_mode = points.setdefault(b["system"], {}).setdefault(q["mode"], [])
            per_mode.append({"qps": q["qps"], "recall": q["recall"], "build": b["name"], "query_args": q["query_args"]})
    out: dict = {}
    for system, modes in points.items():
        for mode, pts in modes.items():
            per_mode = out.setdefault(system, {}).setdefault(mode, {})
            front = sorted((pts[i] for i in _pareto(pts)), key=lambda p: (p["recall"], -p["qps"]))
            for t in results["targets"]["targets"]:
                reach = [p for p in pts if p["recall"] >= t]
                if not reach:
                    per_mode[t] = None
                    continue
                hit = max(reach, key=lambda p: p["qps"])
                entry = dict(hit)
                if interpolate:
                    above = next(p for p in front if p["recall"] >= t)  # == hit's qps on the frontier
                    below = [p for p in front if p["recall"] < t]
                    lo = below[-1] if below else None
                    entry = dict(above, measured_qps=above["qps"], below=lo)
                    if lo is not None and above["recall"] > lo["recall"]:
                        f = (t - lo["recall"]) / (above["recall"] - lo["recall"])
                        entry["qps"] = float(np.exp(np.log(lo["qps"]) + f * (np.log(above["qps"]) - np.log(lo["qps"]))))
                per_mode[t] = entry
    return out


def _target_rule(results: dict, k: int) -> str:
    """The title of a QPS-at-target table, naming the rule of :func:`best_at_targets`."""
    if results["targets"].get("interpolate"):
        return f"Best QPS at recall@{k} >= target, interpolated on each system's Pareto frontier"
    return f"Best QPS at recall@{k} >= target"


def _headline_build(results: dict, system: str, best: dict, mode: str | None = None) -> dict | None:
    """The build of ``system`` that gives the most best-QPS entries in ``mode``.

    Ties go to the build that wins the highest target; with no target reached,
    the build with the best recall. ``mode`` defaults to the first mode timed.
    """
    builds = [b for b in results["builds"] if b["system"] == system and b["queries"]]
    if not builds:
        return None
    mode = mode or results["settings"]["modes"][0]
    wins: dict = {}
    for i, t in enumerate(results["targets"]["targets"]):
        hit = best.get(system, {}).get(mode, {}).get(t)
        if hit:
            count, top = wins.get(hit["build"], (0, -1))
            wins[hit["build"]] = (count + 1, i)
    if wins:
        name = max(wins, key=lambda n: wins[n])
        return next(b for b in builds if b["name"] == name)
    return max(builds, key=lambda b: max((q["recall"] for q in b["queries"]), default=-1))


def format_report(results: dict) -> str:
    """Render the recall-vs-QPS tables, matched budgets and the summary with ratios.

    Parameters
    ----------
    results : dict
        Output of :func:`run_benchmark`.

    Returns
    -------
    str
        Plain-text report.
    """
    ds, tg = results["dataset"], results["targets"]
    k, targets = tg["k"], tg["targets"]
    out = [
        f"dataset {ds['name']}: {ds['n_train']} x {ds['dim']}, {ds['n_test']} queries, {ds['metric']}; "
        f"recall@{k} (ann-benchmarks rule, eps={tg['epsilon']:g}); "
        f"{results['settings'].get('threads', 1)} thread(s); "
        f"QPS = queries / seconds per pass, best of {results['settings']['reps']} timings of "
        f">= {results['settings']['min_time']:g} s",
        f"host: {results['environment']['cpu']} ({results['environment']['cpu_count']} CPUs), "
        f"python {results['environment']['python']}, numpy {results['environment']['numpy']}",
    ]
    for reason in results["skipped"].values():
        out.append(f"note: {reason}")

    # Per system and mode: recall-vs-QPS table, Pareto points starred.
    for system in dict.fromkeys(b["system"] for b in results["builds"]):
        sys_builds = [b for b in results["builds"] if b["system"] == system]
        for mode in results["settings"]["modes"]:
            pts = [dict(build=b["name"], **q) for b in sys_builds for q in b["queries"] if q["mode"] == mode]
            if not pts:
                continue
            front = _pareto(pts)
            order = sorted(range(len(pts)), key=lambda i: (pts[i]["build"], pts[i]["recall"]))
            rows = [
                [
                    ("* " if i in front else "  ") + pts[i]["build"],
                    _fmt_qa(pts[i]["query_args"]),
                    f"{pts[i]['recall']:.4f}",
                    f"{pts[i]['qps']:.0f}",
                    f"{pts[i]['cpu_over_wall']:.2f}",
                ]
                for i in order
            ]
            out += [
                "",
                f"== {system} / {mode} query ({'one call per query' if mode == 'single' else 'all queries in one call'}); * = Pareto-optimal",
                _table(["build", "query args", f"recall@{k}", "QPS", "cpu/wall"], rows),
            ]
        for b in sys_builds:
            if b["error"]:
                out.append(f"  ! {b['name']}: {b['error']}")

    # Matched budgets: (partitions probed, candidates re-ranked), single-query recall.
    budget_builds = [b for b in results["builds"] if any(q.get("budget") for q in b["queries"])]
    if len(budget_builds) > 1:
        budgets = sorted({tuple(q["budget"]) for b in budget_builds for q in b["queries"] if q.get("budget")})
        cols = [f"{b['system']}:{b['name']}" for b in budget_builds]
        rows = []
        for bud in budgets:
            cells = []
            for b in budget_builds:
                rec = [
                    q["recall"]
                    for q in b["queries"]
                    if q.get("budget") and tuple(q["budget"]) == bud and q["mode"] == "single"
                ]
                cells.append(f"{rec[0]:.4f}" if rec else "")
            rows.append([f"({bud[0]}, {bud[1]})"] + cells)
        out += [
            "",
            f"== recall@{k} at matched budgets (partitions probed, candidates re-ranked)",
            _table(["budget"] + cols, rows),
        ]

    # Builds.
    rows = [
        [
            b["system"],
            b["name"],
            b["resolved"],
            b["version"],
            f"{b['build_seconds']:.2f}",
            _mb(b["rss_delta_bytes"]),
            _mb(b["peak_delta_bytes"]),
            f"{_mb(b['own_bytes'])} {b['own_kind']}".strip(),
        ]
        for b in results["builds"]
    ]
    if rows:
        out += [
            "",
            "== builds (RSS+ = resident growth after build, peak+ = peak growth during build)",
            _table(["system", "build", "index", "version", "build s", "RSS+ MB", "peak+ MB", "own MB"], rows),
        ]

    # Summary and ratios.
    best = best_at_targets(results)
    systems = list(dict.fromkeys(b["system"] for b in results["builds"]))
    headline = {s: _headline_build(results, s, best) for s in systems}
    rows, winners = [], []
    for s in systems:
        hb = headline[s]
        for mode in results["settings"]["modes"]:
            cells = []
            for t in targets:
                hit = best.get(s, {}).get(mode, {}).get(t)
                cells.append(f"{hit['qps']:.0f}" if hit else "not reached")
                if hit:
                    winners.append(
                        f"  {s} {mode} @{t:g}: {hit['build']}, {_fmt_qa(hit['query_args'])} "
                        f"-> recall {hit['recall']:.4f}, {hit['qps']:.0f} QPS"
                    )
            rows.append(
                [s, mode]
                + cells
                + (
                    [
                        hb["name"],
                        f"{hb['build_seconds']:.2f}",
                        _mb(hb["rss_delta_bytes"]),
                        _mb(hb["peak_delta_bytes"]),
                        f"{_mb(hb['own_bytes'])} {hb['own_kind']}".strip(),
                    ]
                    if hb
                    else ["", "", "", "", ""]
                )
            )
    out += [
        "",
        "== summary: best QPS at each recall target; build time and memory of the headline build "
        "(the build behind most best-QPS entries of the first mode)",
        _table(
            ["system", "mode"]
            + [f"QPS@{t:g}" for t in targets]
            + ["headline build", "build s", "RSS+ MB", "peak+ MB", "own MB"],
            rows,
        ),
        "settings that achieved them:",
    ] + winners

    if "avq" in systems:
        ratio_rows = []
        for peer in [s for s in systems if s != "avq"]:
            for mode in results["settings"]["modes"]:
                cells = []
                for t in targets:
                    a = best.get("avq", {}).get(mode, {}).get(t)
                    p = best.get(peer, {}).get(mode, {}).get(t)
                    cells.append(f"{a['qps'] / p['qps']:.2f}x" if a and p else "n/a")
                ha, hp = headline["avq"], headline[peer]
                build = f"{ha['build_seconds'] / hp['build_seconds']:.2f}x" if ha and hp else "n/a"
                mem = (
                    f"{ha['rss_delta_bytes'] / hp['rss_delta_bytes']:.2f}x"
                    if ha and hp and ha["rss_delta_bytes"] and hp["rss_delta_bytes"] and hp["rss_delta_bytes"] > 0
                    else "n/a"
                )
                ratio_rows.append([f"avq/{peer}", mode] + cells + [build, mem])
        if ratio_rows:
            out += [
                "",
                "== ratios ours/peer (QPS: >1 means ours is faster; build time and RSS: <1 means ours is cheaper)",
                _table(["ratio", "mode"] + [f"QPS@{t:g}" for t in targets] + ["build time", "RSS+"], ratio_rows),
            ]
    noisy = [
        (b["system"], b["name"], q["mode"], q["cpu_over_wall"])
        for b in results["builds"]
        for q in b["queries"]
        if q["cpu_over_wall"] > 1.3 and results["settings"].get("threads", 1) == 1
    ]
    starved = [q["cpu_over_wall"] for b in results["builds"] for q in b["queries"] if q["cpu_over_wall"] < 0.85]
    if starved:
        out.append(
            f"warning: {len(starved)} timings got less than 85% of a CPU (cpu/wall down to "
            f"{min(starved):.2f}): the machine was busy; their QPS is understated, rerun to confirm"
        )
    if noisy:
        names = sorted({f"{n[0]}:{n[1]}/{n[2]}" for n in noisy})
        out.append(
            f"warning: {len(noisy)} timings used more CPU than wall time (cpu/wall up to "
            f"{max(n[3] for n in noisy):.2f}; {', '.join(names)}): not single-threaded?"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- summary and files


def summarize(results: dict) -> dict:
    """Best QPS per target, each system's headline build, and the ratios AVQ / peer.

    Parameters
    ----------
    results : dict
        Output of :func:`run_benchmark`.

    Returns
    -------
    dict
        ``{"best": best_at_targets(results), "headline": {mode: {system: {"build", "build_seconds",
        "index_bytes"}}}, "ratios": {mode: {peer: {"qps": {target: ratio or None}, "build_seconds",
        "index_bytes"}}}}``; ratios are AVQ's value divided by the peer's.
    """
    best = best_at_targets(results)
    systems = list(dict.fromkeys(b["system"] for b in results["builds"]))
    targets = results["targets"]["targets"]
    headline: dict[str, dict[str, Any]] = {}
    ratios: dict[str, Any] = {}
    for mode in results["settings"]["modes"]:
        headline[mode] = {}
        for s in systems:
            hb = _headline_build(results, s, best, mode)
            headline[mode][s] = (
                None
                if hb is None
                else {
                    "build": hb["name"],
                    "build_seconds": hb["build_seconds"],
                    "index_bytes": hb["own_bytes"],
                    "index_bytes_kind": hb["own_kind"],
                }
            )
        if "avq" in systems and headline[mode].get("avq"):
            ours = headline[mode]["avq"]
            ratios[mode] = {}
            for peer in systems:
                if peer == "avq" or not headline[mode].get(peer):
                    continue
                theirs = headline[mode][peer]
                qps = {}
                for t in targets:
                    a_, p_ = best.get("avq", {}).get(mode, {}).get(t), best.get(peer, {}).get(mode, {}).get(t)
                    qps[t] = a_["qps"] / p_["qps"] if a_ and p_ else None
                ratios[mode][peer] = {
                    "qps": qps,
                    "build_seconds": (
                        ours["build_seconds"] / theirs["build_seconds"]
                        if theirs["build_seconds"] and theirs["build_seconds"] > 0
                        else None
                    ),
                    "index_bytes": (
                        ours["index_bytes"] / theirs["index_bytes"]
                        if ours["index_bytes"] and theirs["index_bytes"]
                        else None
                    ),
                }
    return {"best": best, "headline": headline, "ratios": ratios}


def format_summary(results: dict) -> str:
    """The printed table: best QPS at each recall target per system, build time, index size, ratios.

    Parameters
    ----------
    results : dict
        Output of :func:`run_benchmark`.

    Returns
    -------
    str
        Plain text, one block per query mode.
    """
    ds, tg, st = results["dataset"], results["targets"], results["settings"]
    k, targets = tg["k"], tg["targets"]
    summ = summarize(results)
    systems = list(dict.fromkeys(b["system"] for b in results["builds"]))
    threads = st.get("threads", 1)
    out = [
        f"{ds['name']}: {ds['n_train']} x {ds['dim']} {ds['metric']}, {ds['n_test']} queries, "
        f"recall@{k}, {threads} thread{'s' if threads != 1 else ''}"
    ]
    for reason in results["skipped"].values():
        out.append(f"note: {reason}")
    for mode in st["modes"]:
        how = "one query per call" if mode == "single" else "all queries in one call"
        rows = []
        for s in systems:
            cells = []
            for t in targets:
                hit = summ["best"].get(s, {}).get(mode, {}).get(t)
                cells.append(f"{hit['qps']:,.0f}" if hit else "-")
            hb = summ["headline"][mode].get(s)
            rows.append(
                [s]
                + cells
                + ([f"{hb['build_seconds']:.1f}", _mb(hb["index_bytes"]), hb["build"]] if hb else ["", "", ""])
            )
        out += [
            "",
            f"{_target_rule(results, k)} ({mode} mode: {how}; - = not reached)",
            _table(["system"] + [f"@{t:g}" for t in targets] + ["build s", "index MB", "build"], rows),
        ]
        ratio_rows = []
        for peer, r in summ["ratios"].get(mode, {}).items():
            ratio_rows.append(
                [f"avq/{peer}"]
                + [f"{r['qps'][t]:.2f}x" if r["qps"][t] else "-" for t in targets]
                + [
                    f"{r['build_seconds']:.2f}x" if r["build_seconds"] else "-",
                    f"{r['index_bytes']:.2f}x" if r["index_bytes"] else "-",
                ]
            )
        if ratio_rows:
            out += [
                "",
                "AVQ / peer (QPS >1: AVQ faster; build time and index size <1: AVQ cheaper)",
                _table(["ratio"] + [f"QPS@{t:g}" for t in targets] + ["build", "size"], ratio_rows),
            ]
    failed = [f"{b['system']}:{b['name']}: {b['error']}" for b in results["builds"] if b["error"]]
    out += [f"error: {f}" for f in failed]
    return "\n".join(out)


def format_markdown(results: dict) -> str:
    """The summary of :func:`format_summary` as Markdown tables, plus the settings behind each entry."""
    ds, tg, st = results["dataset"], results["targets"], results["settings"]
    k, targets = tg["k"], tg["targets"]
    summ = summarize(results)
    systems = list(dict.fromkeys(b["system"] for b in results["builds"]))
    versions = {b["system"]: b["version"] for b in results["builds"]}
    threads = st.get("threads", 1)
    out = [
        f"**{ds['name']}**: {ds['n_train']:,} x {ds['dim']} ({ds['metric']}), {ds['n_test']:,} queries, "
        f"recall@{k}, {threads} thread{'s' if threads != 1 else ''}, best of {st['reps']} timings."
    ]
    for reason in results["skipped"].values():
        out.append(f"\nNote: {reason}")
    for mode in st["modes"]:
        how = "one query per call" if mode == "single" else "all queries in one call"
        out += [
            "",
            f"{_target_rule(results, k)}, {mode} mode ({how}); - = not reached:",
            "",
            "| system | " + " | ".join(f"QPS @{t:g}" for t in targets) + " | build s | index MB | build |",
            "|---|" + "---:|" * (len(targets) + 2) + "---|",
        ]
        for s in systems:
            cells = []
            for t in targets:
                hit = summ["best"].get(s, {}).get(mode, {}).get(t)
                cells.append(f"{hit['qps']:,.0f}" if hit else "-")
            hb = summ["headline"][mode].get(s)
            tail = [f"{hb['build_seconds']:.1f}", _mb(hb["index_bytes"]), hb["build"]] if hb else ["", "", ""]
            out.append(f"| {s} {versions.get(s, '')} | " + " | ".join(cells + tail) + " |")
        ratios = summ["ratios"].get(mode, {})
        if ratios:
            out += [
                "",
                "AVQ / peer (QPS > 1: AVQ faster; build time and index size < 1: AVQ cheaper):",
                "",
                "| ratio | " + " | ".join(f"QPS @{t:g}" for t in targets) + " | build time | index size |",
                "|---|" + "---:|" * (len(targets) + 2),
            ]
            for peer, r in ratios.items():
                cells = [f"{r['qps'][t]:.2f}x" if r["qps"][t] else "-" for t in targets]
                cells += [
                    f"{r['build_seconds']:.2f}x" if r["build_seconds"] else "-",
                    f"{r['index_bytes']:.2f}x" if r["index_bytes"] else "-",
                ]
                out.append(f"| avq / {peer} | " + " | ".join(cells) + " |")
        out += ["", "<details><summary>settings behind each entry</summary>", ""]
        for s in systems:
            for t in targets:
                hit = summ["best"].get(s, {}).get(mode, {}).get(t)
                if hit:
                    out.append(
                        f"- {s} @{t:g}: {hit['build']}, {_fmt_qa(hit['query_args'])} -> recall "
                        f"{hit['recall']:.4f}, {hit['qps']:,.0f} QPS"
                    )
        out += ["", "</details>"]
    return "\n".join(out)


CSV_COLUMNS = (
    "dataset",
    "system",
    "build",
    "mode",
    "query_args",
    "recall",
    "qps",
    "pareto",
    "build_seconds",
    "index_bytes",
    "threads",
    "k",
)


def write_csv(results: dict, path: str | os.PathLike) -> None:
    """One row per (system, build, query setting, mode), with a Pareto flag per system and mode."""
    import csv

    fronts = {}
    for s in dict.fromkeys(b["system"] for b in results["builds"]):
        for mode in results["settings"]["modes"]:
            pts = [
                (b["name"], i)
                for b in results["builds"]
                if b["system"] == s
                for i, q in enumerate(b["queries"])
                if q["mode"] == mode
            ]
            qs = [
                next(b for b in results["builds"] if b["system"] == s and b["name"] == n)["queries"][i] for n, i in pts
            ]
            fronts.update({(s, pts[j][0], pts[j][1]): True for j in _pareto(qs)})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for b in results["builds"]:
            for i, q in enumerate(b["queries"]):
                w.writerow(
                    [
                        results["dataset"]["name"],
                        b["system"],
                        b["name"],
                        q["mode"],
                        ";".join(f"{k}={v}" for k, v in q["query_args"].items()),
                        f"{q['recall']:.5f}",
                        f"{q['qps']:.1f}",
                        int((b["system"], b["name"], i) in fronts),
                        f"{b['build_seconds']:.3f}",
                        "" if b["own_bytes"] is None else b["own_bytes"],
                        results["settings"].get("threads", 1),
                        results["targets"]["k"],
                    ]
                )


_STYLE = {
    "avq": ("tab:red", "o"),
    "scann": ("tab:blue", "s"),
    "faiss": ("tab:green", "^"),
    "hnswlib": ("tab:purple", "D"),
    "exact": ("black", "*"),
}


def plot_results(results: dict, path: str | os.PathLike) -> None:
    """Recall@k vs QPS (log scale), one Pareto curve per system, one panel per query mode.

    Uses matplotlib's Agg canvas directly, so it never touches the pyplot
    backend of the calling program.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ds, k = results["dataset"], results["targets"]["k"]
    modes = results["settings"]["modes"]
    threads = results["settings"].get("threads", 1)
    fig = Figure(figsize=(7.0 * len(modes), 5.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    systems = list(dict.fromkeys(b["system"] for b in results["builds"]))
    for i, mode in enumerate(modes):
        ax = fig.add_subplot(1, len(modes), i + 1)
        lows = []
        for s in systems:
            color, marker = _STYLE.get(s, ("gray", "x"))
            pts = [q for b in results["builds"] if b["system"] == s for q in b["queries"] if q["mode"] == mode]
            if not pts:
                continue
            front = sorted((pts[j] for j in _pareto(pts)), key=lambda q: q["recall"])
            version = next((b["version"] for b in results["builds"] if b["system"] == s), "")
            ax.scatter(
                [q["recall"] for q in pts],
                [q["qps"] for q in pts],
                color=color,
                marker=marker,
                s=12,
                alpha=0.25,
                linewidths=0,
            )
            ax.plot(
                [q["recall"] for q in front],
                [q["qps"] for q in front],
                color=color,
                marker=marker,
                markersize=5,
                linewidth=1.6,
                label=f"{s} {version}".strip(),
            )
            lows.append(min(q["recall"] for q in front))
        for t in results["targets"]["targets"]:
            ax.axvline(t, color="gray", linewidth=0.6, linestyle=":")
        ax.set_yscale("log")
        ax.set_xlim(max(0.0, min(lows, default=0.0) - 0.02), 1.005)
        ax.set_xlabel(f"recall@{k}")
        ax.set_ylabel("queries per second (log scale)")
        how = "one query per call" if mode == "single" else "batched"
        ax.set_title(
            f"{ds['name']} ({ds['n_train']:,} x {ds['dim']}, {ds['metric']})\n"
            f"{how}, {threads} thread{'s' if threads != 1 else ''}; curves: Pareto fronts",
            fontsize=10,
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower left", fontsize=9)
    fig.savefig(os.fspath(path))


def write_outputs(results: dict, out_dir: str | os.PathLike, say=None) -> dict:
    """Write results.json, results.csv, report.txt, summary.md and recall_vs_qps.png into ``out_dir``.

    Returns
    -------
    dict
        File kind -> path written (the plot is missing when matplotlib is not installed).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "csv": out / "results.csv",
        "report": out / "report.txt",
        "markdown": out / "summary.md",
        "plot": out / "recall_vs_qps.png",
    }
    record = dict(results)
    record["summary"] = summarize(results)
    with open(paths["json"], "w") as f:
        json.dump(record, f, indent=1, default=_json_default)
    write_csv(results, paths["csv"])
    with open(paths["report"], "w") as f:
        f.write(format_summary(results) + "\n\n" + format_report(results) + "\n")
    with open(paths["markdown"], "w") as f:
        f.write(format_markdown(results) + "\n")
    try:
        plot_results(results, paths["plot"])
    except ImportError:
        if say:
            say(f"note: matplotlib is not installed: no plot ({INSTALL_HINT})")
        paths.pop("plot")
    return {k: str(v) for k, v in paths.items()}


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
