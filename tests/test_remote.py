"""Sources given as URIs (s3://, file://, ...) through pyarrow's filesystem layer.

S3 is tested against a real S3 protocol server on loopback (moto's server, from the test
extra), with credentials and endpoint given the standard way: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and AWS_ENDPOINT_URL in the environment.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import assert_clean_error, write_arrow, write_csv, write_parquet

BUCKET = "lossctl-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 server on loopback holding one file per format and a hive-partitioned dataset.

    Yields (local directory, the same files' s3:// root). The environment points at the
    server for the module's tests (and for the worker processes they start).
    """
    server_mod = pytest.importorskip(
        "moto.server", reason="the S3 tests need moto[server], from the test extra: pip install 'lossctl[test]'"
    )
    import pyarrow.fs as pafs

    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        local = tmp_path_factory.mktemp("s3data")
        rng = np.random.default_rng(11)
        n = 120
        x = rng.normal(size=(n, 4)) * 2
        y = rng.integers(0, 4, size=n)
        write_parquet(local / "preds.parquet", {"logits": x, "label": y}, row_group_size=25)
        write_arrow(local / "preds.feather", {"logits": x, "label": y})
        write_csv(local / "preds.csv", {"l0": x[:, 0], "l1": x[:, 1], "l2": x[:, 2], "l3": x[:, 3], "label": y})
        np.save(local / "logits.npy", x)
        np.save(local / "labels.npy", y)
        for i in range(6):
            split = "train" if i < 4 else "val"
            os.makedirs(local / "data" / f"split={split}", exist_ok=True)
            xi = rng.normal(size=(40, 4))
            write_parquet(
                local / "data" / f"split={split}" / f"part-{i}.parquet",
                {"logits": xi, "label": rng.integers(0, 4, size=40)},
                row_group_size=16,
            )
        fs = pafs.S3FileSystem(
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            endpoint_override=f"{host}:{port}",
            scheme="http",
            allow_bucket_creation=True,
        )
        fs.create_dir(BUCKET)
        pafs.copy_files(str(local), BUCKET, destination_filesystem=fs)
        yield local, f"s3://{BUCKET}"
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def _json(cli, args):
    res = cli(args + ["-f", "json"])
    assert res.code == 0, res.err
    return res.json


def _numbers(report: dict) -> dict:
    return {k: report[k] for k in ("value", "count", "stats", "top", "rows")}


@pytest.mark.parametrize(
    "pred, target",
    [
        ("preds.parquet:logits", "preds.parquet:label"),
        ("preds.feather:logits", "preds.feather:label"),
        ("preds.csv:l*", "preds.csv:label"),
        ("logits.npy", "labels.npy"),
    ],
)
def test_s3_file_in_every_format_equals_the_local_file(cli, s3, pred, target):
    local, root = s3
    want = _json(cli, ["compute", "ce", f"{local}/{pred}", f"{local}/{target}"])
    got = _json(cli, ["compute", "ce", f"{root}/{pred}", f"{root}/{target}"])
    assert _numbers(got) == _numbers(want)
    assert got["inputs"][0]["path"] == f"{root}/{pred.split(':')[0]}"


def test_s3_directory_and_glob_of_shards_with_hive_keys(cli, s3):
    local, root = s3
    args = ["--group-by", "split", "--ci", "0.9"]
    want = _json(cli, ["compute", "ce", f"{local}/data:logits", f"{local}/data:label", *args])
    got = _json(cli, ["compute", "ce", f"{root}/data:logits", f"{root}/data:label", *args])
    assert _numbers(got) == _numbers(want)
    assert got["groups"] == want["groups"] and got["ci"] == want["ci"]
    pattern = "data/split=val/*.parquet"
    want = _json(cli, ["compute", "ce", f"{local}/{pattern}:logits", f"{local}/{pattern}:label"])
    got = _json(cli, ["compute", "ce", f"{root}/{pattern}:logits", f"{root}/{pattern}:label"])
    assert got["count"] == want["count"] == 80
    assert got["value"] == want["value"]


