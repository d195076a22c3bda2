"""Outputs never destroy anything, a run commits all of its outputs or none, signals and
file-size limits end a run cleanly (issue #13, items 1-5).

Every test goes through the real CLI (in-process, or a subprocess for signals and limits)
and checks the exit code, that stderr has no traceback, that no stray file is left in the
output directory or TMPDIR, and that the inputs are byte-identical after the run.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import run_cli, write_csv, write_parquet

N, C = 40, 3


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _snapshot(*dirs) -> dict:
    """Every file below ``dirs`` with its bytes (and whether it is a link), to compare after a run."""
    found = {}
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in files:
                p = os.path.join(root, f)
                found[p] = (os.path.islink(p), open(p, "rb").read() if os.path.isfile(p) else None)
    return found


def _ce_oracle(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Cross-entropy per row in plain float64 Python: logsumexp(x) - x[y]."""
    out = []
    for row, k in zip(x.tolist(), y.tolist()):
        m = max(row)
        out.append(m + math.log(math.fsum(math.exp(v - m) for v in row)) - row[k])
    return out


@pytest.fixture
def data(tmp_path, monkeypatch):
    """Inputs in ``in/`` (CSV, NPY, a symlink and a hard link), an empty ``out/``, cwd = tmp_path."""
    rng = np.random.default_rng(13)
    d = tmp_path / "in"
    d.mkdir()
    (tmp_path / "out").mkdir()
    x = rng.standard_normal((N, C))
    y = rng.integers(0, C, N)
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    write_csv(d / "reg.csv", {"pred": rng.standard_normal(N), "target": rng.standard_normal(N)})
    os.symlink("x.npy", d / "link.npy")
    os.link(d / "x.npy", d / "hard.npy")
    monkeypatch.chdir(tmp_path)
    return {"x": x, "y": y, "dir": tmp_path}


def _refused(res, *names) -> None:
    assert res.code == 2, (res.code, res.err)
    assert "Traceback" not in res.err and res.out == ""
    for n in names:
        assert n in res.err, (n, res.err)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSCTL_")}
    env.update(extra)
    return env


def _lossctl(args, tmpdir, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lossctl", *map(str, args)], capture_output=True, env=_env(TMPDIR=str(tmpdir)), **kw
    )


# ---------------------------------------------------------------------------
# 13.1 An output aimed at an input, a config, a state or another output is refused
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, names",
    [
        (["mse", "in/reg.csv:pred", "in/reg.csv:target", "--per-sample", "in/reg.csv"], ["--per-sample", "PRED"]),
        (["mse", "in/reg.csv:pred", "in/reg.csv:target", "--per-sample", "./in/../in/reg.csv"], ["--per-sample"]),
        (["ce", "in/x.npy", "in/y.npy", "--grad", "in/x.npy"], ["--grad in/x.npy", "PRED"]),
        (["ce", "in/x.npy", "in/y.npy", "--save-state", "in/y.npy"], ["--save-state", "TARGET"]),
        (["ce", "in/link.npy", "in/y.npy", "--per-sample", "in/x.npy"], ["--per-sample"]),  # a symlink
        (["ce", "in/x.npy", "in/y.npy", "--grad", "in/hard.npy"], ["--grad", "PRED"]),  # a hard link
        (["ce", "in/x.npy", "in/y.npy", "--junit", "in/link.npy"], ["--junit"]),
        (["ce", "in/x.npy", "in/y.npy", "--per-sample", "out/s.npy", "--grad", "out/s.npy"],
         ["--per-sample", "--grad"]),
        (["ce", "in/x.npy", "in/y.npy", "--save-state", "out/f", "--junit", "./out/f"], ["--save-state", "--junit"]),
        (["ce", "in/x.npy", "in/y.npy", "--weight", "in/w.txt", "--per-sample", "in/w.txt"], ["--weight"]),
        (["ce", "in/x.npy", "in/y.npy", "--group-by", "in/reg.csv:pred", "--per-sample", "in/reg.csv"],
         ["--group-by"]),
        (["ce", "in/x.npy", "in/y.npy", "--max", "9", "--baseline", "in/b.json", "--junit", "in/b.json"],
         ["--baseline"]),
    ],
    ids=[
        "per-sample-on-csv-input",
        "dotted-path",
        "grad-on-pred",
        "state-on-target",
        "symlink",
        "hard-link",
        "junit-on-link",
        "per-sample-and-grad",
        "state-and-junit",
        "weight-file",
        "group-by-side-file",
        "baseline",
    ],
)
def test_output_onto_an_input_or_another_output_is_refused_before_reading(data, args, names):
    d = data["dir"]
    (d / "in" / "w.txt").write_text("1 2 3\n")
    (d / "in" / "b.json").write_text('{"value": 1.0, "loss": "cross_entropy"}')
    before = _snapshot(d)
    res = run_cli(["compute", *args])
    _refused(res, *names)
    assert _snapshot(d) == before  # nothing written, nothing replaced, no temporary file


