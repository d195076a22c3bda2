"""--engine dask: tasks on a distributed.LocalCluster (2 worker processes on loopback) give the
report of the local engine, per-sample parts are written by the workers, and the client reads
no data.

These tests need the ``dask`` extra (``pip install 'lossctl[dask]'``); `.ci/run` installs it.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from conftest import SAMPLE, assert_clean_error, write_parquet

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed: pip install 'lossctl[dask]'")

REL = 1e-12


@pytest.fixture(scope="module")
def scheduler():
    """A cluster of 2 worker processes on loopback, shared by the tests of this module."""
    saved = dict(os.environ)  # LocalCluster sets OMP_NUM_THREADS=1 etc. here too: not for the other tests
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    )
    os.environ.clear()
    os.environ.update(saved)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def assert_same_report(local: dict, dask: dict, path: str = "") -> None:
    """Every number equal to 1e-12 relative; everything else equal (the engine entry aside)."""
    if isinstance(local, dict):
        keys = set(local) | set(dask)
        keys.discard("engine")
        for k in keys:
            assert k in local and k in dask, (path, k)
            assert_same_report(local[k], dask[k], f"{path}.{k}")
    elif isinstance(local, list):
        assert len(local) == len(dask), path
        for i, (a, b) in enumerate(zip(local, dask)):
            assert_same_report(a, b, f"{path}[{i}]")
    elif isinstance(local, float) and not isinstance(local, bool):
        if math.isnan(local):
            assert isinstance(dask, float) and math.isnan(dask), path
        else:
            assert dask == pytest.approx(local, rel=REL, abs=1e-300), path
    else:
        assert local == dask, path


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """10 hive-partitioned Parquet shards of several row groups each (predictions and labels)."""
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(7)
    xs, ys = [], []
    for i in range(10):
        split = "train" if i < 6 else "val"
        n = int(rng.integers(150, 400))
        x = rng.normal(size=(n, 4)) * 3
        y = rng.integers(0, 4, size=n)
        d = root / "data" / f"split={split}"
        os.makedirs(d, exist_ok=True)
        write_parquet(d / f"part-{i:02d}.parquet", {"logits": x, "label": y}, row_group_size=64)
        xs.append(x)
        ys.append(y)
    return root / "data", np.concatenate(xs), np.concatenate(ys)


def _both(cli, scheduler, args):
    local = cli(args + ["-f", "json"])
    dask = cli(args + ["-f", "json", "--engine", "dask", "--scheduler", scheduler])
    assert local.code == 0, local.err
    assert dask.code == 0, dask.err
    assert dask.err == ""
    return local.json, dask.json


def test_dask_report_equals_local_with_groups_bootstrap_and_histogram(cli, scheduler, shards):
    data, x, y = shards
    local, dask = _both(
        cli,
        scheduler,
        [
            "compute",
            "ce",
            f"{data}:logits",
            f"{data}:label",
            "--group-by",
            "split",
            "--ci",
            "0.9",
            "--hist",
            "--top",
            "7",
        ],
    )
    assert_same_report(local, dask)
    assert dask["signature"] == local["signature"]  # the signature does not depend on the engine
    assert dask["engine"]["name"] == "dask" and dask["engine"]["workers"] == 2
    assert dask["engine"]["tasks"] >= 10  # at least one task per shard
    # and both are the float64 reference
    m = x.max(axis=1)
    per = np.log(np.exp(x - m[:, None]).sum(axis=1)) + m - x[np.arange(len(y)), y]
    assert dask["value"] == pytest.approx(per.mean(), rel=REL)
    assert [g["group"] for g in dask["groups"]] == ["train", "val"]
    assert dask["ci"]["low"] < dask["value"] < dask["ci"]["high"]


def test_tasks_split_a_large_shard_by_row_groups(cli, scheduler, tmp_path, monkeypatch):
    """One file of many row groups becomes several tasks (row-group ranges), same report."""
    from lossctl import cluster

    monkeypatch.setattr(cluster, "TASK_ROWS", 300)
    rng = np.random.default_rng(3)
    n = 2000
    f = write_parquet(tmp_path / "one.parquet", {"p": rng.normal(size=n), "t": rng.normal(size=n)}, row_group_size=100)
    local, dask = _both(cli, scheduler, ["compute", "huber", f"{f}:p", f"{f}:t", "--ci", "0.95", "--delta", "0.5"])
    assert_same_report(local, dask)
    assert dask["engine"]["tasks"] == 7  # 300-row tasks of 100-row groups: 6 x 300 + 200


def test_inputs_in_different_files_are_paired_by_global_row(cli, scheduler, tmp_path, monkeypatch):
    from lossctl import cluster

    monkeypatch.setattr(cluster, "TASK_ROWS", 100)
    rng = np.random.default_rng(4)
    n = 1200
    p = write_parquet(tmp_path / "p.parquet", {"p": rng.normal(size=(n, 3))}, row_group_size=200)
    t = write_parquet(tmp_path / "t.parquet", {"t": rng.normal(size=(n, 3))}, row_group_size=300)
    local, dask = _both(cli, scheduler, ["compute", "mse", p, t, "--top", "3"])
    assert_same_report(local, dask)
    assert dask["engine"]["tasks"] == 2  # only rows 600 and 1200 end a row group of both files


def test_batched_loss_tasks_start_on_batch_boundaries(cli, scheduler, tmp_path, monkeypatch):
    from lossctl import cluster

    monkeypatch.setattr(cluster, "TASK_ROWS", 50)
    rng = np.random.default_rng(5)
    n = 300
    a = rng.normal(size=(n, 8))
    f = write_parquet(tmp_path / "views.parquet", {"a": a, "b": a + 0.3 * rng.normal(size=(n, 8))}, row_group_size=30)
    local, dask = _both(cli, scheduler, ["compute", "info-nce", f"{f}:a", f"{f}:b", "--batch-size", "40"])
    assert_same_report(local, dask)
    assert dask["engine"]["tasks"] == 3  # cuts at 120 and 240: row-group ends that are multiples of 40


def test_per_sample_parts_are_written_by_the_workers_and_read_back_as_one_dataset(
    cli, scheduler, shards, tmp_path, monkeypatch
):
    """The client neither reads data nor writes per-sample rows: both are disabled in this process."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from lossctl.io import sinks, sources

    data, x, y = shards
    args = ["compute", "ce", f"{data}:logits", f"{data}:label", "-f", "json"]
    local = cli(args + ["--per-sample", str(tmp_path / "local.parquet")])
    assert local.code == 0, local.err

    def refuse(*a, **k):
        raise AssertionError("the client must not do this")

    monkeypatch.setattr(sources.ArrowReader, "_converted", refuse)  # reading any data
    monkeypatch.setattr(sinks.RowSink, "__init__", refuse)  # writing per-sample rows
    out = tmp_path / "per-sample"
    dask = cli(args + ["--engine", "dask", "--scheduler", scheduler, "--per-sample", str(out)])
    assert dask.code == 0, dask.err
    parts = sorted(os.listdir(out))
    assert len(parts) == dask.json["engine"]["tasks"] == dask.json["per_sample"]["files"]
    assert parts[0] == "part-00000.parquet"
    back = ds.dataset(str(out), format="parquet").to_table()
    want = pq.read_table(tmp_path / "local.parquet")
    assert back.column_names == want.column_names
    assert back.equals(want)
    assert dask.json["per_sample"]["rows"] == len(y)

    # A second run replaces the parts of the first (fewer tasks now: no stale parts left).
    monkeypatch.setattr("lossctl.cluster.TASK_ROWS", 1 << 30)
    again = cli(args + ["--engine", "dask", "--scheduler", scheduler, "--per-sample", str(out)])
    assert again.code == 0, again.err
    assert len(os.listdir(out)) == again.json["engine"]["tasks"]
    assert ds.dataset(str(out), format="parquet").to_table().equals(want)


