"""lossctl benchmark: kernels and whole processes against the baselines, in one run.

Usage (from the repository root, in an environment where lossctl is installed)::

    python benchmarks/run.py             # full sizes (about 10 minutes, ~8 GB of RAM at peak)
    python benchmarks/run.py --quick     # small sizes (about 1 minute)
    python benchmarks/run.py --only kernels|e2e|split|peers   [--reps N] [--profile] [--out PATH]
    python benchmarks/run.py --only jsonl  # token CE over a 1 GB JSON Lines log (--jsonl-gb)

Optional baselines (``pip install 'lossctl[bench]'``: torch, scikit-learn, pandas, duckdb, polars);
each one that is missing is skipped with a printed note.

What it measures, all in the same run (absolute times drift between runs on shared
machines; the ratios are what carries over):

* the machine: CPU model, cores, memory read bandwidth (sum of a 1.6 GB float32
  array, 400 MB with --quick, on one thread and on all cores);
* kernels on in-memory float32 arrays: lossctl's kernel (per-sample float64 values,
  all cores, and on 1 thread) vs PyTorch CPU ``F.*`` with ``reduction="mean"`` and
  ``"none"`` (``torch.set_num_threads(os.cpu_count())``), naive whole-array NumPy,
  and scikit-learn where it has the loss. Cross-entropy (1,000,000 x 100 and
  200,000 x 1,000, index targets), BCE with logits (1e7), KL(P || softmax(x))
  (1,000,000 x 100), MSE, MAE, Huber, log-cosh (2e7). Medians (and minima) of
  several repetitions taken in turns, the order rotating each round; input bytes
  per second next to the bandwidth. Before each timed call ~1 GB of memory is
  touched and freed (see PREFAULT_BYTES: virtual machines that return free memory
  to the host otherwise charge whichever call comes first for re-faulting it);
* whole processes (a wrapper process measures the child's wall time and peak RSS
  with ``getrusage(RUSAGE_CHILDREN)``): ``lossctl compute cross-entropy`` on a
  1,000,000 x 100 float32 Parquet file (FixedSizeList column) vs the minimal user
  scripts (pyarrow.read_table + torch, pandas + torch, streaming pyarrow + NumPy);
  the same data as NPY vs ``np.load`` + torch and vs a process that only
  memory-maps and sums the file; start-up (``lossctl --help``, a 10-row compute).

The data is generated in a temporary directory that is deleted at the end. The
table is printed and written with the machine description to
``benchmarks/results/latest.json`` (``--out`` to change). ``--profile`` also
writes cProfile listings of ``lossctl compute`` on the NPY and Parquet files to
``benchmarks/results/profile-{npy,parquet}.txt``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORES = os.cpu_count() or 1

FULL = {
    "ce": (1_000_000, 100),
    "ce_lm": (200_000, 1000),
    "bce": 10_000_000,
    "kl": (1_000_000, 100),
    "reg": 20_000_000,
    "e2e": (1_000_000, 100),
    "scaleout": (10, 100_000, 100),  # shards x rows per shard x classes
    "bandwidth_bytes": 1_600_000_000,
    "reps": 7,
    "e2e_reps": 5,
}
QUICK = {
    "ce": (200_000, 100),
    "ce_lm": (40_000, 1000),
    "bce": 2_000_000,
    "kl": (200_000, 100),
    "reg": 4_000_000,
    "e2e": (200_000, 100),
    "scaleout": (10, 20_000, 100),
    "bandwidth_bytes": 400_000_000,
    "reps": 3,
    "e2e_reps": 3,
}


def note(msg: str) -> None:
    print(f"  note: {msg}", flush=True)


# ---------------------------------------------------------------------------
# machine
# ---------------------------------------------------------------------------


def _version(mod: str) -> str | None:
    try:
        m = __import__(mod)
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return None
    return getattr(m, "__version__", "?")


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        blas_txt = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 - informational only
        blas_txt = None
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = None
    import lossctl

    return {
        "cpu": cpu,
        "cores": CORES,
        "memory_gb": mem_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_txt,
        "pyarrow": _version("pyarrow"),
        "torch": _version("torch"),
        "sklearn": _version("sklearn"),
        "pandas": _version("pandas"),
        "lossctl": lossctl.__version__,
        "git_commit": commit,
        "LOSSCTL_THREADS": os.environ.get("LOSSCTL_THREADS"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def measure_bandwidth(nbytes: int, reps: int) -> dict:
    """Read bandwidth: sum of a float32 array of ``nbytes``, on one thread and on all cores."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    chunks = np.array_split(a, CORES)
    one, many = [], []
    with ThreadPoolExecutor(CORES) as pool:
        a.sum()
        for _ in range(reps):
            t = time.perf_counter()
            a.sum()
            one.append(time.perf_counter() - t)
            t = time.perf_counter()
            sum(pool.map(np.sum, chunks))
            many.append(time.perf_counter() - t)
    del a, chunks
    gc.collect()
    return {
        "bytes": nbytes,
        "one_thread_gbs": nbytes / statistics.median(one) / 1e9,
        "all_cores_gbs": nbytes / statistics.median(many) / 1e9,
    }


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        v = [int(t) for t in fh.readline().split()[1:]]
    return sum(v), v[3] + v[4]


def background_load(seconds: float = 0.5) -> float | None:
    """Fraction of the machine's CPU time used by other processes while this one sleeps."""
    try:
        a = _cpu_times()
        time.sleep(seconds)
        b = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    total = b[0] - a[0]
    return 1.0 - (b[1] - a[1]) / total if total > 0 else None


def wait_quiet(limit_s: float, threshold: float = 0.1) -> float | None:
    """Wait (up to limit_s) until other processes use less than ``threshold`` of the CPUs;
    return the last load seen. Other jobs on a shared machine otherwise skew the medians."""
    load = background_load()
    t0 = time.perf_counter()
    while load is not None and load > threshold and time.perf_counter() - t0 < limit_s:
        load = background_load(1.0)
    if load is not None and load > threshold:
        note(f"other processes use {100 * load:.0f}% of the CPUs; these numbers are disturbed.")
    return load


# Memory touched (and freed) right before each timed call. On virtual machines that hand
# free memory back to the host (virtio-balloon free page reporting, as on the project's
# machine), memory freed a fraction of a second ago costs a host page fault per page when it
# is used again: a fresh 160 MB output then takes 80-250 ms instead of 17. Touching memory
# first gives every method the same, steady state; it also outlasts the ~0.1 s that
# OpenBLAS / OpenMP worker threads keep spinning after a BLAS or torch call.
PREFAULT_BYTES = 1 << 30