def test_check_junit_onto_its_config_or_a_checks_input_is_refused(data):
    d = data["dir"]
    cfg = d / "in" / "c.toml"
    cfg.write_text('[[checks]]\nname = "a"\nloss = "mse"\ninputs = ["reg.csv:pred", "reg.csv:target"]\nmax = 100\n')
    before = _snapshot(d)
    _refused(run_cli(["check", str(cfg), "--junit", str(cfg)]), "--junit", "CONFIG")
    # the check's input is named relative to the config's directory
    _refused(run_cli(["check", str(cfg), "--junit", "in/reg.csv"]), "--junit in/reg.csv", "check a")
    assert _snapshot(d) == before
    ok = run_cli(["check", str(cfg), "--junit", "out/j.xml", "-f", "json"])
    assert ok.code == 0 and (d / "out" / "j.xml").exists()


def test_merge_junit_onto_a_state_being_merged_is_refused(data):
    d = data["dir"]
    assert run_cli(["compute", "ce", "in/x.npy", "in/y.npy", "--save-state", "out/s.json", "-b"]).code == 0
    before = _snapshot(d)
    _refused(run_cli(["merge", "out/s.json", "--junit", "out/s.json"]), "--junit", "STATE")
    assert _snapshot(d) == before


def test_output_directory_holding_an_input_and_output_inside_an_input_dataset_are_refused(data):
    d = data["dir"]
    shards = d / "shards"
    shards.mkdir()
    rng = np.random.default_rng(2)
    for i in range(2):
        write_parquet(shards / f"part-{i:05d}.parquet", {"p": rng.standard_normal(5), "t": rng.standard_normal(5)})
    before = _snapshot(d)
    # the Dask engine's per-sample directory would have its part-*.parquet files replaced
    res = run_cli(["compute", "mse", "shards:p", "shards:t", "--engine", "dask", "--per-sample", "shards"])
    _refused(res, "--per-sample shards", "PRED")
    res = run_cli(["compute", "mse", "shards/part-00000.parquet:p", "shards/part-00000.parquet:t",
                   "--engine", "dask", "--per-sample", "."])
    _refused(res, "inside")
    # a file output inside a dataset directory would become one of its shards
    _refused(run_cli(["compute", "mse", "shards:p", "shards:t", "--per-sample", "shards/ps.parquet"]), "inside")
    assert _snapshot(d) == before


# ---------------------------------------------------------------------------
# 13.2 Devices and FIFOs are written in place, never replaced
# ---------------------------------------------------------------------------


def test_dev_null_stays_a_device(data):
    before = os.stat("/dev/null")
    res = run_cli(["compute", "ce", "in/x.npy", "in/y.npy", "--junit", "/dev/null", "--save-state", "/dev/null",
                   "--per-sample", "/dev/null", "-b"])
    assert res.code == 0, res.err
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert not [n for n in os.listdir("/dev") if n.startswith(".null.")]  # no staged file next to it


def test_fifo_as_per_sample_is_written_in_place(data):
    d = data["dir"]
    fifo = d / "out" / "rows"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()), daemon=True)
    reader.start()
    res = run_cli(["compute", "ce", "in/x.npy", "in/y.npy", "--per-sample", str(fifo), "-b"])
    reader.join(timeout=30)
    assert res.code == 0, res.err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a FIFO
    assert os.listdir(d / "out") == ["rows"]
    lines = got[0].decode().splitlines()
    assert lines[0].split(",")[:3] == ["row", "loss", "status"]  # no extension: CSV, as on stdout
    losses = [float(line.split(",")[1]) for line in lines[1:]]
    assert losses == pytest.approx(_ce_oracle(data["x"], data["y"]), rel=1e-12, abs=0)


