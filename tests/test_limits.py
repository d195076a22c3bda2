"""Bounded under limits (issue 13 items 7, 8, 13): memory caps, high-cardinality --group-by,
and remote endpoints that never answer.

Each run goes through the real CLI; the hostile conditions (an address-space cap, a listener
that accepts and never answers) are set up in the test itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import assert_clean_error, run_cli, write_csv, write_parquet


def _lossctl(args, env=None, timeout=60, preexec_fn=None):
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "lossctl", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )
    return proc, time.monotonic() - t0


# ---------------------------------------------------------------------------
# #13.13 a remote endpoint that accepts connections and never answers
# ---------------------------------------------------------------------------


@pytest.fixture
def silent_endpoint():
    """A TCP listener on loopback that accepts every connection and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.2)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    host, port = srv.getsockname()
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
    )
    env.pop("LOSSCTL_REMOTE_TIMEOUT", None)
    yield env, f"http://{host}:{port}"
    stop.set()
    th.join(timeout=5)
    for c in conns:
        c.close()
    srv.close()


def _assert_did_not_answer(proc, elapsed, endpoint, *needles, report_written=False):
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    # Outputs are committed (uploaded) after the report is rendered, so a failed upload can follow
    # a report on stdout; the exit code and the error on stderr say the run failed.
    assert (proc.stdout == "") != report_written
    assert f"{endpoint} did not answer within 1 s" in proc.stderr, proc.stderr
    assert "--remote-timeout" in proc.stderr
    for n in needles:
        assert n in proc.stderr, (n, proc.stderr)
    # Two requests of two attempts of 1 s each, plus start-up; the SDK's defaults took ~99 s.
    assert elapsed < 15, elapsed


def test_silent_endpoint_input_fails_fast(silent_endpoint):
    env, endpoint = silent_endpoint
    proc, elapsed = _lossctl(
        ["compute", "mse", "s3://bucket/preds.parquet:p", "s3://bucket/preds.parquet:t", "--remote-timeout", "1"],
        env=env,
    )
    _assert_did_not_answer(proc, elapsed, endpoint, "s3://bucket/preds.parquet")


def test_silent_endpoint_save_state_fails_fast_and_commits_nothing(silent_endpoint, tmp_path):
    env, endpoint = silent_endpoint
    p = write_csv(tmp_path / "c.csv", {"p": np.arange(5.0), "t": np.zeros(5)})
    before = set(os.listdir(tmp_path))
    proc, elapsed = _lossctl(
        ["compute", "mse", f"{p}:p", f"{p}:t", "--save-state", "s3://bucket/s.json", "--remote-timeout", "1"],
        env=env,
    )
    _assert_did_not_answer(
        proc, elapsed, endpoint, "--save-state s3://bucket/s.json", "upload failed", report_written=True
    )
    assert set(os.listdir(tmp_path)) == before


def test_remote_timeout_from_environment_in_process(silent_endpoint, monkeypatch):
    env, endpoint = silent_endpoint
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.setenv("LOSSCTL_REMOTE_TIMEOUT", "1")
    t0 = time.monotonic()
    res = run_cli(["compute", "mse", "s3://bucket/a.parquet:p", "s3://bucket/a.parquet:t"])
    assert_clean_error(res, 1, f"{endpoint} did not answer within 1 s", "s3://bucket/a.parquet")
    assert time.monotonic() - t0 < 15


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf"])
def test_remote_timeout_must_be_positive(bad, tmp_path):
    p = write_csv(tmp_path / "c.csv", {"p": np.arange(3.0), "t": np.zeros(3)})
    res = run_cli(["compute", "mse", f"{p}:p", f"{p}:t", "--remote-timeout", bad])
    assert_clean_error(res, 2, "--remote-timeout must be a positive number of seconds")


def test_bad_remote_timeout_environment_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSCTL_REMOTE_TIMEOUT", "soon")
    res = run_cli(["compute", "mse", "s3://bucket/a.parquet:p", "s3://bucket/a.parquet:t"])
    assert_clean_error(res, 2, "LOSSCTL_REMOTE_TIMEOUT must be a positive number of seconds", "'soon'")


# ---------------------------------------------------------------------------
# #13.8 high-cardinality --group-by: a bounded number of groups, found early
# ---------------------------------------------------------------------------


