"""fsspec URLs (the `fsspec` extra): https:// from a server on loopback, and memory://."""

from __future__ import annotations

import http.server
import os
import re
import threading

import numpy as np
import pytest

from conftest import run_cli

fsspec = pytest.importorskip("fsspec", reason="the fsspec extra is not installed (pip install '.[fsspec]')")


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that honours single byte ranges and counts the bytes it sends."""

    sent = 0

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start, end = 0, size - 1
        m = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
        if m:
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # a suffix range: the last N bytes
                start = max(0, size - int(m.group(2)))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        left = end - start + 1
        with open(path, "rb") as fh:
            fh.seek(start)
            while left > 0:  # count what reaches the client (a client may stop reading early)
                data = fh.read(min(left, 1 << 16))
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return
                type(self).sent += len(data)
                left -= len(data)


@pytest.fixture
def server(tmp_path):
    pytest.importorskip("aiohttp", reason="fsspec's https:// needs aiohttp (the fsspec extra)")
    handler = type("H", (_RangeHandler,), {"sent": 0})

    def factory(*a, **kw):
        return handler(*a, directory=str(tmp_path), **kw)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", tmp_path, handler
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.slow
def test_https_parquet_reads_only_the_columns_asked_for(server):
    import pyarrow as pa
    import pyarrow.parquet as pq

    url, root, handler = server
    rng = np.random.default_rng(0)
    n = 200_000
    p, t = rng.normal(size=n), rng.normal(size=n)
    wide = {f"junk_{i}": rng.normal(size=n) for i in range(40)}
    pq.write_table(pa.table({"p": p, "t": t, **wide}), root / "preds.parquet", compression="none")
    size = os.path.getsize(root / "preds.parquet")
    r = run_cli(["compute", "mse", f"{url}/preds.parquet:p", f"{url}/preds.parquet:t", "-b"])
    assert r.code == 0, r.err
    assert float(r.out) == pytest.approx(np.mean((p - t) ** 2), rel=1e-12)
    # 2 of 42 columns: far less than the file crossed the wire (the reader's 1 MB buffer bounds the extra)
    assert handler.sent < 0.3 * size, (handler.sent, size)


def test_https_csv_and_npy(server):
    url, root, _ = server
    (root / "r.csv").write_text("pred,target\n1,0\n2,0\n4,1\n")
    r = run_cli(["compute", "mae", f"{url}/r.csv:pred", f"{url}/r.csv:target", "-b"])
    assert r.code == 0, r.err
    assert float(r.out) == pytest.approx((1 + 2 + 3) / 3)
    np.save(root / "p.npy", np.array([0.5, 1.5]))
    np.save(root / "t.npy", np.array([0.0, 0.0]))
    r = run_cli(["compute", "mse", f"{url}/p.npy", f"{url}/t.npy", "-b"])
    assert r.code == 0, r.err
    assert float(r.out) == pytest.approx((0.25 + 2.25) / 2)


def test_https_missing_file_is_one_paragraph(server):
    url, _, _ = server
    r = run_cli(["compute", "mse", f"{url}/nope.parquet:p", f"{url}/nope.parquet:t"])
    assert r.code == 1, r.err
    assert "nope.parquet" in r.err and "Traceback" not in r.err and "internal error" not in r.err


def test_memory_urls_files_and_directories():
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs = fsspec.filesystem("memory")
    for i in range(3):
        with fs.open(f"/lossctl-test/shards/part-{i}.parquet", "wb") as fh:
            pq.write_table(pa.table({"p": [float(i), float(i + 1)], "t": [0.0, 0.0]}), fh)
    try:
        r = run_cli(["compute", "mse", "memory://lossctl-test/shards/:p", "memory://lossctl-test/shards/:t", "-b"])
        assert r.code == 0, r.err
        vals = np.array([0, 1, 1, 2, 2, 3], dtype=float)
        assert float(r.out) == pytest.approx(np.mean(vals**2))
    finally:
        fs.rm("/lossctl-test", recursive=True)


def test_unknown_scheme_names_the_scheme():
    r = run_cli(["compute", "mse", "nosuchproto://x/p.parquet:p", "nosuchproto://x/p.parquet:t"])
    assert r.code == 1
    assert "nosuchproto://" in r.err and "Traceback" not in r.err