def test_dev_stdout_writes_through_the_descriptor_and_dash_is_stdout(data, tmp_path):
    r = _lossctl(["compute", "ce", "in/x.npy", "in/y.npy", "--per-sample", "/dev/stdout", "-b", "-q"],
                 tmp_path, cwd=data["dir"])
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().splitlines()
    # the headline first (stdout), then the rows through the same descriptor, not a replaced /dev/stdout
    assert float(out[0]) == pytest.approx(math.fsum(_ce_oracle(data["x"], data["y"])) / N, rel=1e-12)
    assert out[1].startswith("row,loss,status") and len(out) == 2 + N
    assert os.path.islink("/dev/stdout")
    res = run_cli(["compute", "ce", "in/x.npy", "in/y.npy", "--reduction", "none"])
    assert res.code == 0 and res.out.splitlines()[0].startswith("row,loss,status")


def test_a_socket_as_output_is_refused(data):
    path = str(data["dir"] / "out" / "sock")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(path)
        _refused(run_cli(["compute", "ce", "in/x.npy", "in/y.npy", "--junit", path]), "a socket")
    finally:
        s.close()


# ---------------------------------------------------------------------------
# 13.3 All or nothing
# ---------------------------------------------------------------------------


def test_missing_output_directory_fails_before_anything_is_written(data):
    d = data["dir"]
    before = _snapshot(d)
    res = run_cli(["compute", "ce", "in/x.npy", "in/y.npy", "--per-sample", "out/ps.csv", "--junit", "nodir/j.xml"])
    assert res.code == 1 and "nodir" in res.err and "Traceback" not in res.err
    assert _snapshot(d) == before


def test_a_failed_upload_commits_no_local_output(data):
    d = data["dir"]
    before = _snapshot(d)
    res = run_cli(["compute", "ce", "in/x.npy", "in/y.npy", "--per-sample", "out/ps.csv", "--save-state", "out/s.json",
                   "--grad", "file:///dev/null/not-a-dir/g.npy", "-b"])
    assert res.code == 1 and "--grad file:///dev/null/not-a-dir/g.npy" in res.err and "upload failed" in res.err
    assert "Traceback" not in res.err
    assert _snapshot(d) == before


def test_a_crash_while_rendering_commits_no_output(data, monkeypatch):
    from lossctl import report

    def boom(*a, **k):
        raise RuntimeError("render failed")

    monkeypatch.setattr(report, "machine_text", boom)
    d = data["dir"]
    before = _snapshot(d)
    res = run_cli(["compute", "ce", "in/x.npy", "in/y.npy", "-f", "json", "--per-sample", "out/ps.parquet",
                   "--grad", "out/g.npy", "--save-state", "out/s.json", "--junit", "out/j.xml"])
    assert res.code == 1 and "render failed" in res.err
    assert _snapshot(d) == before


def test_a_data_error_midway_commits_nothing(data):
    d = data["dir"]
    x = data["x"].copy()
    x[33, 1] = np.nan
    np.save(d / "in" / "xn.npy", x)
    before = _snapshot(d)
    res = run_cli(["compute", "ce", "in/xn.npy", "in/y.npy", "--chunk-size", "8", "--per-sample", "out/ps.csv",
                   "--save-state", "out/s.json", "--grad", "out/g.npy"])
    assert res.code == 1 and "row 33" in res.err, res.err
    assert _snapshot(d) == before


def test_a_failed_or_errored_check_commits_its_report_and_a_failed_run_does_not(data):
    d = data["dir"]
    res = run_cli(["compute", "ce", "in/x.npy", "in/y.npy", "--max", "0.001", "--junit", "out/j.xml",
                   "--per-sample", "out/ps.csv"])
    assert res.code == 3  # a bound not met is a result: its report and JUnit are written
    assert sorted(os.listdir(d / "out")) == ["j.xml", "ps.csv"]
    cfg = d / "in" / "c.toml"
    cfg.write_text('[[checks]]\nname = "gone"\nloss = "mse"\ninputs = ["missing.csv:p", "missing.csv:t"]\n')
    res = run_cli(["check", str(cfg), "--junit", "out/k.xml"])
    # every check ran; one could not: exit 1, and the JUnit report (complete) says why
    assert res.code == 1 and "<error" in (d / "out" / "k.xml").read_text()
    res = run_cli(["check", str(d / "in" / "nope.toml"), "--junit", "out/l.xml"])
    assert res.code == 1 and not (d / "out" / "l.xml").exists()  # the run itself failed: nothing written