def prefault(nbytes: int = PREFAULT_BYTES) -> None:
    a = np.empty(nbytes // 8)
    a.fill(0.0)
    del a


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


def _torch():
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None, None
    torch.set_num_threads(CORES)
    return torch, F


def _sklearn():
    try:
        import sklearn.metrics as skm
    except ImportError:
        return None
    return skm


def _softmax64(x):
    x = x.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


def kernel_cases(sz: dict, torch, F, skm):
    """Builders of the cases, one at a time (so only one case's arrays are alive).

    Each case: kernel name, shape text, input bytes, methods {name: (callable, reps or None)}.
    """
    from lossctl.losses.classification import binary_cross_entropy, cross_entropy
    from lossctl.losses.divergence import kl_divergence
    from lossctl.losses.regression import huber, log_cosh, mae, mse

    slow = 3  # repetitions for the slow baselines (scikit-learn)

    def ce_case(n, c, label):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c), dtype=np.float32) * 3
        y = rng.integers(0, c, size=n)
        m = {"lossctl": (lambda: cross_entropy(x, y), None)}

        def naive():
            mx = x.max(axis=1, keepdims=True)
            lse = np.log(np.exp(x - mx).sum(axis=1)) + mx[:, 0]
            return float((lse - x[np.arange(n), y]).mean())

        m["numpy naive"] = (naive, None)
        if torch is not None:
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            m["torch"] = (lambda: F.cross_entropy(xt, yt), None)
            m["torch none"] = (lambda: F.cross_entropy(xt, yt, reduction="none"), None)
        if skm is not None:
            labels = np.arange(c)
            m["sklearn log_loss"] = (lambda: skm.log_loss(y, _softmax64(x), labels=labels), slow)
        return {
            "kernel": label,
            "shape": f"{n:,} x {c:,} f32, index targets",
            "bytes": x.nbytes + y.nbytes,
            "methods": m,
        }

    def bce_case():
        n = sz["bce"]
        rng = np.random.default_rng(1)
        x = rng.standard_normal(n, dtype=np.float32) * 3
        y = (rng.random(n) < 0.3).astype(np.float32)
        m = {
            "lossctl": (lambda: binary_cross_entropy(x, y), None),
            "numpy naive": (lambda: float((np.logaddexp(0, x) - y * x).mean()), None),
        }
        if torch is not None:
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            m["torch"] = (lambda: F.binary_cross_entropy_with_logits(xt, yt), None)
            m["torch none"] = (lambda: F.binary_cross_entropy_with_logits(xt, yt, reduction="none"), None)
        if skm is not None:
            m["sklearn log_loss"] = (lambda: skm.log_loss(y, 1.0 / (1.0 + np.exp(-x.astype(np.float64)))), slow)
        return {"kernel": "bce-with-logits", "shape": f"{n:,} f32", "bytes": x.nbytes + y.nbytes, "methods": m}

    def kl_case():
        n, c = sz["kl"]
        rng = np.random.default_rng(2)
        q = rng.standard_normal((n, c), dtype=np.float32) * 2
        p = _softmax64(rng.standard_normal((n, c), dtype=np.float32) * 2).astype(np.float32)

        def naive():
            lq = q - q.max(axis=1, keepdims=True)
            lq = lq - np.log(np.exp(lq).sum(axis=1, keepdims=True))
            with np.errstate(divide="ignore", invalid="ignore"):
                return float(np.where(p > 0, p * (np.log(p) - lq), 0.0).sum(axis=1).mean())

        m = {"lossctl": (lambda: kl_divergence(q, p), None), "numpy naive": (naive, None)}
        if torch is not None:
            qt, pt = torch.from_numpy(q), torch.from_numpy(p)
            m["torch"] = (lambda: F.kl_div(F.log_softmax(qt, dim=1), pt, reduction="batchmean"), None)
            m["torch none"] = (lambda: F.kl_div(F.log_softmax(qt, dim=1), pt, reduction="none").sum(dim=1), None)
        return {
            "kernel": "kl-divergence",
            "shape": f"{n:,} x {c} f32, P probs, Q logits",
            "bytes": q.nbytes + p.nbytes,
            "methods": m,
        }

    def reg_case(name):
        n = sz["reg"]
        rng = np.random.default_rng(3)
        pr = rng.standard_normal(n, dtype=np.float32)
        tg = (pr + rng.standard_normal(n, dtype=np.float32) * 1.5).astype(np.float32)

        def huber_naive():
            d = tg - pr
            return float(np.where(np.abs(d) <= 1.0, 0.5 * d * d, np.abs(d) - 0.5).mean())

        kern, naive, tname, skname = {
            "mse": (mse, lambda: float(((pr - tg) ** 2).mean()), "mse_loss", "mean_squared_error"),
            "mae": (mae, lambda: float(np.abs(pr - tg).mean()), "l1_loss", "mean_absolute_error"),
            "huber": (huber, huber_naive, "huber_loss", None),
            "log-cosh": (log_cosh, lambda: float(np.log(np.cosh(tg - pr)).mean()), None, None),
        }[name]
        m = {"lossctl": (lambda: kern(pr, tg), None), "numpy naive": (naive, None)}
        if torch is not None:
            pt, tt = torch.from_numpy(pr), torch.from_numpy(tg)
            if tname is not None:
                fn = getattr(F, tname)
                m["torch"] = (lambda: fn(pt, tt), None)
                m["torch none"] = (lambda: fn(pt, tt, reduction="none"), None)
            else:  # no F.log_cosh: the overflow-free form a PyTorch user writes
                ln2 = math.log(2.0)

                def lc(reduce=True):
                    d = pt - tt
                    v = d + F.softplus(-2.0 * d) - ln2
                    return v.mean() if reduce else v

                m["torch"] = (lc, None)
                m["torch none"] = (lambda: lc(False), None)
        if skm is not None and skname is not None:
            skfn = getattr(skm, skname)
            m[f"sklearn {skname}"] = (lambda: skfn(tg, pr), slow)
        return {"kernel": name, "shape": f"{n:,} f32", "bytes": pr.nbytes + tg.nbytes, "methods": m}

    yield lambda: ce_case(*sz["ce"], "cross-entropy")
    yield lambda: ce_case(*sz["ce_lm"], "cross-entropy (LM shape)")
    yield bce_case
    yield kl_case
    for name in ("mse", "mae", "huber", "log-cosh"):
        yield lambda name=name: reg_case(name)


