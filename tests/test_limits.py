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


def _assert_did_not_answer(proc, elapsed, endpoint, *needles):
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""
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
    _assert_did_not_answer(proc, elapsed, endpoint, "--save-state s3://bucket/s.json", "upload failed")
    assert set(os.listdir(tmp_path)) == before


def test_remote_timeout_from_environment(silent_endpoint):
    env, endpoint = silent_endpoint
    env = {**env, "LOSSCTL_REMOTE_TIMEOUT": "1"}
    proc, elapsed = _lossctl(["compute", "mse", "s3://bucket/a.parquet:p", "s3://bucket/a.parquet:t"], env=env)
    _assert_did_not_answer(proc, elapsed, endpoint)


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf"])
def test_remote_timeout_must_be_positive(bad, tmp_path):
    p = write_csv(tmp_path / "c.csv", {"p": np.arange(3.0), "t": np.zeros(3)})
    res = run_cli(["compute", "mse", f"{p}:p", f"{p}:t", "--remote-timeout", bad])
    assert_clean_error(res, 2, "--remote-timeout must be a positive number of seconds")


def test_bad_remote_timeout_environment_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSCTL_REMOTE_TIMEOUT", "soon")
    res = run_cli(["compute", "mse", "s3://bucket/a.parquet:p", "s3://bucket/a.parquet:t"])
    assert_clean_error(res, 2, "LOSSCTL_REMOTE_TIMEOUT must be a positive number of seconds", "'soon'")