# ---------------------------------------------------------------------------
# 13.4 Signals, truncated inputs, file-size limits
# ---------------------------------------------------------------------------


@pytest.fixture
def slow_run(tmp_path):
    """Inputs that take a few seconds at a tiny chunk size, so a signal lands mid-run."""
    rng = np.random.default_rng(4)
    d = tmp_path / "big"
    d.mkdir()
    np.save(d / "x.npy", rng.standard_normal((300_000, 8)))
    np.save(d / "y.npy", rng.integers(0, 8, 300_000))
    (tmp_path / "out").mkdir()
    (tmp_path / "tmp").mkdir()
    return tmp_path


def _wait_for(pred, proc, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, ("finished before the signal", proc.returncode, proc.stderr.read())
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_remove_every_output(slow_run, sig, code):
    t = slow_run
    before = _snapshot(t / "big")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossctl", "compute", "ce", t / "big/x.npy", t / "big/y.npy", "--chunk-size", "500",
         "--per-sample", t / "out/ps.parquet", "--grad", t / "out/g.npy", "--save-state", t / "out/s.json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(TMPDIR=str(t / "tmp")),
    )
    try:
        _wait_for(lambda: len([n for n in os.listdir(t / "out") if n.endswith(".tmp")]) == 2, proc)
        time.sleep(0.2)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert err.decode() == f"lossctl: terminated by {signal.Signals(sig).name}\n" and out == b""
    assert os.listdir(t / "out") == [] and os.listdir(t / "tmp") == []
    assert _snapshot(t / "big") == before