def test_an_error_in_a_task_is_the_local_engines_error(cli, scheduler, tmp_path):
    rng = np.random.default_rng(6)
    d = tmp_path / "bad"
    os.makedirs(d)
    for i in range(4):
        x = rng.normal(size=(50, 3))
        if i == 2:
            x[17, 1] = np.nan  # global row 117
        write_parquet(d / f"part-{i}.parquet", {"logits": x, "label": rng.integers(0, 3, size=50)})
    args = ["compute", "ce", f"{d}:logits", f"{d}:label"]
    local = cli(args)
    dask = cli(args + ["--engine", "dask", "--scheduler", scheduler])
    assert_clean_error(local, 1, "row 117")
    assert_clean_error(dask, 1, "row 117")
    assert dask.err == local.err


@pytest.mark.parametrize("fixed", [True, False])
def test_shards_with_different_class_counts_are_an_error(cli, scheduler, tmp_path, fixed):
    """Fixed-size lists fail when read (the dataset's schema); plain lists when the tasks' shapes meet."""
    d = tmp_path / "widths"
    os.makedirs(d)
    write_parquet(d / "part-0.parquet", {"logits": np.zeros((20, 3)), "label": np.zeros(20, int)}, fixed=fixed)
    write_parquet(d / "part-1.parquet", {"logits": np.zeros((20, 5)), "label": np.zeros(20, int)}, fixed=fixed)
    local = cli(["compute", "ce", f"{d}:logits", f"{d}:label"])
    res = cli(["compute", "ce", f"{d}:logits", f"{d}:label", "--engine", "dask", "--scheduler", scheduler])
    assert_clean_error(local, 1, "row 20")
    assert_clean_error(res, 1, "row 20", *([] if fixed else ["'logits'"]))