def run_kernels(sz: dict, bw: dict, reps: int, quiet_s: float) -> list[dict]:
    torch, F = _torch()
    if torch is None:
        note("PyTorch is not installed: the torch baselines are skipped (pip install 'lossctl[bench]').")
    skm = _sklearn()
    if skm is None:
        note("scikit-learn is not installed: its baselines are skipped.")
    rows = []
    for build in kernel_cases(sz, torch, F, skm):
        case = build()
        methods = dict(case["methods"])
        one = methods["lossctl"][0]

        def lossctl_1t(fn=one):
            old = os.environ.get("LOSSCTL_THREADS")
            os.environ["LOSSCTL_THREADS"] = "1"
            try:
                return fn()
            finally:
                if old is None:
                    del os.environ["LOSSCTL_THREADS"]
                else:
                    os.environ["LOSSCTL_THREADS"] = old

        methods["lossctl 1 thread"] = (lossctl_1t, None)
        times: dict[str, list[float]] = {k: [] for k in methods}
        for k, (fn, mreps) in methods.items():  # warm-up (and page in the inputs)
            if mreps is None:
                fn()
        loads = []
        names = list(methods)
        for r in range(reps):
            loads.append(wait_quiet(quiet_s))  # in turns, each round on a machine as idle as it gets
            order = names[r % len(names) :] + names[: r % len(names)]  # no method always first
            for k in order:
                fn, mreps = methods[k]
                if mreps is not None and r >= mreps:
                    continue
                gc.collect()
                prefault()
                t = time.perf_counter()
                out = fn()
                times[k].append(time.perf_counter() - t)
                del out
        load = max((x for x in loads if x is not None), default=None)
        med = {k: statistics.median(v) for k, v in times.items() if v}
        best = {k: min(v) for k, v in times.items() if v}
        t_torch = med.get("torch")
        t_torch_none = med.get("torch none")
        for k, t in med.items():
            rows.append(
                {
                    "kernel": case["kernel"],
                    "shape": case["shape"],
                    "method": k,
                    "ms": t * 1e3,
                    "min_ms": best[k] * 1e3,
                    "reps": len(times[k]),
                    "x_vs_torch": (t_torch / t) if t_torch else None,
                    "x_vs_torch_none": (t_torch_none / t) if t_torch_none else None,
                    "x_vs_torch_min": (best["torch"] / best[k]) if "torch" in best else None,
                    "gbs": case["bytes"] / t / 1e9,
                    "pct_bandwidth": 100 * case["bytes"] / t / 1e9 / bw["all_cores_gbs"],
                    "background_load": load,
                    "times_ms": [round(v * 1e3, 3) for v in times[k]],
                }
            )
        print_kernel_rows([r for r in rows if r["kernel"] == case["kernel"]])
        del methods, case
        gc.collect()
    return rows


def print_kernel_rows(rows: list[dict]) -> None:
    if not rows:
        return
    print(f"\n  {rows[0]['kernel']} — {rows[0]['shape']}")
    print(
        f"    {'method':<28}{'median ms':>10}{'min ms':>9}{'x vs torch':>11}{'(min)':>7}{'x vs none':>10}"
        f"{'GB/s':>7}{'% bw':>6}"
    )
    for r in rows:
        x1 = f"{r['x_vs_torch']:.2f}" if r["x_vs_torch"] else "-"
        x1m = f"{r['x_vs_torch_min']:.2f}" if r["x_vs_torch_min"] else "-"
        x2 = f"{r['x_vs_torch_none']:.2f}" if r["x_vs_torch_none"] else "-"
        print(
            f"    {r['method']:<28}{r['ms']:>10.1f}{r['min_ms']:>9.1f}{x1:>11}{x1m:>7}{x2:>10}"
            f"{r['gbs']:>7.1f}{r['pct_bandwidth']:>6.0f}"
        )