def _grouped_input(tmp_path, n_groups=40, n=6000, seed=3):
    """Predictions, targets and a group column with groups of very different sizes (one of more
    than 1024 rows), a NaN row and an infinite loss in one group."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, size=n)
    g[: n // 3] = 7  # one large group
    p = rng.normal(size=n) * rng.choice([1e-3, 1.0, 1e3], size=n)
    t = rng.normal(size=n)
    p[5] = np.nan
    p[11] = 1e300  # its squared error overflows to inf
    g[11] = 3
    return write_csv(tmp_path / "g.csv", {"p": p, "t": t, "g": g}), p, t, g


def _brute_groups(p, t, g):
    """Per-group count, mean loss and sample std in float64 and exactly rounded sums (the oracle)."""
    import math

    out = {}
    for key in np.unique(g):
        sel = (g == key) & ~np.isnan(p)
        with np.errstate(over="ignore"):
            loss = (p[sel] - t[sel]) ** 2
        n = len(loss)
        mean = math.fsum(loss.tolist()) / n
        finite = np.isfinite(loss).all()
        std = math.sqrt(math.fsum(((loss - mean) ** 2).tolist()) / (n - 1)) if finite and n > 1 else None
        out[int(key)] = (n, mean, std, float(loss.min()), float(loss.max()))
    return out


@pytest.mark.parametrize("chunk", [None, 97])
def test_group_values_match_a_brute_force_oracle(tmp_path, chunk):
    path, p, t, g = _grouped_input(tmp_path)
    args = ["compute", "mse", f"{path}:p", f"{path}:t", "--group-by", "g", "--nan", "omit", "-f", "json"]
    res = run_cli(args + ([] if chunk is None else ["--chunk-size", str(chunk)]))
    assert res.code == 0, res.err
    oracle = _brute_groups(p, t, g)
    got = {int(r["group"]): r for r in res.json["groups"]}
    assert sorted(got) == sorted(oracle)
    for key, (n, mean, std, lo, hi) in oracle.items():
        r = got[key]
        assert r["count"] == n
        if np.isfinite(mean):
            assert r["value"] == pytest.approx(mean, rel=1e-14, abs=0)
            assert r["stats"]["mean"] == pytest.approx(mean, rel=1e-13, abs=0)
            assert r["stats"]["std"] == pytest.approx(std, rel=1e-10, abs=0)
            assert (r["stats"]["min"], r["stats"]["max"]) == (lo, hi)
        else:
            assert key == 3 and r["value"] == "inf"


def test_group_values_do_not_depend_on_chunk_size(tmp_path):
    path, *_ = _grouped_input(tmp_path, n_groups=300, n=5000)
    base = ["compute", "mse", f"{path}:p", f"{path}:t", "--group-by", "g", "--nan", "omit", "-f", "json"]
    runs = [run_cli(base + extra) for extra in ([], ["--chunk-size", "13"], ["--chunk-size", "1000"])]
    assert all(r.code == 0 for r in runs), [r.err for r in runs]
    # Chunks are summed exactly and combined with compensation: equal to the last bits.
    base_groups = runs[0].json["groups"]
    for run in runs[1:]:
        groups = run.json["groups"]
        assert [(r["group"], r["count"]) for r in groups] == [(r["group"], r["count"]) for r in base_groups]
        for a, b in zip(groups, base_groups):
            assert float(a["value"]) == pytest.approx(float(b["value"]), rel=4e-16, abs=0)


def test_too_many_groups_is_an_error_found_in_the_first_chunk(tmp_path):
    """200,000 distinct values, a limit of 50: refused after the first chunk, not after
    building 200,000 group states."""
    n = 200_000
    path = write_parquet(tmp_path / "u.parquet", {"p": np.zeros(n), "t": np.ones(n), "u": np.arange(n)})
    args = ["compute", "mse", f"{path}:p", f"{path}:t", "--group-by", "u", "--max-groups", "50"]
    t0 = time.monotonic()
    res = run_cli(args + ["--chunk-size", "1000"])
    assert_clean_error(res, 1, "--group-by u: more than 50 distinct values", "first 1000 rows", "--max-groups")
    assert time.monotonic() - t0 < 10


def test_default_group_limit_is_10000(tmp_path):
    n = 10_001
    path = write_parquet(tmp_path / "u.parquet", {"p": np.zeros(n), "t": np.ones(n), "u": np.arange(n)})
    res = run_cli(["compute", "mse", f"{path}:p", f"{path}:t", "--group-by", "u"])
    assert_clean_error(res, 1, "more than 10000 distinct values", "--max-groups 10000")


def test_exactly_max_groups_is_allowed_and_ignored_rows_count(tmp_path):
    # Rows only ignored or NaN still make a group: a limit counts them too.
    path = write_csv(
        tmp_path / "c.csv",
        {"p": np.array([1.0, 2.0, np.nan, 4.0]), "t": np.zeros(4), "g": np.array([1, 1, 2, 3])},
    )
    base = ["compute", "mse", f"{path}:p", f"{path}:t", "--group-by", "g", "--nan", "omit", "-f", "json"]
    ok = run_cli(base + ["--max-groups", "3"])
    assert ok.code == 0, ok.err
    assert [(r["group"], r["count"]) for r in ok.json["groups"]] == [("1", 2), ("2", 0), ("3", 1)]
    assert_clean_error(run_cli(base + ["--max-groups", "2"]), 1, "more than 2 distinct values")


@pytest.mark.parametrize("bad", ["0", "-3"])
def test_max_groups_must_be_positive(tmp_path, bad):
    path = write_csv(tmp_path / "c.csv", {"p": np.zeros(3), "t": np.zeros(3), "g": np.arange(3)})
    res = run_cli(["compute", "mse", f"{path}:p", f"{path}:t", "--group-by", "g", "--max-groups", bad])
    assert_clean_error(res, 2, "--max-groups", "at least 1")


def test_max_groups_config_key(tmp_path):
    path = write_csv(tmp_path / "c.csv", {"p": np.zeros(5), "t": np.ones(5), "g": np.arange(5)})
    cfg = tmp_path / "checks.toml"
    cfg.write_text(
        f"""
