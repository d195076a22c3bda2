"""Sections of benchmarks/run.py for issue #16: where a run's time goes, and peers on the same files.

* ``run_split``: ``lossctl compute`` run in this process on generated NPY files (20,000,000 rows for
  MSE / MAE / BCE, 1,000,000 x 100 for CE) with timers around the engine's kernel call
  (``stages.compute.Kernel._call``), the statistics (``Aggregate.add``, ``TopK.update``) and the report
  (``stages.runner.Run.report`` plus rendering after the engine returns); "read + rest" is the run's wall
  time minus those (reads run ahead on a thread, so this is the time the run waited for data,
  plus the per-chunk bookkeeping). Each is run with ``LOSSCTL_THREADS=1`` and ``=2``.
* ``run_peers``: whole processes on the same files: ``lossctl compute`` (full default report),
  DuckDB and polars (``pip install 'lossctl[bench]'``), and the same-stack floor (the shortest
  pyarrow / NumPy script that reads the columns and prints the mean), with ratios to lossctl.

Medians of alternating runs; absolute times drift on a shared machine, the same-run ratios carry.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

SPLIT_FULL = {"rows": 20_000_000, "ce": (1_000_000, 100)}
SPLIT_QUICK = {"rows": 2_000_000, "ce": (100_000, 100)}
PEERS_FULL = {"parquet": 20_000_000, "csv": 5_000_000, "bce": 10_000_000, "ce": (1_000_000, 100)}
PEERS_QUICK = {"parquet": 2_000_000, "csv": 500_000, "bce": 1_000_000, "ce": (100_000, 100)}


# ---------------------------------------------------------------------------
# read / kernel / statistics / report, in process
# ---------------------------------------------------------------------------


class _Timers:
    """Wraps methods with wall-time accumulators (restored by ``close``)."""

    def __init__(self):
        self.t: dict[str, float] = {}
        self._undo: list = []

    def wrap(self, owner, name: str, key: str) -> None:
        fn = getattr(owner, name)
        t = self.t
        t.setdefault(key, 0.0)

        def timed(*a, **k):
            s = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                t[key] += time.perf_counter() - s

        setattr(owner, name, timed)
        self._undo.append((owner, name, fn))

    def close(self) -> None:
        for owner, name, fn in reversed(self._undo):
            setattr(owner, name, fn)


def _in_process(args: list[str], threads: int) -> dict:
    from lossctl import aggregate, engine, stats
    from lossctl.cli import main
    from lossctl.stages.compute import Kernel

    tm = _Timers()
    tm.wrap(Kernel, "_call", "kernel")
    tm.wrap(aggregate.Aggregate, "add", "statistics")
    tm.wrap(stats.TopK, "update", "statistics")
    tm.wrap(engine._Run, "report", "report")
    done = {}
    execute = engine._Run.execute

    def execute_marked(self):
        out = execute(self)
        done["t"] = time.perf_counter()
        return out

    engine._Run.execute = execute_marked
    old_env = os.environ.get("LOSSCTL_THREADS")
    os.environ["LOSSCTL_THREADS"] = str(threads)
    old_out = sys.stdout
    sys.stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    try:
        t0 = time.perf_counter()
        try:
            main(args)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"lossctl {' '.join(args)} exited {exc.code}") from None
        t1 = time.perf_counter()
    finally:
        sys.stdout = old_out
        engine._Run.execute = execute
        tm.close()
        if old_env is None:
            os.environ.pop("LOSSCTL_THREADS", None)
        else:
            os.environ["LOSSCTL_THREADS"] = old_env
    t = dict(tm.t)
    t["report"] += t1 - done.get("t", t1)  # rendering after the engine returned
    t["whole"] = t1 - t0
    t["read + rest"] = t["whole"] - t["kernel"] - t["statistics"] - t["report"]
    return t


def run_split(quick: bool, reps: int, tmp: Path) -> list[dict]:
    sz = SPLIT_QUICK if quick else SPLIT_FULL
    n = sz["rows"]
    rng = np.random.default_rng(5)
    d = tmp / "split"
    d.mkdir(exist_ok=True)
    np.save(d / "p.npy", rng.standard_normal(n, dtype=np.float32))
    np.save(d / "t.npy", rng.standard_normal(n, dtype=np.float32))
    np.save(d / "y.npy", (rng.random(n) < 0.3).astype(np.float32))
    nc, c = sz["ce"]
    np.save(d / "x.npy", rng.standard_normal((nc, c), dtype=np.float32) * 3)
    np.save(d / "lab.npy", rng.integers(0, c, size=nc))
    cases = {
        f"mse, {n:,} rows": ["compute", "mse", str(d / "p.npy"), str(d / "t.npy")],
        f"mae, {n:,} rows": ["compute", "mae", str(d / "p.npy"), str(d / "t.npy")],
        f"bce, {n:,} rows": ["compute", "bce", str(d / "p.npy"), str(d / "y.npy")],
        f"ce, {nc:,} x {c}": ["compute", "ce", str(d / "x.npy"), str(d / "lab.npy")],
    }
    print(f"\n  where the time goes (in process, NPY inputs, full default report; medians of {reps})")
    print(
        f"    {'case':<24}{'thr':>4}{'whole s':>9}{'read+rest':>10}{'kernel':>8}{'stats':>8}{'report':>8}"
        f"{'stats/kernel':>13}{'Mrows/s':>9}"
    )
    rows = []
    for label, args in cases.items():
        for threads in (1, 2):
            _in_process(args, threads)  # warm-up: page cache, imports
            runs = [_in_process(args, threads) for _ in range(reps)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            nrows = nc if label.startswith("ce") else n
            row = {"case": label, "threads": threads, **{k: round(v, 4) for k, v in med.items()}}
            row["stats_over_kernel"] = med["statistics"] / med["kernel"] if med["kernel"] else None
            row["mrows_per_s"] = nrows / med["whole"] / 1e6
            rows.append(row)
            print(
                f"    {label:<24}{threads:>4}{med['whole']:>9.3f}{med['read + rest']:>10.3f}{med['kernel']:>8.3f}"
                f"{med['statistics']:>8.3f}{med['report']:>8.3f}{row['stats_over_kernel']:>13.2f}"
                f"{row['mrows_per_s']:>9.1f}",
                flush=True,
            )
    return rows


# ---------------------------------------------------------------------------
# peers: DuckDB, polars and the same-stack floor, whole processes on the same files
# ---------------------------------------------------------------------------

PEER_SCRIPTS = {
    # argv: path, expression name (mse | mae | bce), then column names
    "duckdb_reg.py": """
        import sys, duckdb
        path, kind = sys.argv[1], sys.argv[2]
        src = f"read_parquet('{path}')" if path.endswith(".parquet") else f"read_csv('{path}')"
        expr = {"mse": "avg((pred - target) * (pred - target))", "mae": "avg(abs(pred - target))",
                "bce": "avg(greatest(pred, 0) - pred * target + ln(1 + exp(-abs(pred))))"}[kind]
        print(duckdb.sql(f"SELECT {expr} FROM {src}").fetchall()[0][0])
    """,
    "polars_reg.py": """
        import sys, polars as pl
        path, kind = sys.argv[1], sys.argv[2]
        lf = pl.scan_parquet(path) if path.endswith(".parquet") else pl.scan_csv(path)
        x, y = pl.col("pred"), pl.col("target")
        expr = {"mse": ((x - y) ** 2).mean(), "mae": (x - y).abs().mean(),
                "bce": (pl.max_horizontal(x, 0) - x * y + (1 + (-x.abs()).exp()).log()).mean()}[kind]
        print(lf.select(expr).collect().item())
    """,
    "floor_reg.py": """
        import sys
        import numpy as np
        path, kind = sys.argv[1], sys.argv[2]
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq
            t = pq.read_table(path, columns=["pred", "target"])
        else:
            import pyarrow.csv as pc
            t = pc.read_csv(path)
        x = t.column("pred").to_numpy().astype(np.float64)
        y = t.column("target").to_numpy().astype(np.float64)
        if kind == "mse":
            d = x - y; print(float(np.dot(d, d)) / len(d))
        elif kind == "mae":
            print(float(np.abs(x - y).mean()))
        else:
            print(float((np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))).mean()))
    """,
    "floor_npy.py": """
        import sys
        import numpy as np
        kind = sys.argv[1]
        if kind == "mse":
            x = np.load(sys.argv[2], mmap_mode="r")
            y = np.load(sys.argv[3], mmap_mode="r")
            d = x.astype(np.float64) - y
            print(float(np.dot(d, d)) / len(d))
        else:
            x = np.load(sys.argv[2])
            y = np.load(sys.argv[3])
            m = x.max(axis=1)
            lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1, dtype=np.float64))
            print(float((lse - x[np.arange(len(y)), y]).mean()))
    """,
    "floor_ce.py": """
        import sys
        import numpy as np, pyarrow.parquet as pq
        t = pq.read_table(sys.argv[1])
        col = t.column("logits").combine_chunks()
        x = col.flatten().to_numpy().reshape(len(col), -1)
        y = t.column("label").to_numpy()
        m = x.max(axis=1)
        lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1, dtype=np.float64))
        print(float((lse - x[np.arange(len(y)), y]).mean()))
    """,
}


def _write_peer_data(tmp: Path, sz: dict) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    paths = {}

    def reg(n, y_binary=False):
        x = rng.standard_normal(n, dtype=np.float32)
        y = (rng.random(n) < 0.3).astype(np.float32) if y_binary else rng.standard_normal(n, dtype=np.float32)
        return pa.table({"pred": x, "target": y})

    paths["parquet"] = tmp / "reg.parquet"
    pq.write_table(reg(sz["parquet"]), paths["parquet"])
    paths["csv"] = tmp / "reg.csv"
    pcsv.write_csv(reg(sz["csv"]), paths["csv"])
    paths["bce"] = tmp / "bce.parquet"
    pq.write_table(reg(sz["bce"], y_binary=True), paths["bce"])
    n, c = sz["ce"]
    x = rng.standard_normal((n, c), dtype=np.float32) * 3
    t = pa.table(
        {"logits": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), c), "label": rng.integers(0, c, n)}
    )
    paths["ce"] = tmp / "ce.parquet"
    pq.write_table(t, paths["ce"])
    # the same columns as NPY files (np.save): the NPY rows of the table
    np.save(tmp / "p.npy", rng.standard_normal(sz["parquet"], dtype=np.float32))
    np.save(tmp / "t.npy", rng.standard_normal(sz["parquet"], dtype=np.float32))
    np.save(tmp / "x.npy", x)
    np.save(tmp / "lab.npy", t.column("label").to_numpy())
    return paths


def run_peers(quick: bool, reps: int, tmp: Path, run_wrapped, have) -> list[dict]:
    """Whole processes on the same files; ``run_wrapped(cmd)`` gives wall time and peak RSS."""
    sz = PEERS_QUICK if quick else PEERS_FULL
    d = tmp / "peers"
    d.mkdir(exist_ok=True)
    print("\n  generating the peer files (Parquet, CSV) ...", flush=True)
    p = _write_peer_data(d, sz)
    for name, body in PEER_SCRIPTS.items():
        (d / name).write_text(textwrap.dedent(body))
    py = sys.executable
    lossctl = [py, "-m", "lossctl"]
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print(
            "  note: PYTHONDONTWRITEBYTECODE is set: every process compiles its Python modules afresh, "
            "which charges lossctl (many modules) more than the one-file scripts.",
            flush=True,
        )
    duck, polars = have("duckdb"), have("polars")
    if not duck:
        print("  note: duckdb is not installed (pip install 'lossctl[bench]'): skipped", flush=True)
    if not polars:
        print("  note: polars is not installed (pip install 'lossctl[bench]'): skipped", flush=True)
    n, c = sz["ce"]
    cases = []
    for key, kind, label in (
        ("parquet", "mse", f"MSE, {sz['parquet']:,}-row Parquet"),
        ("parquet", "mae", f"MAE, {sz['parquet']:,}-row Parquet"),
        ("csv", "mse", f"MSE, {sz['csv']:,}-row CSV"),
        ("csv", "mae", f"MAE, {sz['csv']:,}-row CSV"),
        ("bce", "bce", f"BCE, {sz['bce']:,}-row Parquet"),
    ):
        f = str(p[key])
        cmds = {"lossctl": [*lossctl, "compute", kind, f"{f}:pred", f"{f}:target", "-f", "json"]}
        if duck:
            cmds["duckdb"] = [py, str(d / "duckdb_reg.py"), f, kind]
        if polars:
            cmds["polars"] = [py, str(d / "polars_reg.py"), f, kind]
        cmds["floor (pyarrow + numpy)"] = [py, str(d / "floor_reg.py"), f, kind]
        cases.append((label, cmds))
    f = str(p["ce"])
    cases.append(
        (
            f"CE, {n:,} x {c} Parquet",
            {
                "lossctl": [*lossctl, "compute", "ce", f"{f}:logits", f"{f}:label", "-f", "json"],
                "floor (pyarrow + numpy)": [py, str(d / "floor_ce.py"), f],
            },
        )
    )
    npy = {k: str(d / f"{k}.npy") for k in ("p", "t", "x", "lab")}
    cases.append(
        (
            f"MSE, {sz['parquet']:,}-row NPY pair",
            {
                "lossctl": [*lossctl, "compute", "mse", npy["p"], npy["t"], "-f", "json"],
                "floor (numpy)": [py, str(d / "floor_npy.py"), "mse", npy["p"], npy["t"]],
            },
        )
    )
    cases.append(
        (
            f"CE, {n:,} x {c} NPY",
            {
                "lossctl": [*lossctl, "compute", "ce", npy["x"], npy["lab"], "-f", "json"],
                "floor (numpy)": [py, str(d / "floor_npy.py"), "ce", npy["x"], npy["lab"]],
            },
        )
    )
    print(
        "    CE: DuckDB SQL and polars expressions have no row-wise log-sum-exp over a fixed-size list "
        "short of unnesting 100 values a row; not measured for them.",
        flush=True,
    )
    rows = []
    for label, cmds in cases:
        for cmd in cmds.values():  # warm-up: page cache, .pyc files
            r = run_wrapped(cmd)
            if r["rc"] != 0:
                raise RuntimeError(f"{label}: {' '.join(cmd)} failed:\n{r['err']}")
        res: dict[str, list[dict]] = {k: [] for k in cmds}
        names = list(cmds)
        for i in range(reps):
            for k in names[i % len(names) :] + names[: i % len(names)]:  # alternating order
                res[k].append(run_wrapped(cmds[k]))
        med = {k: statistics.median(r["wall"] for r in v) for k, v in res.items()}
        rss = {k: statistics.median(r["rss_kb"] for r in v) / 1024 for k, v in res.items()}
        print(f"\n  {label} (medians of {reps}; ratio = lossctl / peer, < 1 means lossctl is faster)")
        for k in cmds:
            ratio = med["lossctl"] / med[k]
            print(f"    {k:<26}{med[k]:>8.3f} s{rss[k]:>8.0f} MB   lossctl/this {ratio:5.2f}x", flush=True)
            rows.append({"case": label, "tool": k, "wall_s": med[k], "peak_rss_mb": rss[k], "lossctl_ratio": ratio})
    return rows
