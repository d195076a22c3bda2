"""Sharded evaluation: --save-state on shards, `lossctl merge` equals one run over all rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_clean_error, write_csv


def _close(a, b, rel=1e-12):
    if a is None or b is None:
        assert a == b
    elif isinstance(a, str) or isinstance(b, str):
        assert a == b
    else:
        assert a == pytest.approx(b, rel=rel, abs=1e-300)


def assert_same_report(merged: dict, whole: dict) -> None:
    _close(merged["value"], whole["value"])
    assert merged["count"] == whole["count"]
    for key in ("used", "ignored", "nan_omitted", "dropped"):
        assert merged["rows"][key] == whole["rows"][key], key
    assert merged["rows"]["read"] == whole["rows"]["read"]
    for key in ("count", "sum", "mean", "std", "min", "p50", "p90", "p99", "max"):
        _close(merged["stats"][key], whole["stats"][key])
    assert merged["stats"]["quantiles"] == whole["stats"]["quantiles"]
    assert [t["row"] for t in merged["top"]] == [t["row"] for t in whole["top"]]
    for k in whole.get("components") or {}:
        _close(merged["components"][k], whole["components"][k])
    if "ci" in whole:
        _close(merged["ci"]["low"], whole["ci"]["low"])
        _close(merged["ci"]["high"], whole["ci"]["high"])
    for gm, gw in zip(merged.get("groups") or [], whole.get("groups") or []):
        assert gm["group"] == gw["group"] and gm["count"] == gw["count"]
        _close(gm["value"], gw["value"])
        _close(gm["stats"]["p90"], gw["stats"]["p90"])


def shard_run(cli, tmp_path, name: str, arrays: dict[str, np.ndarray], cuts: list[int], args: list[str], extra=()):
    """Run `compute NAME` on each shard (NPY files) with --save-state and --row-offset; merge."""
    n = len(next(iter(arrays.values())))
    bounds = [0, *cuts, n]
    states = []
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        paths = []
        for role, arr in arrays.items():
            p = tmp_path / f"{role}_{k}.npy"
            np.save(p, arr[a:b])
            paths.append(str(p))
        state = tmp_path / f"s{k}.json"
        res = cli(
            ["compute", name, *paths, *args, "--save-state", str(state), "--row-offset", str(a), "-q", "-b", *extra]
        )
        assert res.code == 0, res.err
        states.append(str(state))
    whole_paths = []
    for role, arr in arrays.items():
        p = tmp_path / f"{role}_all.npy"
        np.save(p, arr)
        whole_paths.append(str(p))
    whole = cli(["compute", name, *whole_paths, *args, "-f", "json", *extra]).json
    merged = cli(["merge", *states, "-f", "json", *(["--hist"] if "--hist" in args else [])]).json
    return merged, whole


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 400),
    parts=st.integers(2, 5),
)
def test_merged_split_runs_equal_one_run(cli, tmp_path_factory, seed, n, parts):
    tmp = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * 3
    y = rng.integers(0, 4, size=n)
    y[rng.random(n) < 0.1] = -100
    cuts = sorted(set(rng.integers(1, n, size=parts - 1).tolist()))
    merged, whole = shard_run(
        cli, tmp, "cross-entropy", {"x": x, "y": y}, cuts, ["--weight", "1,2,0.5,1", "--ci", "0.9", "--ci-n", "50"]
    )
    assert merged["shards"] == len(cuts) + 1
    assert_same_report(merged, whole)


def test_merge_components_groups_and_sketched_quantiles(cli, tmp_path):
    rng = np.random.default_rng(1)
    n = 3000
    x = rng.normal(size=(n, 3))
    t = rng.dirichlet(np.ones(3), size=n)  # soft targets: entropy + kl components
    merged, whole = shard_run(cli, tmp_path, "cross-entropy", {"x": x, "t": t}, [700, 2100], ["--hist"])
    assert_same_report(merged, whole)
    assert set(merged["components"]) == {"entropy", "kl"}
    assert merged["hist"]["counts"] == whole["hist"]["counts"]
    # grouped runs, through a column of a CSV shard
    lang = np.array(["a", "b", "c"])[rng.integers(0, 3, size=n)]
    pred, target = rng.normal(size=n), rng.normal(size=n)
    states = []
    for k, (a, b) in enumerate(((0, 1000), (1000, n))):
        p = write_csv(tmp_path / f"g{k}.csv", {"lang": lang[a:b], "pred": pred[a:b], "target": target[a:b]})
        res = cli(
            [
                "compute",
                "huber",
                f"{p}:pred",
                f"{p}:target",
                "--group-by",
                "lang",
                "--save-state",
                str(tmp_path / f"g{k}.json"),
                "--row-offset",
                str(a),
                "-b",
            ]
        )
        assert res.code == 0, res.err
        states.append(str(tmp_path / f"g{k}.json"))
    whole_csv = write_csv(tmp_path / "g.csv", {"lang": lang, "pred": pred, "target": target})
    whole = cli(
        ["compute", "huber", f"{whole_csv}:pred", f"{whole_csv}:target", "--group-by", "lang", "-f", "json"]
    ).json
    merged = cli(["merge", *states, "-f", "json"]).json
    assert_same_report(merged, whole)
    assert [g["group"] for g in merged["groups"]] == ["a", "b", "c"]


def test_merge_beyond_exact_quantiles_uses_identical_sketches(tmp_path):
    from lossctl.aggregate import RunState

    rng = np.random.default_rng(2)
    v = rng.lognormal(size=50_000)
    whole, a, b = RunState(), RunState(), RunState()
    for s in (whole, a, b):
        s.all.stats.exact_limit = 10_000
    whole.all.add(v, v, None, {})
    a.all.add(v[:20_000], v[:20_000], None, {})
    b.all.add(v[20_000:], v[20_000:], None, {})
    back = RunState.from_dict(json.loads(json.dumps(a.to_dict())))
    back.merge(RunState.from_dict(json.loads(json.dumps(b.to_dict()))))
    got, want = back.all.stats.summary(), whole.all.stats.summary()
    assert got["quantiles"] == want["quantiles"] and "approximate" in got["quantiles"]
    for key in ("count", "sum", "mean", "std", "min", "max"):
        assert got[key] == pytest.approx(want[key], rel=1e-12)
    assert back.all.stats.quantiles((0.5, 0.9, 0.99)) == whole.all.stats.quantiles((0.5, 0.9, 0.99))


def test_merge_refuses_different_losses_parameters_or_bootstrap(cli, tmp_path):
    rng = np.random.default_rng(3)
    np.save(tmp_path / "p.npy", rng.normal(size=50))
    np.save(tmp_path / "t.npy", rng.normal(size=50))
    p, t = str(tmp_path / "p.npy"), str(tmp_path / "t.npy")

    def state(name, *args):
        path = str(tmp_path / f"{name}.json")
        assert cli(["compute", *args, p, t, "--save-state", path, "-b"]).code == 0
        return path

    h1 = state("h1", "huber", "--delta", "1")
    h2 = state("h2", "huber", "--delta", "2")
    m = state("m", "mse")
    c = state("c", "huber", "--delta", "1", "--ci", "0.9", "--seed", "1")
    assert_clean_error(cli(["merge", h1, h2]), 1, "params", "identical")
    assert_clean_error(cli(["merge", h1, m]), 1, "different losses")
    assert_clean_error(cli(["merge", h1, c]), 1, "bootstrap")
    assert_clean_error(cli(["merge", h1, str(tmp_path / "nope.json")]), 1, "file not found")
    (tmp_path / "bad.json").write_text('{"hello": 1}')
    assert_clean_error(cli(["merge", str(tmp_path / "bad.json")]), 1, "not a lossctl state")
    assert_clean_error(cli(["merge", h1, "--ci", "0.9"]), 2, "bootstrap resamples")
    # the same shard twice would count its rows twice: refused (tests/test_configs_states.py has more)
    assert_clean_error(cli(["merge", h1, h1, "-f", "json"]), 1, "same state")


def test_merge_bounds_exit_codes(cli, tmp_path):
    rng = np.random.default_rng(4)
    np.save(tmp_path / "p.npy", rng.normal(size=30))
    np.save(tmp_path / "t.npy", rng.normal(size=30))
    s = str(tmp_path / "s.json")
    cli(["compute", "mae", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--save-state", s, "-b"])
    value = cli(["merge", s, "-b"])
    assert value.code == 0
    assert cli(["merge", s, "-b", "--max", str(float(value.out) - 0.01)]).code == 3