[[checks]]
name = "few"
loss = "mse"
inputs = ["{path}:p", "{path}:t"]
group-by = "g"
max-groups = 4

[[checks]]
name = "enough"
loss = "mse"
inputs = ["{path}:p", "{path}:t"]
group-by = "g"
max-groups = 5
max = 2.0
"""
    )
    res = run_cli(["check", str(cfg), "-f", "json"])
    assert res.code == 1, res.err
    by = {c["name"]: c for c in res.json["checks"]}
    assert by["few"]["status"] == "error" and "more than 4 distinct values" in by["few"]["error"]
    assert by["enough"]["status"] == "pass"


# ---------------------------------------------------------------------------
# #13.7 memory caps: finish, or fail cleanly with a memory message, in bounded time
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def half_million_rows(tmp_path_factory):
    """500,000 rows as CSV and Parquet: with the default allocators and pools, the CSV run hung
    forever under a 600 MB address-space cap and died with exit 127 at 400 MB."""
    import math

    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    d = tmp_path_factory.mktemp("capped")
    rng = np.random.default_rng(5)
    p, t = rng.normal(size=500_000), rng.normal(size=500_000)
    table = pa.table({"p": p, "t": t})
    pcsv.write_csv(table, d / "m.csv")
    pq.write_table(table, d / "m.parquet")
    return d, math.fsum(((p - t) ** 2).tolist()) / len(p)


def _capped(mib: int):
    def set_cap():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mib << 20, mib << 20))

    return set_cap


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS caps the address space on Linux")
@pytest.mark.parametrize("cap_mib", [572, 390])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_address_space_cap_finishes_or_fails_cleanly(half_million_rows, cap_mib, fmt):
    d, expected = half_million_rows
    env = {k: v for k, v in os.environ.items() if k not in ("ARROW_DEFAULT_MEMORY_POOL", "OMP_NUM_THREADS")}
    path = d / f"m.{fmt}"
    proc, elapsed = _lossctl(
        ["compute", "mse", f"{path}:p", f"{path}:t", "-b"], env=env, timeout=90, preexec_fn=_capped(cap_mib)
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1), (proc.returncode, proc.stderr)  # never an abort (-6) or 127
    if proc.returncode == 0:
        assert float(proc.stdout) == pytest.approx(expected, rel=1e-13)
    else:
        assert "out of memory under a memory limit of" in proc.stderr, proc.stderr
        assert proc.stdout == ""
    # At these caps the run is expected to finish, not merely to fail well.
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS caps the address space on Linux")
def test_too_small_cap_is_a_clean_memory_error(half_million_rows):
    d, _ = half_million_rows
    path = d / "m.parquet"
    proc, _ = _lossctl(["compute", "mse", f"{path}:p", f"{path}:t"], timeout=90, preexec_fn=_capped(240))
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert "out of memory under a memory limit of 240 MiB" in proc.stderr, proc.stderr


def test_memory_error_at_the_boundary(monkeypatch, tmp_path):
    """An allocation that fails inside a reader is reported as memory, not as a corrupt file."""
    import lossctl.engine as engine

    def boom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(engine, "run_on", boom)
    path = write_csv(tmp_path / "c.csv", {"p": np.zeros(3), "t": np.zeros(3)})
    res = run_cli(["compute", "mse", f"{path}:p", f"{path}:t"])
    assert_clean_error(res, 1, "out of memory", "--chunk-size")


def test_limits_are_read_from_rlimit_and_cgroup(monkeypatch):
    import resource

    from lossctl import limits

    monkeypatch.setattr(resource, "getrlimit", lambda what: (300 << 20, resource.RLIM_INFINITY))
    monkeypatch.setattr(limits, "_CGROUP_FILES", ())
    assert limits.memory_limit() == 300 << 20
    monkeypatch.setattr(resource, "getrlimit", lambda what: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert limits.memory_limit() is None
    # Only a small cap changes anything.
    assert limits.configure(64 << 30) is None


@pytest.mark.slow
def test_max_groups_holds_across_dask_tasks(tmp_path, monkeypatch):
    """Each task sees few groups; the states merged in the client pass the limit: an error."""
    distributed = pytest.importorskip("distributed", reason="the dask extra")
    from lossctl import cluster

    monkeypatch.setattr(cluster, "TASK_ROWS", 300)
    n = 2000
    f = write_parquet(
        tmp_path / "one.parquet",
        {"p": np.zeros(n), "t": np.ones(n), "g": np.arange(n) // 100},  # 20 groups, 3 per task
        row_group_size=100,
    )
    saved = dict(os.environ)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as lc:
        os.environ.clear()
        os.environ.update(saved)
        base = ["compute", "mse", f"{f}:p", f"{f}:t", "--group-by", "g", "--engine", "dask", "--scheduler"]
        res = run_cli(base + [lc.scheduler_address, "--max-groups", "10"])
        assert_clean_error(res, 1, "--group-by g: more than 10 distinct values", "parts)", "--max-groups 10")
        ok = run_cli(base + [lc.scheduler_address, "--max-groups", "20", "-f", "json"])
        assert ok.code == 0, ok.err
        assert len(ok.json["groups"]) == 20


def test_exact_values_kept_over_all_groups_are_bounded(tmp_path, monkeypatch):
    """Many groups must not each keep 65,536 exact values: past a total budget the largest
    groups switch to their quantile sketch, and say so."""
    from lossctl import aggregate

    monkeypatch.setattr(aggregate, "GROUPS_KEPT_BUDGET", 1500)
    rng = np.random.default_rng(8)
    n = 3000
    g = np.repeat([0, 1, 2], [1600, 1000, 400])
    p, t = rng.normal(size=n), rng.normal(size=n)
    path = write_csv(tmp_path / "c.csv", {"p": p, "t": t, "g": g})
    res = run_cli(["compute", "mse", f"{path}:p", f"{path}:t", "--group-by", "g", "-f", "json", "--chunk-size", "500"])
    assert res.code == 0, res.err
    by = {r["group"]: r["stats"] for r in res.json["groups"]}
    assert by["0"]["quantiles"].startswith("approximate")  # the largest group
    assert by["2"]["quantiles"] == "exact"
    loss = (p - t) ** 2
    for key, stats in by.items():
        sel = loss[g == int(key)]
        assert stats["count"] == len(sel)
        assert stats["p50"] == pytest.approx(float(np.median(sel)), rel=0.011)
        assert stats["mean"] == pytest.approx(float(sel.mean()), rel=1e-13)