def markdown(report: dict) -> str:
    """The run as Markdown tables (for the README)."""
    m = report["machine"]
    bw = report["bandwidth"]
    out = [
        (
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; Python {m['python']}, "
            f"numpy {m['numpy']} ({m['blas']}), pyarrow {m['pyarrow']}, torch {m['torch']}, "
            f"scikit-learn {m['sklearn']}, pandas {m['pandas']}; lossctl {m['lossctl']} ({m['git_commit']}), "
            f"{m['date']}. Memory read bandwidth {bw['all_cores_gbs']:.1f} GB/s "
            f"({bw['one_thread_gbs']:.1f} on one thread)."
        ),
        "",
    ]
    if report.get("kernels"):
        out += [
            (
                "| kernel | input | lossctl ms | torch ms | × vs torch | torch `none` ms | × vs `none` | "
                "NumPy naive ms | scikit-learn ms | lossctl GB/s |"
            ),
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        by: dict[str, dict[str, dict]] = {}
        for r in report["kernels"]:
            by.setdefault(r["kernel"], {})[r["method"]] = r
        for k, ms in by.items():
            lc = ms["lossctl"]
            sk = next((v for n, v in ms.items() if n.startswith("sklearn")), None)

            def f(r, key="ms"):
                return f"{r[key]:.1f}" if r else "–"

            out.append(
                f"| {k} | {lc['shape']} | {f(lc)} | {f(ms.get('torch'))} | "
                f"{lc['x_vs_torch']:.2f} | {f(ms.get('torch none'))} | {lc['x_vs_torch_none']:.2f} | "
                f"{f(ms.get('numpy naive'))} | {f(sk)} | {lc['gbs']:.1f} |"
                if lc.get("x_vs_torch")
                else f"| {k} | {lc['shape']} | {f(lc)} | – | – | – | – | {f(ms.get('numpy naive'))} | {f(sk)} | "
                f"{lc['gbs']:.1f} |"
            )
        out.append("")
    if report.get("e2e"):
        d = report["e2e_data"]
        out += [
            f"Whole processes, {d['rows']:,} × {d['classes']} float32 logits (Parquet {d['parquet_mb']:.0f} MB):",
            "",
            "| process | wall s | peak RSS MB |",
            "|---|---:|---:|",
        ]
        for r in report["e2e"]:
            out.append(f"| {r['case']} | {r['wall_s']:.3f} | {r['peak_rss_mb']:.0f} |")
        out.append("")
    if report.get("scaleout"):
        so = report["scaleout"]
        out += [
            f"Scale-out: {so['shards']} Parquet shards, {so['rows']:,} × {so['classes']} float32 logits "
            f"({so['mb']:.0f} MB), `--group-by split`; peak RSS of each worker of the running cluster: "
            f"{', '.join(f'{w:.0f}' for w in so['worker_peak_mb'])} MB.",
            "",
            "| run | wall s | × local | peak RSS MB (lossctl process) |",
            "|---|---:|---:|---:|",
        ]
        for r in so["runs"]:
            out.append(f"| {r['case']} | {r['wall_s']:.3f} | {r['x_local']:.2f} | {r['peak_rss_mb']:.0f} |")
        out.append("")
    if report.get("scale"):
        sc = report["scale"]
        out += [
            f"Bounded memory: an aggregate-only `lossctl compute cross-entropy` over a generated {sc['input_gb']:.1f} GB "
            f"NPY input ({sc['rows']:,} × {sc['classes']} float32 + labels): {sc['wall_s']:.1f} s, "
            f"peak RSS {sc['peak_rss_mb']:.0f} MB.",
            "",
        ]
    if report.get("jsonl"):
        js = report["jsonl"]
        out += [
            f"JSON Lines, streamed: `lossctl compute lm LOG.jsonl:choices[0].logprobs.token_logprobs` over a generated "
            f"{js['input_gb']:.2f} GB log ({js['rows']:,} sequences of 16-512 token log-probs): {js['wall_s']:.1f} s, "
            f"peak RSS {js['peak_rss_mb']:.0f} MB; the value {'equals' if js['value_ok'] else 'DIFFERS from'} the "
            "mean token NLL computed while writing the log.",
            "",
        ]
    if report.get("targets"):
        if report.get("mode") == "quick":
            out += [_QUICK_TARGETS, ""]
        for t in report["targets"]:
            out.append(f"- {'✓' if t['ok'] else '✗'} {t['target']}: {t['got']}")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# whole processes
# ---------------------------------------------------------------------------

# A wrapper process runs the command and reports the child's wall time and peak RSS.
WRAPPER = textwrap.dedent(
    """
    import json, resource, subprocess, sys, time
    t = time.perf_counter()
    r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"rc": r.returncode, "wall": wall, "rss_kb": ru.ru_maxrss,
                      "out": r.stdout.decode(errors="replace")[-4000:],
                      "err": r.stderr.decode(errors="replace")[-4000:]}))
    """
)

# The minimal scripts a user would otherwise write. Each prints the mean cross-entropy.
SCRIPTS = {
    "read_table_torch.py": """
        import os, sys
        import pyarrow.parquet as pq
        import torch, torch.nn.functional as F
        torch.set_num_threads(os.cpu_count())
        t = pq.read_table(sys.argv[1])
        logits = t.column("logits").combine_chunks()
        x = logits.flatten().to_numpy().reshape(len(logits), -1)
        y = t.column("label").to_numpy()
        print(F.cross_entropy(torch.from_numpy(x), torch.from_numpy(y)).item())
    """,
    "pandas_torch.py": """
        import os, sys
        import numpy as np, pandas as pd
        import torch, torch.nn.functional as F
        torch.set_num_threads(os.cpu_count())
        df = pd.read_parquet(sys.argv[1])
        x = np.stack(df["logits"].to_numpy())
        y = df["label"].to_numpy()
        print(F.cross_entropy(torch.from_numpy(x), torch.from_numpy(y)).item())
    """,
    "stream_numpy.py": """
        import sys
        import numpy as np, pyarrow.parquet as pq
        total, n = 0.0, 0
        for b in pq.ParquetFile(sys.argv[1]).iter_batches(batch_size=65536, columns=["logits", "label"]):
            x = b.column(0).flatten().to_numpy().reshape(b.num_rows, -1)
            y = b.column(1).to_numpy()
            m = x.max(axis=1)
            lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
            total += float((lse - x[np.arange(len(y)), y]).sum(dtype=np.float64))
            n += len(y)
        print(total / n)
    """,
    "npy_torch.py": """
        import os, sys
        import numpy as np
        import torch, torch.nn.functional as F
        torch.set_num_threads(os.cpu_count())
        x, y = np.load(sys.argv[1]), np.load(sys.argv[2])
        print(F.cross_entropy(torch.from_numpy(x), torch.from_numpy(y)).item())
    """,
    "npy_mmap_sum.py": """
        import sys
        import numpy as np
        print(float(np.load(sys.argv[1], mmap_mode="r").sum()))
    """,
}


def write_e2e_data(tmp: Path, n: int, c: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c), dtype=np.float32) * 3
    y = rng.integers(0, c, size=n)
    paths = {"parquet": tmp / "logits.parquet", "x_npy": tmp / "logits.npy", "y_npy": tmp / "labels.npy"}
    table = pa.table({"logits": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), c), "label": pa.array(y)})
    pq.write_table(table, str(paths["parquet"]))  # pyarrow's defaults, as a user would write it
    meta = pq.ParquetFile(str(paths["parquet"])).metadata
    np.save(paths["x_npy"], x)
    np.save(paths["y_npy"], y)
    paths["tiny_npy_x"], paths["tiny_npy_y"] = tmp / "tiny_x.npy", tmp / "tiny_y.npy"
    np.save(paths["tiny_npy_x"], x[:10])
    np.save(paths["tiny_npy_y"], y[:10])
    paths["tiny_csv"] = tmp / "tiny.csv"
    with open(paths["tiny_csv"], "w") as fh:
        fh.write(",".join(f"logit_{k}" for k in range(c)) + ",label\n")
        fh.writelines(",".join(repr(float(v)) for v in x[i]) + f",{int(y[i])}\n" for i in range(10))
    # reference value of the mean cross-entropy, float64
    mean = 0.0
    for s in range(0, n, 65536):
        xb = x[s : s + 65536].astype(np.float64)
        mb = xb.max(axis=1)
        lse = mb + np.log(np.exp(xb - mb[:, None]).sum(axis=1))
        mean += float((lse - xb[np.arange(len(xb)), y[s : s + 65536]]).sum())
    del x, y, table
    gc.collect()
    return {
        "paths": paths,
        "reference_mean": mean / n,
        "parquet_row_groups": meta.num_row_groups,
        "parquet_mb": paths["parquet"].stat().st_size / 1e6,
    }


def _run_wrapped(cmd: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, *cmd], check=False, capture_output=True, text=True, timeout=1800
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)


def _value(text: str) -> float | None:
    text = text.strip()
    try:
        return float(json.loads(text)["value"]) if text.startswith("{") else float(text.splitlines()[-1])
    except (ValueError, KeyError, IndexError, json.JSONDecodeError):
        return None


