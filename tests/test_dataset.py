"""Many files as one input: a directory or a glob of shards (hive partitions as columns)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import assert_clean_error, write_parquet


@pytest.fixture
def shards(tmp_path):
    """A hive-partitioned directory of Parquet shards, and the same rows in one file."""
    rng = np.random.default_rng(0)
    xs, ys, splits, langs = [], [], [], []
    for split in ("train", "val"):
        for lang in ("de", "en", "fr"):
            for part in range(2):
                n = int(rng.integers(5, 40))
                x = rng.normal(size=(n, 3)) * 2
                y = rng.integers(0, 3, size=n)
                d = tmp_path / "data" / f"split={split}" / f"lang={lang}"
                os.makedirs(d, exist_ok=True)
                write_parquet(d / f"part-{part}.parquet", {"logits": x, "label": y})
                xs.append(x)
                ys.append(y)
                splits += [split] * n
                langs += [lang] * n
    x, y = np.concatenate(xs), np.concatenate(ys)
    whole = write_parquet(tmp_path / "whole.parquet", {"logits": x, "label": y})
    return tmp_path / "data", whole, x, y, np.array(splits), np.array(langs)


def test_directory_equals_one_file_in_sorted_path_order(cli, shards, tmp_path):
    data, whole, x, y, _, _ = shards
    a = cli(["compute", "ce", f"{data}:logits", f"{data}:label", "-f", "json", "--per-sample", str(tmp_path / "a.npy")])
    b = cli(
        ["compute", "ce", f"{whole}:logits", f"{whole}:label", "-f", "json", "--per-sample", str(tmp_path / "b.npy")]
    )
    assert a.code == 0, a.err
    assert a.json["value"] == pytest.approx(b.json["value"], rel=1e-12)
    assert a.json["rows"]["read"] == {"pred": len(y), "target": len(y)}
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert a.json["inputs"][0]["format"] == "dataset"


def test_hive_partition_keys_are_group_by_columns(cli, shards):
    data, _, x, y, splits, langs = shards
    out = cli(["compute", "ce", f"{data}:logits", f"{data}:label", "--group-by", "lang", "-f", "json"]).json
    m = x.max(axis=1)
    per = np.log(np.exp(x - m[:, None]).sum(axis=1)) + m - x[np.arange(len(y)), y]
    for g in out["groups"]:
        assert g["value"] == pytest.approx(per[langs == g["group"]].mean(), rel=1e-12)
    assert [g["group"] for g in out["groups"]] == ["de", "en", "fr"]


def test_glob_of_shards(cli, shards):
    data, _, x, y, splits, langs = shards
    pattern = f"{data}/split=val/*/*.parquet"
    out = cli(["compute", "ce", f"{pattern}:logits", f"{pattern}:label", "-f", "json"]).json
    assert out["count"] == int((splits == "val").sum())
    m = x.max(axis=1)
    per = np.log(np.exp(x - m[:, None]).sum(axis=1)) + m - x[np.arange(len(y)), y]
    assert out["value"] == pytest.approx(per[splits == "val"].mean(), rel=1e-12)


def test_shard_errors(cli, tmp_path):
    os.makedirs(tmp_path / "empty")
    assert_clean_error(
        cli(["compute", "mse", f"{tmp_path / 'empty'}:a", f"{tmp_path / 'empty'}:b"]),
        1,
        "no Parquet, Arrow or CSV files",
    )
    os.makedirs(tmp_path / "mixed")
    write_parquet(tmp_path / "mixed" / "a.parquet", {"a": np.zeros(3), "b": np.zeros(3)})
    (tmp_path / "mixed" / "b.csv").write_text("a,b\n1,2\n")
    assert_clean_error(
        cli(["compute", "mse", f"{tmp_path / 'mixed'}:a", f"{tmp_path / 'mixed'}:b"]), 1, "several formats"
    )
    os.makedirs(tmp_path / "schemas")
    write_parquet(tmp_path / "schemas" / "a.parquet", {"a": np.zeros(3), "b": np.zeros(3)})
    write_parquet(tmp_path / "schemas" / "b.parquet", {"c": np.zeros(3)})
    res = cli(["compute", "mse", f"{tmp_path / 'schemas'}:a", f"{tmp_path / 'schemas'}:b"])
    assert res.code == 1 and "Traceback" not in res.err
