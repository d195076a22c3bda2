"""Start-up time of the ``lossctl`` command: what a user waits for before any real work.

Usage::

    python benchmarks/startup.py [--reps N] [--lossctl PATH]
    python benchmarks/run.py --only startup

Each case runs in a fresh subprocess; the median (and the minimum) wall time of N runs
(default 9, at least 7) is reported next to the issue #14 targets: ``lossctl --help`` in
0.1 s or less and a 10-row compute in 0.2 s or less. The command measured is, in order:
``--lossctl PATH``, env ``LOSSCTL_BIN``, the ``lossctl`` script next to this Python, else
``python -m lossctl``. An editable install recompiles every module on each run when
PYTHONDONTWRITEBYTECODE is set, so the numbers that count come from an installed copy
(``python3 -m venv /tmp/su && /tmp/su/bin/pip install . && python benchmarks/startup.py
--lossctl /tmp/su/bin/lossctl``); the report says which kind it measured.

The floor is measured too, in the same interpreter: Python itself (``-c pass``,
``-S -c pass``) and the imports lossctl cannot avoid for a command line (typer with its
click, rich), so a miss can be told apart from what lossctl adds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELP_TARGET_S = 0.1
COMPUTE_TARGET_S = 0.2
MIN_REPS = 7


def lossctl_command(given: str | None = None) -> tuple[list[str], str]:
    """The command to measure, and a note of what it is (installed or editable)."""
    if given or os.environ.get("LOSSCTL_BIN"):
        path = given or os.environ["LOSSCTL_BIN"]
        return [path], _kind(Path(path).resolve().parent / "python")
    script = Path(sys.executable).parent / "lossctl"
    if script.exists():
        return [str(script)], _kind(Path(sys.executable))
    which = shutil.which("lossctl")
    if which:
        return [which], _kind(Path(which).resolve().parent / "python")
    return [sys.executable, "-m", "lossctl"], _kind(Path(sys.executable))


def _kind(python: Path) -> str:
    """'installed' or 'editable' (or 'unknown'), asked of the environment that runs lossctl."""
    code = (
        "import json, importlib.metadata as m\n"
        "d = m.distribution('lossctl')\n"
        "t = d.read_text('direct_url.json')\n"
        "print('editable' if t and json.loads(t).get('dir_info', {}).get('editable') else 'installed')"
    )
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def write_data(tmp: Path) -> dict[str, Path]:
    """A 10-row CSV for mse and a 10-row Parquet (logits as a FixedSizeList, labels) for cross-entropy."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(14)
    csv = tmp / "tiny.csv"
    pred, target = rng.standard_normal(10), rng.standard_normal(10)
    csv.write_text("pred,target\n" + "".join(f"{float(p)!r},{float(t)!r}\n" for p, t in zip(pred, target)))
    logits = rng.standard_normal((10, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=10)
    parquet = tmp / "tiny.parquet"
    table = pa.table({"logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), 5), "label": labels})
    pq.write_table(table, str(parquet))
    return {"csv": csv, "parquet": parquet}


def cases(cmd: list[str], data: dict[str, Path]) -> list[tuple[str, list[str], float | None]]:
    beside = Path(cmd[0]).parent / "python"  # the floor in the interpreter that runs lossctl
    py = str(beside) if len(cmd) == 1 and beside.exists() else sys.executable
    csv, parquet = str(data["csv"]), str(data["parquet"])
    return [
        ("python -c pass (floor)", [py, "-c", "pass"], None),
        ("python -S -c pass (no site)", [py, "-S", "-c", "pass"], None),
        ("python -c 'import typer' (floor)", [py, "-c", "import typer"], None),
        ("python -c 'import rich.console'", [py, "-c", "import rich.console"], None),
        ("lossctl --help", [*cmd, "--help"], HELP_TARGET_S),
        ("lossctl list", [*cmd, "list"], None),
        ("lossctl explain mse", [*cmd, "explain", "mse"], None),
        ("lossctl compute mse, 10-row CSV", [*cmd, "compute", "mse", f"{csv}:pred", f"{csv}:target"], COMPUTE_TARGET_S),
        (
            "lossctl compute cross-entropy, 10-row Parquet",
            [*cmd, "compute", "cross-entropy", f"{parquet}:logits", f"{parquet}:label"],
            COMPUTE_TARGET_S,
        ),
    ]


def time_once(argv: list[str], env: dict[str, str]) -> float:
    """Wall time of one run (``cpu_once`` gives its CPU time too)."""
    return cpu_once(argv, env)[0]


def cpu_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run. On a machine shared with other work
    the CPU time moves much less than the wall time, so it is reported next to it."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=120)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {out.returncode}: {out.stderr.decode(errors='replace')[-400:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_startup(reps: int = 9, lossctl: str | None = None, quiet: bool = False) -> dict:
    """Median and minimum wall time of each case (runs taken in turns), with the targets."""
    reps = max(MIN_REPS, reps)
    cmd, kind = lossctl_command(lossctl)
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
    tmp = Path(tempfile.mkdtemp(prefix="lossctl-startup-"))
    try:
        todo = cases(cmd, write_data(tmp))
        for _, argv, _ in todo:  # warm the page cache (and any bytecode cache) once
            time_once(argv, env)
        times: dict[str, list[float]] = {name: [] for name, _, _ in todo}
        cpu: dict[str, list[float]] = {name: [] for name, _, _ in todo}
        for _ in range(reps):
            for name, argv, _ in todo:
                wall, used = cpu_once(argv, env)
                times[name].append(wall)
                cpu[name].append(used)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for name, _, target in todo:
        med = statistics.median(times[name])
        rows.append(
            {
                "case": name,
                "median_s": med,
                "min_s": min(times[name]),
                "cpu_s": statistics.median(cpu[name]),
                "target_s": target,
                "ok": None if target is None else med <= target,
            }
        )
    doc = {"command": cmd, "install": kind, "reps": reps, "rows": rows}
    if not quiet:
        print(f"  start-up of {' '.join(cmd)} ({kind} copy), median of {reps} runs each")
        if kind == "editable":
            print("  note: an editable install recompiles every import when PYTHONDONTWRITEBYTECODE is set")
        for r in rows:
            verdict = "" if r["ok"] is None else f"  target <= {r['target_s']:.1f} s: {'ok' if r['ok'] else 'MISS'}"
            print(
                f"    {r['case']:<48}{r['median_s'] * 1000:>8.1f} ms  (min {r['min_s'] * 1000:.1f}, "
                f"CPU {r['cpu_s'] * 1000:.1f}){verdict}"
            )
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=9, help=f"runs per case (at least {MIN_REPS}; default 9)")
    ap.add_argument("--lossctl", metavar="PATH", help="the lossctl script to measure (e.g. of an installed copy)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    doc = run_startup(args.reps, args.lossctl, quiet=args.json)
    if args.json:
        print(json.dumps(doc, indent=1))
    return 0 if all(r["ok"] is not False for r in doc["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