def run_e2e(sz: dict, reps: int, tmp: Path, quiet_s: float) -> tuple[list[dict], dict]:
    n, c = sz["e2e"]
    print(f"\n  generating {n:,} x {c} float32 logits as Parquet (FixedSizeList) and NPY ...", flush=True)
    data = write_e2e_data(tmp, n, c)
    p = data["paths"]
    for name, body in SCRIPTS.items():
        (tmp / name).write_text(textwrap.dedent(body))
    py = sys.executable
    lossctl = [py, "-m", "lossctl"]
    have_torch = _version("torch") is not None
    have_pandas = _version("pandas") is not None
    cmds: dict[str, tuple[str, list[str]]] = {}
    pqs = str(p["parquet"])
    cmds["parquet: lossctl compute cross-entropy"] = (
        "parquet",
        [*lossctl, "compute", "cross-entropy", f"{pqs}:logits", f"{pqs}:label", "-f", "json"],
    )
    if have_torch:
        cmds["parquet: pyarrow.read_table + torch"] = ("parquet", [py, str(tmp / "read_table_torch.py"), pqs])
        if have_pandas:
            cmds["parquet: pandas + torch"] = ("parquet", [py, str(tmp / "pandas_torch.py"), pqs])
        else:
            note("pandas is not installed: the pandas + torch script is skipped.")
    else:
        note("PyTorch is not installed: the torch user scripts are skipped.")
    cmds["parquet: streaming pyarrow + numpy"] = ("parquet", [py, str(tmp / "stream_numpy.py"), pqs])
    cmds["npy: lossctl compute cross-entropy"] = (
        "npy",
        [*lossctl, "compute", "cross-entropy", str(p["x_npy"]), str(p["y_npy"]), "-f", "json"],
    )
    if have_torch:
        cmds["npy: np.load + torch"] = ("npy", [py, str(tmp / "npy_torch.py"), str(p["x_npy"]), str(p["y_npy"])])
    cmds["npy: memory-map + sum (floor)"] = ("npy", [py, str(tmp / "npy_mmap_sum.py"), str(p["x_npy"])])
    cmds["start-up: python -c pass"] = ("startup", [py, "-c", "pass"])
    cmds["start-up: lossctl --help"] = ("startup", [*lossctl, "--help"])
    cmds["start-up: lossctl compute ce, 10 rows NPY"] = (
        "startup",
        [*lossctl, "compute", "ce", str(p["tiny_npy_x"]), str(p["tiny_npy_y"]), "-f", "json"],
    )
    cmds["start-up: lossctl compute ce, 10 rows CSV"] = (
        "startup",
        [*lossctl, "compute", "ce", f"{p['tiny_csv']}:logit_*", f"{p['tiny_csv']}:label", "-f", "json"],
    )
    results: dict[str, list[dict]] = {k: [] for k in cmds}
    loads = []
    for k, (_, cmd) in cmds.items():  # warm-up: page cache, .pyc files
        r = _run_wrapped(cmd)
        if r["rc"] != 0:
            raise RuntimeError(f"{k} failed:\n{r['err']}")
    names = list(cmds)
    for r in range(reps):
        loads.append(wait_quiet(quiet_s))
        for k in names[r % len(names) :] + names[: r % len(names)]:
            prefault()
            results[k].append(_run_wrapped(cmds[k][1]))
    rows = []
    for k, (group, cmd) in cmds.items():
        rs = results[k]
        rows.append(
            {
                "case": k,
                "group": group,
                "wall_s": statistics.median(r["wall"] for r in rs),
                "wall_min_s": min(r["wall"] for r in rs),
                "peak_rss_mb": statistics.median(r["rss_kb"] for r in rs) / 1024,
                "reps": len(rs),
                "value": _value(rs[-1]["out"]),
                "walls_s": [round(r["wall"], 4) for r in rs],
                "command": " ".join(Path(a).name if os.sep in a else a for a in cmd[1:]),
            }
        )
    info = {
        "rows": n,
        "classes": c,
        "reference_mean_ce": data["reference_mean"],
        "parquet_row_groups": data["parquet_row_groups"],
        "parquet_mb": data["parquet_mb"],
        "background_load": max((x for x in loads if x is not None), default=None),
    }
    print_e2e(rows, info)
    return rows, info


def _find(rows, case):
    for r in rows:
        if r["case"] == case:
            return r
    return None


_QUICK_TARGETS = (
    "(--quick: inputs 5x smaller than the issue's, some of which fit in cache; indicative only, "
    "the full run is the measure)"
)


def kernel_targets(rows: list[dict]) -> list[dict]:
    """Issue #5's kernel target: each kernel at least 1.5x faster than PyTorch CPU (medians)."""
    out = []
    for r in rows:
        if r["method"] == "lossctl" and r.get("x_vs_torch"):
            x = r["x_vs_torch"]
            out.append(
                {
                    "target": f"{r['kernel']} kernel >= 1.5x faster than torch",
                    "got": f"{x:.2f}x (of the fastest runs: {r['x_vs_torch_min']:.2f}x)",
                    "ok": x >= 1.5,
                }
            )
    return out


def e2e_targets(rows: list[dict]) -> list[dict]:
    """The targets of issue #5, checked on this run's numbers."""
    out = []
    lc = _find(rows, "parquet: lossctl compute cross-entropy")
    rt = _find(rows, "parquet: pyarrow.read_table + torch")
    if lc and rt:
        sp = rt["wall_s"] / lc["wall_s"]
        rss = lc["peak_rss_mb"] / rt["peak_rss_mb"]
        out.append(
            {"target": "Parquet CE >= 2x faster than pyarrow.read_table + torch", "got": f"{sp:.2f}x", "ok": sp >= 2}
        )
        out.append({"target": "Parquet CE peak RSS <= 1/4 of that script's", "got": f"{rss:.2f}", "ok": rss <= 0.25})
    ln = _find(rows, "npy: lossctl compute cross-entropy")
    mm = _find(rows, "npy: memory-map + sum (floor)")
    if ln and mm:
        r = ln["wall_s"] / mm["wall_s"]
        out.append({"target": "NPY CE <= 2.5x the time of memory-map + sum", "got": f"{r:.2f}x", "ok": r <= 2.5})
    h = _find(rows, "start-up: lossctl --help")
    if h:
        out.append({"target": "lossctl --help < 0.15 s", "got": f"{h['wall_s']:.3f} s", "ok": h["wall_s"] < 0.15})
    for fmt in ("NPY", "CSV"):
        t = _find(rows, f"start-up: lossctl compute ce, 10 rows {fmt}")
        if t:
            out.append(
                {"target": f"10-row compute ({fmt}) < 0.35 s", "got": f"{t['wall_s']:.3f} s", "ok": t["wall_s"] < 0.35}
            )
    return out


def print_e2e(rows: list[dict], info: dict) -> None:
    print(
        f"\n  whole processes — {info['rows']:,} x {info['classes']} float32 logits "
        f"(Parquet {info['parquet_mb']:.0f} MB, {info['parquet_row_groups']} row group(s)); "
        f"float64 reference mean CE {info['reference_mean_ce']:.6f}"
    )
    print(f"    {'case':<46}{'wall s':>8}{'min s':>8}{'peak RSS MB':>13}{'mean CE':>12}")
    for r in rows:
        v = f"{r['value']:.6f}" if r["value"] is not None and r["group"] != "startup" else ""
        if r["case"].startswith("npy: memory-map"):
            v = ""
        print(f"    {r['case']:<46}{r['wall_s']:>8.3f}{r['wall_min_s']:>8.3f}{r['peak_rss_mb']:>13.0f}{v:>12}")