def test_workers_option_starts_a_local_cluster(cli, tmp_path):
    f = os.path.join(SAMPLE, "classifier.parquet")
    local = cli(["compute", "ce", f"{f}:logits", f"{f}:label", "-f", "json"])
    dask = cli(["compute", "ce", f"{f}:logits", f"{f}:label", "-f", "json", "--engine", "dask", "--workers", "2"])
    assert dask.code == 0, dask.err
    assert dask.err == ""  # quiet on success: no cluster logging
    assert_same_report(local.json, dask.json)
    assert dask.json["engine"]["workers"] == 2


def test_save_state_of_a_dask_run_merges_like_a_local_one(cli, scheduler, shards, tmp_path):
    data, x, y = shards
    args = ["compute", "ce", f"{data}:logits", f"{data}:label", "--ci", "0.95", "-f", "json"]
    local = cli(args + ["--save-state", str(tmp_path / "local.json")])
    dask = cli(args + ["--engine", "dask", "--scheduler", scheduler, "--save-state", str(tmp_path / "dask.json")])
    assert dask.code == 0, dask.err
    a = cli(["merge", str(tmp_path / "local.json"), "-f", "json"]).json
    b = cli(["merge", str(tmp_path / "dask.json"), "-f", "json"]).json
    assert_same_report(a, b)
    lj, dj = local.json, dask.json
    assert lj.pop("state") != dj.pop("state")  # the paths
    assert_same_report(lj, dj)


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--id-col", "id"], ["--id-col", "--engine local"]),
        (["--per-sample", "out.parquet"], ["names a directory"]),
        (["--reduction", "none"], ["--per-sample DIR"]),
        (["--grad", "g.npy"], ["--grad"]),
    ],
)
def test_what_the_dask_engine_does_not_do_is_a_usage_error(cli, shards, extra, needles):
    data, _, _ = shards
    res = cli(["compute", "ce", f"{data}:logits", f"{data}:label", "--engine", "dask", "--workers", "1", *extra])
    assert_clean_error(res, 2, *needles)


def test_non_parquet_inputs_are_refused_with_the_way_out(cli):
    logits = os.path.join(SAMPLE, "classifier_logits.npy")
    labels = os.path.join(SAMPLE, "classifier_labels.npy")
    res = cli(["compute", "ce", logits, labels, "--engine", "dask", "--workers", "1"])
    assert_clean_error(res, 2, "classifier_logits.npy", "Parquet", "--engine local")


def test_scheduler_and_workers_need_the_dask_engine(cli):
    f = os.path.join(SAMPLE, "classifier.parquet")
    res = cli(["compute", "ce", f"{f}:logits", f"{f}:label", "--workers", "2"])
    assert_clean_error(res, 2, "--engine dask")


def test_unreachable_scheduler_is_a_clean_error(cli):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    f = os.path.join(SAMPLE, "classifier.parquet")
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        res = cli(
            ["compute", "ce", f"{f}:logits", f"{f}:label", "--engine", "dask", "--scheduler", f"tcp://127.0.0.1:{port}"]
        )
    assert_clean_error(res, 1, f"tcp://127.0.0.1:{port}", "cannot connect", "dask scheduler")


def test_a_corrupt_shard_is_named(cli, scheduler, tmp_path):
    d = tmp_path / "corrupt"
    os.makedirs(d)
    for i in range(3):
        write_parquet(d / f"part-{i}.parquet", {"p": np.ones(10), "t": np.zeros(10)})
    (d / "part-2.parquet").write_bytes(b"PAR1 this is not a parquet file PAR1")
    res = cli(["compute", "mse", f"{d}:p", f"{d}:t", "--engine", "dask", "--scheduler", scheduler])
    assert_clean_error(res, 1, "part-2.parquet", "Parquet")


