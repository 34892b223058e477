"""Run the avq_plugin fuzz targets for a bounded time, or replay saved inputs.

    python tests/fuzz/fuzz.py --seconds 60                  # both targets, 30 s each (CI)
    python tests/fuzz/fuzz.py --target loader --seconds 3600 --seed 5
    python tests/fuzz/fuzz.py --include-known ...           # also run inputs of open issue-11 defects
    python tests/fuzz/fuzz.py --replay tests/fuzz/regressions/loader-*.bin

The inputs run in a child process; the parent watches it. When the child dies (a signal, an
abort of a sanitizer), stops making progress for --timeout seconds, or an input breaks the contract
(tests/fuzz/fuzzlib.py), the input is written to --save-dir (default tests/fuzz/regressions/)
as <target>-<sha1>.bin|json: commit it, and tests/test_fuzz_regressions.py replays it from then on.
Exit status 1 when anything new was found. Run it with the installed package (not from a source
tree whose avq_plugin/ lacks the compiled module): the script's directory, not the repo, is on
sys.path. Ctrl-C stops it with the summary so far.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzzlib

TARGETS = ("loader", "api")
EXT = {"loader": "bin", "api": "json"}


def run_one(target, value, state):
    """Run one input; returns ('ok'|'rejected'|'loaded'|'known:N'|'finding', message)."""
    try:
        if target == "loader":
            seed = fuzzlib.crc(value)
            out = fuzzlib.run_loader(value, state["tmpdir"], np.random.default_rng(seed))
        else:
            out = fuzzlib.run_api(value, state["harness"])
        return out, ""
    except fuzzlib.Known as k:
        return f"known:{k.args[0]}", k.args[1]
    except fuzzlib.Finding as f:
        return "finding", str(f)
    except Exception:  # anything else breaks the contract (MemoryError, RuntimeError, SystemError...)
        return "finding", traceback.format_exc(limit=6)


def save_input(target, data, save_dir, note):
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    name = f"{target}-{hashlib.sha1(data).hexdigest()[:12]}.{EXT[target]}"
    (save_dir / name).write_bytes(data)
    (save_dir / (name + ".txt")).write_text(note.rstrip() + "\n")
    return save_dir / name


def worker(args):
    """Child: generate and run inputs until the deadline; the current input is always on disk."""
    import faulthandler

    faulthandler.enable()
    fuzzlib.limit_memory()
    fuzzlib.KNOWN_OPEN = frozenset() if args.include_known else fuzzlib.KNOWN_OPEN
    # Inside the parent's temporary directory (next to the current input), removed with it.
    state = {"tmpdir": tempfile.mkdtemp(prefix="avq-fuzz-", dir=os.path.dirname(args.cur))}
    if args.target == "loader":
        seeds = fuzzlib.seed_corpus()
    else:
        state["harness"] = fuzzlib.ApiHarness()
    rng = np.random.default_rng(args.seed)
    cur = os.open(args.cur, os.O_RDWR | os.O_CREAT, 0o644)
    stats = {"execs": 0, "outcomes": {}, "findings": []}
    last_flush = time.monotonic()

    def flush():
        with open(args.stats, "w") as f:
            json.dump(stats, f)

    while time.time() < args.until:
        sub = np.random.default_rng(rng.integers(2**63))
        value = fuzzlib.mutate_file(sub, seeds) if args.target == "loader" else fuzzlib.random_op(sub)
        data = fuzzlib.encode_input(args.target, value)
        os.ftruncate(cur, 0)
        os.pwrite(cur, data, 0)
        out, msg = run_one(args.target, value, state)
        stats["execs"] += 1
        stats["outcomes"][out] = stats["outcomes"].get(out, 0) + 1
        if out == "finding":
            path = save_input(args.target, data, args.save_dir, msg)
            stats["findings"].append(f"{path}: {msg.strip().splitlines()[-1]}")
            if args.target == "api":
                state["harness"].live.clear()
        if time.monotonic() - last_flush > 0.5:
            flush()
            last_flush = time.monotonic()
    flush()


def fuzz(target, seconds, seed, save_dir, timeout, include_known):
    """Parent: run workers until `seconds` have passed; restart after a crash or hang."""
    t0 = time.time()
    until = t0 + seconds
    total = {"execs": 0, "outcomes": {}, "findings": []}
    restarts = 0
    with tempfile.TemporaryDirectory(prefix="avq-fuzz-parent-") as tmp:
        cur = os.path.join(tmp, "current")
        while time.time() < until:
            stats_path = os.path.join(tmp, f"stats-{restarts}.json")
            cmd = [sys.executable, __file__, "--worker", "--target", target, "--seed", str(seed + restarts)]
            cmd += ["--until", repr(until), "--cur", cur, "--stats", stats_path, "--save-dir", str(save_dir)]
            if include_known:
                cmd.append("--include-known")
            errf = open(os.path.join(tmp, "stderr"), "w+")
            if os.path.exists(cur):
                os.unlink(cur)  # the previous child's last input is saved already
            child = subprocess.Popen(cmd, stderr=errf, env=fuzzlib.child_env())
            started = time.time()
            crash = None
            while child.poll() is None:
                time.sleep(0.05)
                try:
                    idle = time.time() - os.stat(cur).st_mtime
                except FileNotFoundError:  # still setting up (corpus, harness): allow a slow start
                    idle = time.time() - started - 60
                if idle > timeout:
                    child.send_signal(signal.SIGABRT)  # faulthandler prints the stacks
                    child.wait()
                    crash = f"hang: no progress for {timeout:.0f} s"
            rc = child.returncode
            errf.seek(0)
            err = errf.read()
            errf.close()
            if crash is None and rc != 0:
                crash = f"child died: exit status {rc}" + (f" ({signal.Signals(-rc).name})" if rc < 0 else "")
            if os.path.exists(stats_path):
                with open(stats_path) as f:
                    st = json.load(f)
                total["execs"] += st["execs"]
                for k, v in st["outcomes"].items():
                    total["outcomes"][k] = total["outcomes"].get(k, 0) + v
                total["findings"] += st["findings"]
            if crash is not None:
                data = open(cur, "rb").read() if os.path.exists(cur) else b""
                note = crash + "\n" + "\n".join(err.strip().splitlines()[-40:])
                path = save_input(target, data, save_dir, note)
                total["findings"].append(f"{path}: {crash}")
                print(f"[{target}] {crash}; input saved to {path}\n{err[-3000:]}", file=sys.stderr, flush=True)
            elif rc == 0 and err.strip():
                print(err[-2000:], file=sys.stderr)
            restarts += 1
    total["seconds"] = round(time.time() - t0, 1)
    return total


def replay(path, include_known=False):
    """Run one saved input in this process; exit 0 (contract holds), 3 (known open defect), 1 (finding)."""
    fuzzlib.limit_memory()
    fuzzlib.KNOWN_OPEN = frozenset() if include_known else fuzzlib.KNOWN_OPEN
    path = Path(path)
    target = path.name.split("-")[0]
    value = fuzzlib.decode_input(target, path.read_bytes())
    state = {"tmpdir": tempfile.mkdtemp(prefix="avq-replay-")}
    if target == "api":
        state["harness"] = fuzzlib.ApiHarness()
    out, msg = run_one(target, value, state)
    print(f"{path.name}: {out} {msg}".rstrip())
    return 3 if out.startswith("known") else 1 if out == "finding" else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", choices=TARGETS + ("all",), default="all")
    p.add_argument("--seconds", type=float, default=60.0, help="total time, split between the targets")
    p.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    p.add_argument("--timeout", type=float, default=20.0, help="seconds without progress that count as a hang")
    p.add_argument("--save-dir", default=str(fuzzlib.REGRESSIONS))
    p.add_argument("--include-known", action="store_true", help="run inputs of the open defects too")
    p.add_argument("--replay", nargs="*", help="replay these saved inputs")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--until", type=float, help=argparse.SUPPRESS)
    p.add_argument("--cur", help=argparse.SUPPRESS)
    p.add_argument("--stats", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.replay is not None:
        return max([replay(f, args.include_known) for f in args.replay] or [0])
    targets = TARGETS if args.target == "all" else (args.target,)
    failed = False
    for t in targets:
        try:
            s = fuzz(t, args.seconds / len(targets), args.seed, args.save_dir, args.timeout, args.include_known)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        rate = s["execs"] / max(s["seconds"], 1e-9)
        print(f"fuzz {t}: seed {args.seed}, {s['execs']} executions in {s['seconds']} s ({rate:.0f}/s); "
              f"outcomes {json.dumps(dict(sorted(s['outcomes'].items())))}")  # fmt: skip
        for f in s["findings"]:
            print(f"  FINDING {f}")
            path = Path(f.split(": ")[0])
            if path.exists() and path.stat().st_size <= 1 << 16:  # so a CI log alone reproduces it
                print(f"    base64 of {path.name}: {base64.b64encode(path.read_bytes()).decode()}")
        failed |= bool(s["findings"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