def profile_lossctl(tmp: Path, out_dir: Path) -> dict:
    """cProfile of `lossctl compute cross-entropy` on the NPY and Parquet files."""
    import pstats

    p = tmp
    runs = {
        "npy": [str(p / "logits.npy"), str(p / "labels.npy")],
        "parquet": [f"{p / 'logits.parquet'}:logits", f"{p / 'logits.parquet'}:label"],
    }
    paths = {}
    for name, srcs in runs.items():
        prof = tmp / f"{name}.prof"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cProfile",
                "-o",
                str(prof),
                "-m",
                "lossctl",
                "compute",
                "cross-entropy",
                *srcs,
                "-b",
            ],
            check=True,
            capture_output=True,
        )
        txt = out_dir / f"profile-{name}.txt"
        with open(txt, "w") as fh:
            st = pstats.Stats(str(prof), stream=fh)
            st.strip_dirs().sort_stats("tottime").print_stats(30)
            st.sort_stats("cumulative").print_stats(40)
        paths[name] = str(txt)
        print(f"  wrote {txt}")
    return paths


# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# scale-out: the same 10-shard dataset on the local engine and on a 2-worker Dask cluster
# ---------------------------------------------------------------------------


def write_shards(tmp: Path, shards: int, n: int, c: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp / "shards"
    rng = np.random.default_rng(9)
    for i in range(shards):
        d = root / f"split={'train' if i < shards - 2 else 'val'}"
        d.mkdir(parents=True, exist_ok=True)
        x = rng.standard_normal((n, c), dtype=np.float32) * 3
        y = rng.integers(0, c, size=n)
        t = pa.table({"logits": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), c), "label": y})
        pq.write_table(t, str(d / f"part-{i:03d}.parquet"))
    return root


def run_scaleout(sz: dict, reps: int, tmp: Path) -> dict | None:
    """Wall time and peak memory per process: local engine vs a 2-worker Dask cluster, same shards."""
    try:
        import distributed
    except ImportError:
        note("the dask extra is not installed (pip install 'lossctl[dask]'): scale-out skipped.")
        return None
    shards, n, c = sz["scaleout"]
    root = write_shards(tmp, shards, n, c)
    mb = sum(f.stat().st_size for f in root.rglob("*.parquet")) / 1e6
    print(f"  {shards} Parquet shards of {n:,} x {c} float32 logits ({mb:.0f} MB), grouped by split", flush=True)
    base = [sys.executable, "-m", "lossctl", "compute", "cross-entropy", f"{root}:logits", f"{root}:label"]
    base += ["--group-by", "split", "-f", "json"]
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    )
    client = distributed.Client(cluster)
    try:
        cmds = {
            "local engine": base,
            "dask, running 2-worker cluster (--scheduler)": base
            + ["--engine", "dask", "--scheduler", cluster.scheduler_address],
            "dask, --workers 2 (cluster started by the run)": base + ["--engine", "dask", "--workers", "2"],
        }
        results: dict[str, list[dict]] = {k: [] for k in cmds}
        for k, cmd in cmds.items():  # warm-up
            r = _run_wrapped(cmd)
            if r["rc"] != 0:
                raise RuntimeError(f"{k} failed:\n{r['err']}")
        names = list(cmds)
        for i in range(reps):
            for k in names[i % len(names) :] + names[: i % len(names)]:
                results[k].append(_run_wrapped(cmds[k]))
        worker_peaks = [v / 1024 for v in client.run(resource_maxrss_kb).values()]
    finally:
        client.close()
        cluster.close()
    rows = []
    for k, rs in results.items():
        rows.append(
            {
                "case": k,
                "wall_s": statistics.median(r["wall"] for r in rs),
                "wall_min_s": min(r["wall"] for r in rs),
                "peak_rss_mb": statistics.median(r["rss_kb"] for r in rs) / 1024,
                "value": _value(rs[-1]["out"]),
                "reps": len(rs),
            }
        )
    local = rows[0]["wall_s"]
    print(f"  {'run':<50}{'wall s':>9}{'x local':>9}{'peak RSS MB':>13}")
    for r in rows:
        r["x_local"] = local / r["wall_s"]
        print(f"  {r['case']:<50}{r['wall_s']:>9.3f}{r['x_local']:>9.2f}{r['peak_rss_mb']:>13.0f}")
    print(
        "  peak RSS: the lossctl process (for --workers 2, the largest process of its tree); "
        f"each worker of the running cluster: {', '.join(f'{w:.0f}' for w in worker_peaks)} MB",
        flush=True,
    )
    values = [r["value"] for r in rows]
    if None in values or any(abs(v - values[0]) > 1e-12 * abs(values[0]) for v in values):
        raise RuntimeError(f"the engines disagree: {values}")
    return {"shards": shards, "rows": shards * n, "classes": c, "mb": mb, "runs": rows, "worker_peak_mb": worker_peaks}


def resource_maxrss_kb() -> int:
    """This process's peak RSS since it started (VmHWM: not the fork parent's, as ru_maxrss may be)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# ---------------------------------------------------------------------------
# scale: an aggregate-only run over a 10 GB input in bounded memory
# ---------------------------------------------------------------------------


def write_big_npy(tmp: Path, gb: float, c: int = 100) -> dict:
    """float32 logits (N, c) of about ``gb`` GB plus int64 labels, written block by block."""
    n = int(gb * 1e9 // (c * 4))
    block = 1 << 20
    x_path, y_path = tmp / "big_x.npy", tmp / "big_y.npy"
    rng = np.random.default_rng(5)
    x = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.float32, shape=(n, c))
    y = np.lib.format.open_memmap(y_path, mode="w+", dtype=np.int64, shape=(n,))
    for start in range(0, n, block):
        stop = min(n, start + block)
        x[start:stop] = rng.standard_normal((stop - start, c), dtype=np.float32)
        y[start:stop] = rng.integers(0, c, size=stop - start)
    x.flush()
    y.flush()
    del x, y
    return {
        "rows": n,
        "classes": c,
        "bytes": os.path.getsize(x_path) + os.path.getsize(y_path),
        "x": x_path,
        "y": y_path,
    }


def run_scale(gb: float, tmp: Path) -> dict:
    """Peak RSS of `lossctl compute cross-entropy` over a generated ~gb GB NPY input (deleted after)."""
    t0 = time.perf_counter()
    data = write_big_npy(tmp, gb)
    gen_s = time.perf_counter() - t0
    try:
        r = _run_wrapped(
            [sys.executable, "-m", "lossctl", "compute", "cross-entropy", str(data["x"]), str(data["y"]), "-b"]
        )
    finally:
        for key in ("x", "y"):
            os.unlink(data[key])
    if r["rc"] != 0:
        raise RuntimeError(r["err"])
    out = {
        "input_gb": data["bytes"] / 1e9,
        "rows": data["rows"],
        "classes": data["classes"],
        "wall_s": r["wall"],
        "peak_rss_mb": r["rss_kb"] / 1024,
        "generate_s": gen_s,
        "ok": r["rss_kb"] / 1024 < 1024,
    }
    print(
        f"  {out['input_gb']:.1f} GB input ({data['rows']:,} x {data['classes']} float32 + labels): "
        f"{out['wall_s']:.1f} s, peak RSS {out['peak_rss_mb']:.0f} MB (target < 1024 MB)",
        flush=True,
    )
    return out


# ---------------------------------------------------------------------------
# api: lossctl.compute over in-memory NumPy arrays in bounded memory; `import lossctl` time
# ---------------------------------------------------------------------------

_API_CHILD = r"""
import json, sys
import numpy as np
import lossctl