@pytest.mark.slow
def test_sigterm_while_spooling_stdin_removes_the_spool(slow_run):
    t = slow_run
    data = (t / "big/x.npy").read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossctl", "compute", "ce", "-", t / "big/y.npy", "--input-format", "npy",
         "--per-sample", t / "out/ps.csv"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(TMPDIR=str(t / "tmp")),
    )
    try:
        proc.stdin.write(data[: len(data) // 3])  # and the pipe stays open: the copy waits for more
        proc.stdin.flush()
        _wait_for(lambda: any(n.startswith("lossctl-stdin-") for n in os.listdir(t / "tmp")), proc)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert b"Traceback" not in err
    assert os.listdir(t / "tmp") == [] and os.listdir(t / "out") == []


_TRUNCATE_AFTER_OPEN = """
import os, sys
import lossctl.io.sources as s
cls = getattr(s, sys.argv[1])
orig = cls.__init__
def opened(self, source, *a, **k):
    orig(self, source, *a, **k)
    os.truncate(source.path, os.path.getsize(source.path) // 2)  # another process shrinks the file
cls.__init__ = opened
from lossctl.cli import main
main(sys.argv[2:])
"""


@pytest.mark.parametrize("reader, name", [("NpyReader", "x.npy"), ("IpcReader", "x.arrow")])
def test_an_input_truncated_during_the_run_is_a_data_error_not_sigbus(tmp_path, reader, name):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(50_000)
    if name.endswith(".npy"):
        np.save(tmp_path / name, x)
        src = [tmp_path / name, tmp_path / "t.npy"]
    else:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        table = pa.table({"p": x})
        with ipc.new_file(str(tmp_path / name), table.schema) as w:
            for b in table.to_batches(max_chunksize=5_000):
                w.write_batch(b)
        src = [f"{tmp_path / name}:p", tmp_path / "t.npy"]
    np.save(tmp_path / "t.npy", np.zeros(50_000))
    (tmp_path / "tmp").mkdir()
    r = subprocess.run(
        [sys.executable, "-c", _TRUNCATE_AFTER_OPEN, reader, "compute", "mse", *map(str, src), "--chunk-size", "4096",
         "--per-sample", str(tmp_path / "ps.csv")],
        capture_output=True, env=_env(TMPDIR=str(tmp_path / "tmp")),
    )
    err = r.stderr.decode()
    assert r.returncode == 1, (r.returncode, err)  # was -7 / 135 (SIGBUS) with a memory map
    assert "truncated" in err or "too short" in err, err
    assert "Traceback" not in err and not (tmp_path / "ps.csv").exists()
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == [] and os.listdir(tmp_path / "tmp") == []


def test_fortran_order_npy_is_read_by_rows(tmp_path):
    """Rows are read (not memory-mapped): a Fortran-order array must still give its rows."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((30, 4))
    y = rng.integers(0, 4, 30)
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    np.save(tmp_path / "y.npy", y)
    res = run_cli(["compute", "ce", tmp_path / "f.npy", tmp_path / "y.npy", "--chunk-size", "7", "-b"])
    assert res.code == 0, res.err
    assert float(res.out) == pytest.approx(math.fsum(_ce_oracle(x, y)) / 30, rel=1e-13)


def _fsize_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
@pytest.mark.parametrize(
    "outputs",
    [["--per-sample", "ps.csv"], ["--per-sample", "ps.npy"], ["--grad", "g.parquet"], ["--save-state", "s.json"],
     ["--junit", "j.xml"], ["--per-sample", "ok.jsonl", "--junit", "j.xml"], ["STDIN"]],
    ids=["per-sample-csv", "per-sample-npy", "grad", "save-state", "junit", "two-outputs", "stdin-spool"],
)
def test_a_file_size_limit_is_a_clean_error_with_nothing_left(tmp_path, outputs):
    rng = np.random.default_rng(7)
    np.save(tmp_path / "x.npy", rng.standard_normal((2000, 4)))
    np.save(tmp_path / "y.npy", rng.integers(0, 4, 2000))
    for d in ("out", "tmp"):
        (tmp_path / d).mkdir()
    before = _snapshot(tmp_path)
    stdin = None
    if outputs == ["STDIN"]:
        stdin = (tmp_path / "x.npy").read_bytes()
        args = ["-", tmp_path / "y.npy", "--input-format", "npy"]
    else:
        args = [tmp_path / "x.npy", tmp_path / "y.npy", "--max", "100"]
        args += [a if a.startswith("--") else tmp_path / "out" / a for a in outputs]
    limit = 300  # bytes: less than any of these outputs (a JUnit file is ~450), or the spooled stdin
    r = subprocess.run(
        [sys.executable, "-m", "lossctl", "compute", "ce", *map(str, args)],
        input=stdin, capture_output=True, env=_env(TMPDIR=str(tmp_path / "tmp")), preexec_fn=_fsize_limit(limit),
    )
    err = r.stderr.decode()
    assert r.returncode == 1, (r.returncode, err)
    assert "File too large" in err and "Traceback" not in err and "internal error" not in err
    assert err.count("\n") == 1  # one paragraph
    assert _snapshot(tmp_path) == before  # nothing in out/ or TMPDIR, inputs unchanged


# ---------------------------------------------------------------------------
# 13.5 Modes and long names
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_new_outputs_get_the_mode_the_umask_gives(data, mask):
    old = os.umask(mask)
    try:
        res = run_cli(["compute", "ce", "in/x.npy", "in/y.npy", "--per-sample", "out/ps.csv", "--grad", "out/g.npy",
                       "--save-state", "out/s.json", "--junit", "out/j.xml", "-b"])
    finally:
        os.umask(old)
    assert res.code == 0, res.err
    for name in ("ps.csv", "g.npy", "s.json", "j.xml"):
        assert stat.S_IMODE(os.stat(data["dir"] / "out" / name).st_mode) == 0o666 & ~mask, name


def test_an_existing_output_keeps_its_mode(data):
    target = data["dir"] / "out" / "ps.csv"
    for mode in (0o644, 0o640, 0o604):
        target.write_text("old\n")
        os.chmod(target, mode)
        assert run_cli(["compute", "ce", "in/x.npy", "in/y.npy", "--per-sample", target, "-b"]).code == 0
        assert stat.S_IMODE(os.stat(target).st_mode) == mode
        assert target.read_text().startswith("row,loss,status")


def test_a_254_character_output_name_works(data):
    out = data["dir"] / "out"
    names = ["p" * 250 + ".csv", "é" * 125 + ".npy"]  # 254 characters; 254 bytes of UTF-8
    for name in names:
        res = run_cli(["compute", "ce", "in/x.npy", "in/y.npy", "--per-sample", out / name, "-b"])
        assert res.code == 0, res.err
    assert sorted(os.listdir(out)) == sorted(names)
    res = run_cli(["compute", "ce", "in/x.npy", "in/y.npy", "--per-sample", out / ("q" * 256 + ".csv")])
    assert res.code == 1 and "longer than 255 bytes" in res.err and sorted(os.listdir(out)) == sorted(names)