def test_s3_dataset_on_the_dask_engine_with_per_sample_parts_in_the_bucket(cli, s3):
    pytest.importorskip("distributed", reason="the dask extra is not installed: pip install 'lossctl[dask]'")
    import pyarrow.dataset as ds

    local, root = s3
    want = _json(cli, ["compute", "ce", f"{local}/data:logits", f"{local}/data:label", "--group-by", "split"])
    out = f"{root}/per-sample/run1/"  # a directory URI, trailing slash as in the README
    got = _json(
        cli,
        [
            "compute", "ce", f"{root}/data:logits", f"{root}/data:label", "--group-by", "split",
            "--engine", "dask", "--workers", "2", "--per-sample", out,
        ],
    )  # fmt: skip
    assert got["value"] == pytest.approx(want["value"], rel=1e-12)
    assert [g["value"] for g in got["groups"]] == pytest.approx([g["value"] for g in want["groups"]], rel=1e-12)
    back = ds.dataset(out, format="parquet").to_table()
    assert back.num_rows == want["count"] == 240
    assert back.column("row").to_pylist() == list(range(240))
    assert got["engine"]["tasks"] == 6


def test_missing_s3_object_and_bucket_are_clean_errors(cli, s3):
    _, root = s3
    res = cli(["compute", "mse", f"{root}/nope.parquet:p", f"{root}/nope.parquet:t"])
    assert_clean_error(res, 1, f"{root}/nope.parquet", "not found")
    res = cli(["compute", "mse", "s3://no-such-bucket-lossctl/x.parquet", "s3://no-such-bucket-lossctl/y.parquet"])
    assert res.code == 1 and "Traceback" not in res.err
    assert "s3://no-such-bucket-lossctl/x.parquet" in res.err


def test_file_uri_is_a_local_path(cli, tmp_path):
    rng = np.random.default_rng(2)
    f = write_parquet(tmp_path / "r.parquet", {"p": rng.normal(size=50), "t": rng.normal(size=50)})
    want = _json(cli, ["compute", "mse", f"{f}:p", f"{f}:t"])
    got = _json(cli, ["compute", "mse", f"file://{f}:p", f"file://{f}:t"])
    assert got["value"] == want["value"]


def test_unusable_scheme_is_a_clean_error(cli):
    res = cli(["compute", "mse", "nosuch://bucket/x.parquet", "nosuch://bucket/y.parquet"])
    assert_clean_error(res, 1, "nosuch://bucket/x.parquet", "cannot open this URI")


def test_outputs_to_s3_are_uploaded_on_success_only(cli, s3, tmp_path):
    """--per-sample, --save-state and --junit take URIs too (written locally, uploaded on success)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    local, root = s3
    args = ["compute", "ce", f"{local}/preds.parquet:logits", f"{local}/preds.parquet:label", "-f", "json"]
    want = cli(args + ["--per-sample", str(tmp_path / "ps.parquet")])
    res = cli(
        args
        + ["--per-sample", f"{root}/out/ps.parquet", "--save-state", f"{root}/out/state.json"]
        + ["--junit", f"{root}/out/junit.xml", "--max", "100"]
    )
    assert res.code == 0, res.err
    assert pq.read_table(f"{root}/out/ps.parquet").equals(pq.read_table(tmp_path / "ps.parquet"))
    fs, _ = pafs.FileSystem.from_uri(root)
    with fs.open_input_stream(f"{BUCKET}/out/junit.xml") as fh:
        assert b"<testsuite" in fh.read()
    with fs.open_input_stream(f"{BUCKET}/out/state.json") as fh:
        (tmp_path / "state.json").write_bytes(fh.read())
    merged = cli(["merge", str(tmp_path / "state.json"), "-f", "json"])
    assert merged.json["value"] == want.json["value"]
    # a failed run (labels given as predictions) uploads nothing
    bad = cli(
        ["compute", "ce", f"{local}/preds.parquet:label", f"{local}/preds.parquet:logits"]
        + ["--per-sample", f"{root}/out/bad.parquet"]
    )
    assert bad.code != 0
    assert fs.get_file_info(f"{BUCKET}/out/bad.parquet").type == pafs.FileType.NotFound