def rss_kb(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])


n = int(sys.argv[1])
lossctl.compute("mse", np.zeros(10), np.ones(10))  # every module the run needs is imported now
before = rss_kb("VmRSS")
rng = np.random.default_rng(0)
pred = rng.standard_normal(n)
target = rng.standard_normal(n)
inputs = pred.nbytes + target.nbytes
r = lossctl.compute("mse", pred, target)
peak = rss_kb("VmHWM")
ok_value = abs(r.value - float(np.mean((pred - target) ** 2))) <= 1e-12 * r.value
print(json.dumps({"rows": n, "input_mb": inputs / 2**20, "baseline_mb": before / 1024, "peak_mb": peak / 1024,
                  "ratio": (peak - before) * 1024 / inputs, "value_ok": ok_value}))
"""


def run_api_memory(rows: int) -> dict:
    """Peak memory of lossctl.compute("mse", pred, target) on two float64 arrays of ``rows`` rows, in a
    fresh process: (peak RSS - RSS before the inputs existed) / the inputs' bytes. Target: <= 1.5
    (the inputs themselves, plus at most half their size for the run)."""
    out = subprocess.run([sys.executable, "-c", _API_CHILD, str(rows)], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    res["ok"] = res["ratio"] <= 1.5 and res["value_ok"]
    return res


def lossctl_import_ms(reps: int = 5) -> float:
    """lossctl's own cumulative import time (`python -X importtime -c "import lossctl"`), the best of ``reps``."""
    best = None
    for _ in range(reps):
        cmd = [sys.executable, "-X", "importtime", "-c", "import lossctl"]
        out = subprocess.run(cmd, capture_output=True, text=True)
        us = [int(line.split("|")[1]) for line in out.stderr.splitlines() if line.rstrip().endswith("| lossctl")]
        if us:
            best = min(best, us[-1]) if best is not None else us[-1]
    return (best or 0) / 1000


def run_api(rows: int) -> dict:
    mem = run_api_memory(rows)
    imp = lossctl_import_ms()
    print(
        f"  lossctl.compute('mse', ...) on {rows:,} in-memory float64 rows ({mem['input_mb']:.0f} MB of inputs): "
        f"peak {mem['ratio']:.2f}x the inputs (target <= 1.5x); import lossctl {imp:.1f} ms (target < 30 ms)",
        flush=True,
    )
    return {"memory": mem, "import_ms": imp, "ok": mem["ok"] and imp < 30}


# ---------------------------------------------------------------------------
# jsonl: token cross-entropy over a ~1 GB JSON Lines log of ragged log-probs, streamed
# ---------------------------------------------------------------------------