def test_without_the_extra_the_dask_engine_says_how_to_install_it(cli, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    f = os.path.join(SAMPLE, "classifier.parquet")
    res = cli(["compute", "ce", f"{f}:logits", f"{f}:label", "--engine", "dask", "--workers", "2"])
    assert_clean_error(res, 2, "pip install 'lossctl[dask]'")


def test_engine_options_are_in_the_help(cli):
    res = cli(["compute", "ce", "--help"])
    assert res.code == 0
    for needle in ("--engine", "--scheduler", "--workers"):
        assert needle in res.out
    flat = " ".join(res.out.replace("│", " ").split())  # the text without Rich's box and line breaks
    assert "needs the dask extra" in flat  # (square brackets would be eaten as markup)


@pytest.mark.parametrize("cluster", ["own", "shared"])
def test_ctrl_c_stops_the_tasks_and_leaves_no_parts(tmp_path, request, cluster):
    """SIGINT during a dask run: exit 130, one line, no per-sample parts left (own cluster: shut
    down; shared cluster: tasks still running remove their part when they finish)."""
    import signal
    import subprocess
    import sys
    import time

    d = tmp_path / "many"
    os.makedirs(d)
    rng = np.random.default_rng(8)
    for i in range(12):
        write_parquet(d / f"part-{i:02d}.parquet", {"p": rng.normal(size=20000), "t": rng.normal(size=20000)})
    out = tmp_path / "ps"
    cmd = [sys.executable, "-m", "lossctl", "compute", "mse", f"{d}:p", f"{d}:t", "--engine", "dask"]
    address = request.getfixturevalue("scheduler") if cluster == "shared" else None
    cmd += ["--scheduler", address] if address else ["--workers", "2"]
    cmd += ["--chunk-size", "20", "--per-sample", str(out)]  # tiny chunks: slow tasks
    env = dict(os.environ)
    env.pop("LOSSCTL_FORMAT", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (out.is_dir() and any(n.startswith("part-") for n in os.listdir(out))):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if address:  # wait for the tasks that were running to finish
        with distributed.Client(address) as c:
            deadline = time.monotonic() + 60
            while any(c.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(0.2)
    assert proc.returncode == 130, stderr
    assert b"Traceback" not in stderr, stderr.decode()
    assert stdout == b""
    assert [n for n in os.listdir(out) if n.startswith("part-")] == []


def test_check_configs_choose_the_engine(cli, scheduler, shards, tmp_path):
    data, x, y = shards
    cfg = tmp_path / "checks.toml"
    cfg.write_text(
        f"""
[defaults]
group-by = "split"

[[checks]]
name = "local"
loss = "cross-entropy"
inputs = ["{data}:logits", "{data}:label"]
max = 100

[[checks]]
name = "on-the-cluster"
loss = "cross-entropy"
inputs = ["{data}:logits", "{data}:label"]
engine = "dask"
scheduler = "{scheduler}"
max = 100
"""
    )
    res = cli(["check", str(cfg), "--format", "json"])
    assert res.code == 0, res.err
    doc = res.json
    checks = doc["checks"] if isinstance(doc, dict) else doc
    local, dask = checks
    assert dask["value"] == pytest.approx(local["value"], rel=REL)
    assert local["status"] == dask["status"] == "pass"


def test_beyond_the_exact_limit_tasks_send_sketches_with_the_same_quantiles(cli, scheduler, tmp_path, monkeypatch):
    """Over 1,048,576 rows the report's quantiles come from the sketch in both engines, and agree."""
    from lossctl import cluster
    from lossctl.stats import EXACT_LIMIT

    monkeypatch.setattr(cluster, "TASK_ROWS", 400_000)
    n = EXACT_LIMIT + 50_000
    rng = np.random.default_rng(12)
    f = write_parquet(
        tmp_path / "big.parquet", {"p": rng.normal(size=n), "t": rng.normal(size=n)}, row_group_size=200_000
    )
    local, dask = _both(cli, scheduler, ["compute", "mae", f"{f}:p", f"{f}:t", "--hist"])
    assert local["stats"]["quantiles"] != "exact"
    assert_same_report(local, dask)
    assert dask["engine"]["tasks"] == 3  # cut at 400,000 and 800,000


def test_a_task_of_a_large_run_returns_kilobytes_not_its_values(tmp_path):
    """run_task in this process: past the exact limit its state holds a sketch, not 8 bytes a row."""
    import pickle

    from lossctl import cluster, engine, registry
    from lossctl.io.sources import Source
    from lossctl.stats import EXACT_LIMIT

    n = 300_000
    rng = np.random.default_rng(13)
    f = write_parquet(tmp_path / "t.parquet", {"p": rng.normal(size=n), "t": rng.normal(size=n)})
    spec = registry.get("mse")
    texts = [f"{f}:p", f"{f}:t"]
    sources = [Source(texts[0], f, "p", "parquet"), Source(texts[1], f, "t", "parquet")]
    layout = {f: ([f], None, None, sources[0])}
    tasks, total = cluster.plan(spec, texts, sources, layout, {f: cluster.row_group_rows(f)}, None)
    opts = engine.build_options({})
    small = cluster.run_task("mse", texts, {}, opts, tasks[0], None, None, total)
    large = cluster.run_task("mse", texts, {}, opts, tasks[0], None, None, EXACT_LIMIT + 1)
    assert small["state"].all.stats.quantiles_exact
    assert not large["state"].all.stats.quantiles_exact
    assert len(pickle.dumps(small["state"])) > 8 * n
    assert len(pickle.dumps(large["state"])) < 200_000
    assert large["state"].all.stats.count == small["state"].all.stats.count == n


def test_a_worker_failure_is_one_data_error_naming_the_rows():
    """A worker that dies (KilledWorker, out of memory) is reported with the rows of its task."""
    from lossctl import cluster
    from lossctl.errors import DataError

    class Died:
        def result(self):
            raise RuntimeError("Attempted to run task on a worker that died 3 times\nmore detail")

    with pytest.raises(DataError, match=r"rows 100\.\.199 \(RuntimeError: Attempted to run task.*3 times\)") as e:
        cluster._result(Died(), cluster.Task(3, 100, 200, []))
    assert "more detail" not in str(e.value) and "memory" in str(e.value)


@pytest.mark.parametrize(
    "extra",
    [
        ["--nan", "omit", "--group-by", "g"],
        ["--nan", "propagate"],
        ["--nan", "omit", "--ignore-index", "2", "--group-by", "g", "--ci", "0.8"],
        ["--nan", "omit", "--reduction", "sum", "--label-smoothing", "0.1"],
    ],
)
def test_row_accounting_matches_the_local_engine(cli, scheduler, tmp_path, monkeypatch, extra):
    """NaN rows, ignored rows, sums and groups counted the same when rows are split into tasks."""
    from lossctl import cluster

    monkeypatch.setattr(cluster, "TASK_ROWS", 100)
    rng = np.random.default_rng(14)
    n = 1000
    x = rng.normal(size=(n, 3))
    x[rng.choice(n, 15, replace=False), 1] = np.nan
    g = rng.choice(np.array(["a", "b", "c"]), size=n)
    f = write_parquet(tmp_path / "acc.parquet", {"x": x, "y": rng.integers(0, 3, size=n), "g": g}, row_group_size=100)
    local, dask = _both(cli, scheduler, ["compute", "ce", f"{f}:x", f"{f}:y", *extra])
    assert_same_report(local, dask)
    assert dask["engine"]["tasks"] == 10


def test_without_scheduler_or_workers_a_local_cluster_has_one_worker_per_core(cli):
    f = os.path.join(SAMPLE, "classifier.parquet")
    res = cli(["compute", "ce", f"{f}:logits", f"{f}:label", "-f", "json", "--engine", "dask"])
    assert res.code == 0, res.err
    assert res.json["engine"]["workers"] == (os.cpu_count() or 1)
    assert res.json["engine"]["scheduler"] is None


def test_workers_with_another_lossctl_version_are_refused(cli, scheduler, monkeypatch):
    import lossctl

    monkeypatch.setattr(lossctl, "__version__", "0.0.0-client")
    f = os.path.join(SAMPLE, "classifier.parquet")
    res = cli(["compute", "ce", f"{f}:logits", f"{f}:label", "--engine", "dask", "--scheduler", scheduler])
    from importlib.metadata import version

    assert_clean_error(res, 1, "0.0.0-client", f"has lossctl {version('lossctl')}", "same lossctl")


def test_a_scheduler_without_workers_is_a_clean_error(cli, monkeypatch):
    from lossctl import cluster

    monkeypatch.setattr(cluster, "WORKER_WAIT_S", 1)
    saved = dict(os.environ)
    empty = distributed.LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=":0", processes=True)
    os.environ.clear()
    os.environ.update(saved)
    try:
        f = os.path.join(SAMPLE, "classifier.parquet")
        args = ["compute", "ce", f"{f}:logits", f"{f}:label", "--engine", "dask"]
        res = cli(args + ["--scheduler", empty.scheduler_address])
    finally:
        empty.close()
    assert_clean_error(res, 1, "no worker joined within 1 s", "dask worker")