def write_big_jsonl(tmp: Path, gb: float) -> dict:
    """A JSON Lines log of about ``gb`` GB: one sequence per line, 16-512 per-token log-probs in a
    nested field, plus fields the run does not use. One 4 MB block of lines is written again and
    again, so the exact mean token NLL is that of the block (an independent check of the value)."""
    rng = np.random.default_rng(7)
    lines, nll, tokens = [], 0.0, 0
    size = 0
    while size < 4 << 20:
        t = int(rng.integers(16, 513))
        lp = np.round(-rng.gamma(0.8, 2.0, t), 6)
        nll += float(-lp.sum())
        tokens += t
        line = (
            '{"id": %d, "text": "x", "choices": [{"logprobs": {"token_logprobs": [%s]}}]}\n'
            % (len(lines), ", ".join(f"{v:.6f}" for v in lp))
        ).encode()
        lines.append(line)
        size += len(line)
    block = b"".join(lines)
    reps = max(1, int(gb * 1e9 // len(block)))
    path = tmp / "big_log.jsonl"
    with open(path, "wb") as fh:
        for _ in range(reps):
            fh.write(block)
    return {"path": path, "bytes": os.path.getsize(path), "rows": reps * len(lines), "mean": nll / tokens}


def run_jsonl(gb: float, tmp: Path) -> dict:
    """Peak RSS and wall time of `lossctl compute lm` over the generated JSONL (deleted after)."""
    t0 = time.perf_counter()
    data = write_big_jsonl(tmp, gb)
    gen_s = time.perf_counter() - t0
    try:
        r = _run_wrapped(
            [sys.executable, "-m", "lossctl", "compute", "lm",
             f"{data['path']}:choices[0].logprobs.token_logprobs", "-b"]
        )
    finally:
        os.unlink(data["path"])
    if r["rc"] != 0:
        raise RuntimeError(r["err"])
    value = _value(r["out"])
    out = {
        "input_gb": data["bytes"] / 1e9,
        "rows": data["rows"],
        "wall_s": r["wall"],
        "peak_rss_mb": r["rss_kb"] / 1024,
        "generate_s": gen_s,
        "value": value,
        "value_ok": value is not None and abs(value - data["mean"]) <= 1e-9 * data["mean"],
        "ok": r["rss_kb"] / 1024 < 300,
    }
    print(
        f"  {out['input_gb']:.2f} GB JSONL ({data['rows']:,} sequences): {out['wall_s']:.1f} s, "
        f"{out['input_gb'] * 1e3 / out['wall_s']:.0f} MB/s, peak RSS {out['peak_rss_mb']:.0f} MB (target < 300 MB); "
        f"value {'matches' if out['value_ok'] else 'DIFFERS from'} the block's mean token NLL",
        flush=True,
    )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument(
        "--only",
        choices=["kernels", "e2e", "split", "peers", "scaleout", "scale", "api", "jsonl", "startup"],
        help="run one section only",
    )
    ap.add_argument(
        "--jsonl-gb",
        type=float,
        help="size of the JSON Lines log for token CE (default 1 GB, 0.1 GB with --quick; 0 skips)",
    )
    ap.add_argument(
        "--scale-gb", type=float, help="size of the bounded-memory input (default 10 GB, 1 GB with --quick; 0 skips)"
    )
    ap.add_argument("--reps", type=int, help="repetitions per measurement (default 7, 3 with --quick)")
    ap.add_argument("--profile", action="store_true", help="also write cProfile listings of lossctl compute")
    ap.add_argument("--out", default=str(HERE / "results" / "latest.json"), help="where to write the JSON")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        metavar="S",
        help="before each section wait up to S seconds for other processes to go idle (default 60)",
    )
    args = ap.parse_args(argv)
    sz = dict(QUICK if args.quick else FULL)
    reps = args.reps or sz["reps"]
    e2e_reps = args.reps or sz["e2e_reps"]

    info = machine_info()
    print(
        f"lossctl benchmark ({'quick' if args.quick else 'full'}) on {info['cpu']}, {info['cores']} cores, "
        f"{info['memory_gb']} GB; numpy {info['numpy']}, pyarrow {info['pyarrow']}, torch {info['torch']}, "
        f"scikit-learn {info['sklearn']}, pandas {info['pandas']}",
        flush=True,
    )
    load = wait_quiet(args.wait_quiet)
    print(f"  background CPU load from other processes: {100 * (load or 0):.0f}%")
    bw = measure_bandwidth(sz["bandwidth_bytes"], max(3, reps))
    print(
        f"  memory read bandwidth (sum of {sz['bandwidth_bytes'] / 1e9:.1f} GB float32): "
        f"{bw['one_thread_gbs']:.1f} GB/s one thread, {bw['all_cores_gbs']:.1f} GB/s on {CORES} cores",
        flush=True,
    )
    report: dict = {"mode": "quick" if args.quick else "full", "machine": info, "bandwidth": bw}
    if args.only in (None, "kernels"):
        print("\nkernels on in-memory arrays (x vs torch = torch's time / this time; > 1 is faster than torch)")
        report["kernels"] = run_kernels(sz, bw, reps, args.wait_quiet)
        gc.collect()
    tmp = Path(tempfile.mkdtemp(prefix="lossctl-bench-"))
    try:
        if args.only in (None, "startup"):  # issue #14: --help <= 0.1 s, a 10-row compute <= 0.2 s
            report["startup"] = __import__("startup").run_startup(reps)
        if args.only in (None, "e2e"):
            rows, e2e_info = run_e2e(sz, e2e_reps, tmp, args.wait_quiet)
            report["e2e"] = rows
            report["e2e_data"] = e2e_info
            report["targets"] = kernel_targets(report.get("kernels", [])) + e2e_targets(rows)
            print("\n  targets (issue #5)")
            if args.quick:
                print(f"    {_QUICK_TARGETS}")
            for t in report["targets"]:
                print(f"    [{'ok' if t['ok'] else 'MISS'}] {t['target']}: {t['got']}")
            if args.profile:
                out_dir = Path(args.out).parent
                out_dir.mkdir(parents=True, exist_ok=True)
                report["profiles"] = profile_lossctl(tmp, out_dir)
        if args.only in (None, "split"):
            from peers import run_split

            print("\nsplit: read / kernel / statistics / report per loss family, 1 and 2 threads (LOSSCTL_THREADS)")
            report["split"] = run_split(args.quick, e2e_reps, tmp)
        if args.only in (None, "peers"):
            from peers import run_peers

            print("\npeers: lossctl vs DuckDB, polars and the same-stack floor on the same files (whole processes)")
            report["peers"] = run_peers(args.quick, e2e_reps, tmp, _run_wrapped, lambda m: _version(m) is not None)
        if args.only in (None, "scaleout"):
            print("\nscale-out: one sharded dataset, local engine vs --engine dask on 2 worker processes")
            report["scaleout"] = run_scaleout(sz, e2e_reps, tmp)
        scale_gb = args.scale_gb if args.scale_gb is not None else (1.0 if args.quick else 10.0)
        if args.only in (None, "scale") and scale_gb > 0:
            free_gb = shutil.disk_usage(tmp).free / 1e9
            if free_gb < scale_gb * 1.2:
                note(f"scale: {free_gb:.0f} GB free, not enough for a {scale_gb:g} GB input; skipped")
            else:
                print(f"\nscale: an aggregate-only run over a generated {scale_gb:g} GB NPY (deleted afterwards)")
                report["scale"] = run_scale(scale_gb, tmp)
                report.setdefault("targets", []).append(
                    {
                        "target": f"aggregate-only run over {report['scale']['input_gb']:.1f} GB: peak RSS < 1 GB",
                        "ok": report["scale"]["ok"],
                        "got": f"{report['scale']['peak_rss_mb']:.0f} MB in {report['scale']['wall_s']:.1f} s",
                    }
                )
        if args.only in (None, "api"):
            print("\napi: in-memory inputs through lossctl.compute (issue #15)")
            report["api"] = run_api(10_000_000)
            report.setdefault("targets", []).append(
                {
                    "target": "lossctl.compute('mse') on 10,000,000 in-memory rows: peak <= 1.5x the inputs; "
                    "import lossctl < 30 ms",
                    "ok": report["api"]["ok"],
                    "got": f"{report['api']['memory']['ratio']:.2f}x, {report['api']['import_ms']:.1f} ms",
                }
            )
        jsonl_gb = args.jsonl_gb if args.jsonl_gb is not None else (0.1 if args.quick else 1.0)
        if args.only in (None, "jsonl") and jsonl_gb > 0:
            print(f"\njsonl: token cross-entropy over a generated {jsonl_gb:g} GB JSON Lines log (deleted afterwards)")
            report["jsonl"] = run_jsonl(jsonl_gb, tmp)
            report.setdefault("targets", []).append(
                {
                    "target": f"token CE over {report['jsonl']['input_gb']:.2f} GB of JSONL: peak RSS < 300 MB",
                    "ok": report["jsonl"]["ok"] and report["jsonl"]["value_ok"],
                    "got": f"{report['jsonl']['peak_rss_mb']:.0f} MB in {report['jsonl']['wall_s']:.1f} s",
                }
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if "kernels" in report:
        print("\nsummary: lossctl kernels vs torch (mean / per-sample)")
        for r in report["kernels"]:
            if r["method"] == "lossctl" and r["x_vs_torch"]:
                print(
                    f"    {r['kernel']:<26}{r['ms']:>8.1f} ms  {r['x_vs_torch']:.2f}x vs torch, "
                    f"{r['x_vs_torch_none']:.2f}x vs torch reduction='none'"
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    md = out.with_suffix(".md")
    md.write_text(markdown(report))
    print(f"\nwrote {out} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
