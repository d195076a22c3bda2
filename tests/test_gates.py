"""CI gates and analysis: bounds and baselines, check configs, composites, JUnit and markdown,
bootstrap intervals (with a coverage test), paired comparison, groups and histograms."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import SAMPLE, assert_clean_error, write_csv, write_parquet
from lossctl import checks

PQ = f"{SAMPLE}/classifier.parquet"
CE = ["compute", "cross-entropy", f"{PQ}:logits", f"{PQ}:label"]
REG = f"{SAMPLE}/regression.csv"


def mae_value() -> float:
    rows = list(csv.DictReader(open(REG)))
    return math.fsum(abs(float(r["target"]) - float(r["pred"])) for r in rows) / len(rows)


# ---------------------------------------------------------------------------
# bounds
# ---------------------------------------------------------------------------


def test_relative_increase_rules():
    assert checks.relative_increase(1.1, 1.0) == pytest.approx(0.1)
    assert checks.relative_increase(-0.9, -1.0) == pytest.approx(0.1)  # |baseline| in the denominator
    assert checks.relative_increase(0.0, 0.0) == 0.0
    assert checks.relative_increase(1e-12, 0.0) == math.inf
    assert checks.relative_increase(-1e-12, 0.0) == -math.inf


@pytest.mark.parametrize(
    "bounds, value, base, passed",
    [
        (checks.Bounds(max=1.0), 1.0, None, [True]),
        (checks.Bounds(max=1.0), 1.0 + 1e-12, None, [False]),
        (checks.Bounds(min=0.5), 0.4, None, [False]),
        (checks.Bounds(max_abs_increase=0.1), 1.1, 1.0, [True]),  # inclusive, despite 1.1 - 1.0 = 0.10000000000000009
        (checks.Bounds(max_abs_increase=0.1), 1.1000001, 1.0, [False]),
        (checks.Bounds(max_abs_increase=0.1), 1.05, 1.0, [True]),
        (checks.Bounds(max_rel_increase=0.02), 1.02, 1.0, [True]),
        (checks.Bounds(max_rel_increase=0.02), 1.03, 1.0, [False]),
        (checks.Bounds(max_rel_increase=0.02), 0.0, 0.0, [True]),
        (checks.Bounds(max_rel_increase=0.02), 1e-9, 0.0, [False]),
        (checks.Bounds(max=1.0, min=0.0), math.nan, None, [False, False]),
        (checks.Bounds(max_rel_increase=0.5), 1.0, math.nan, [False]),
    ],
)
def test_evaluate(bounds, value, base, passed):
    out = checks.evaluate(value, bounds, base)
    assert [o["passed"] for o in out] == passed


def test_compute_baseline_from_number_and_json(cli, tmp_path):
    base_json = tmp_path / "base.json"
    res = cli([*CE, "-f", "json"])
    base_json.write_text(res.out)
    value = res.json["value"]
    ok = cli([*CE, "-b", "--baseline", str(base_json), "--max-rel-increase", "0"])
    assert ok.code == 0, ok.err
    smoothed = cli(
        [*CE, "-f", "json", "--label-smoothing", "0.2", "--baseline", str(base_json), "--max-rel-increase", "0.01"]
    )
    assert smoothed.code == 3
    out = smoothed.json
    assert out["baseline"] == {"source": str(base_json), "value": value}
    rel = next(o for o in out["checks"] if o["bound"] == "max-rel-increase")
    assert rel["observed"] == pytest.approx((out["value"] - value) / value, rel=1e-12)
    assert not rel["passed"] and "relative increase" in smoothed.err
    # absolute increase against a number
    abs_ok = cli([*CE, "-b", "--baseline", str(value - 0.01), "--max-abs-increase", "0.02"])
    assert abs_ok.code == 0
    abs_bad = cli([*CE, "-b", "--baseline", str(value - 0.01), "--max-abs-increase", "0.005"])
    assert abs_bad.code == 3


def test_baseline_of_another_loss_is_an_error(cli, tmp_path):
    other = tmp_path / "mae.json"
    other.write_text(cli(["compute", "mae", f"{REG}:pred", f"{REG}:target", "-f", "json"]).out)
    assert_clean_error(cli([*CE, "--baseline", str(other), "--max-rel-increase", "0.1"]), 1, "is a mae result")
    assert_clean_error(cli([*CE, "--max-rel-increase", "0.1"]), 2, "--baseline")


def test_every_failed_bound_is_reported(cli):
    res = cli([*CE, "-f", "json", "--max", "0.1", "--min", "5"])
    assert res.code == 3
    assert [o["passed"] for o in res.json["checks"]] == [False, False]
    assert "> max 0.1" in res.err and "< min 5" in res.err


def test_compute_junit_and_markdown(cli, tmp_path):
    path = tmp_path / "j.xml"
    res = cli([*CE, "-b", "--max", "0.5", "--junit", str(path)])
    assert res.code == 3
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite.get("tests") == "1" and suite.get("failures") == "1"
    failure = suite.find("testcase").find("failure")
    assert "> max 0.5" in failure.get("message")
    md = cli([*CE, "-f", "markdown", "--max", "2"]).out
    assert "✅" in md and "<= max 2" in md


# ---------------------------------------------------------------------------
# lossctl check
# ---------------------------------------------------------------------------


def write_config(tmp_path, text: str) -> str:
    path = tmp_path / "checks.toml"
    path.write_text(text)
    return str(path)


def test_check_config_runs_every_check_and_reports_every_failure(cli, tmp_path):
    mae = mae_value()
    base = tmp_path / "base.json"
    base.write_text(cli(["compute", "mae", f"{REG}:pred", f"{REG}:target", "-f", "json"]).out)
    cfg = write_config(
        tmp_path,
        f"""
[[checks]]
name = "mae-ok"
loss = "mae"
inputs = ["{REG}:pred", "{REG}:target"]
max = {mae + 0.01}
baseline = "base.json"
max-rel-increase = 0.0

[[checks]]
name = "mae-too-high"
loss = "l1"
inputs = ["{REG}:pred", "{REG}:target"]
max = 0.5

[[checks]]
name = "huber-low"
loss = "huber"
inputs = ["{REG}:pred", "{REG}:target"]
params = {{ delta = 2.0 }}
min = 100
""",
    )
    res = cli(["check", cfg, "-f", "json", "--junit", str(tmp_path / "j.xml")])
    assert res.code == 3, res.err
    doc = res.json
    assert doc["kind"] == "check" and doc["passed"] is False
    assert doc["counts"] == {"pass": 1, "fail": 2, "error": 0}
    by = {c["name"]: c for c in doc["checks"]}
    assert by["mae-ok"]["value"] == pytest.approx(mae, rel=1e-12)
    assert by["mae-too-high"]["status"] == "fail" and by["huber-low"]["status"] == "fail"
    assert "mae-too-high" in res.err and "huber-low" in res.err
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert [tc.get("name") for tc in suite.findall("testcase")] == ["mae-ok", "mae-too-high", "huber-low"]
    assert suite.get("failures") == "2"
    fail = [tc for tc in suite.findall("testcase") if tc.get("name") == "huber-low"][0].find("failure")
    assert "< min 100" in fail.get("message")
    md = cli(["check", cfg, "-f", "markdown"]).out
    assert "1 passed, 2 failed, 0 errors" in md and "| `mae-too-high` | ❌ fail |" in md


def test_check_error_is_exit_1_and_still_runs_the_rest(cli, tmp_path):
    cfg = write_config(
        tmp_path,
        f"""
[[checks]]
name = "missing-file"
loss = "mse"
inputs = ["nope.csv:pred", "{REG}:target"]

[[checks]]
name = "fails"
loss = "mse"
inputs = ["{REG}:pred", "{REG}:target"]
max = 0.0
""",
    )
    res = cli(["check", cfg, "-f", "json"])
    assert res.code == 1
    by = {c["name"]: c for c in res.json["checks"]}
    assert by["missing-file"]["status"] == "error" and "file not found" in by["missing-file"]["error"]
    assert by["fails"]["status"] == "fail"


def test_check_nan_value_fails(cli, tmp_path):
    write_csv(tmp_path / "d.csv", {"p": np.array([1.0, np.nan]), "t": np.array([0.0, 0.0])})
    cfg = write_config(
        tmp_path,
        """
[[checks]]
name = "nan"
loss = "mse"
inputs = ["d.csv:p", "d.csv:t"]
nan = "propagate"
max = 10
""",
    )
    res = cli(["check", cfg, "-f", "json"])
    assert res.code == 3 and res.json["checks"][0]["outcomes"][0]["message"].endswith("is NaN")


def test_composite_weighted_sum_term_by_term(cli, tmp_path):
    mae = mae_value()
    rows = list(csv.DictReader(open(REG)))
    r = [float(x["target"]) - float(x["pred"]) for x in rows]
    huber2 = math.fsum(0.5 * v * v if abs(v) <= 2 else 2 * (abs(v) - 1) for v in r) / len(r)
    cfg = write_config(
        tmp_path,
        f"""
[[checks]]
name = "recipe"
max = 100
[[checks.terms]]
loss = "mae"
inputs = ["{REG}:pred", "{REG}:target"]
weight = 5
[[checks.terms]]
loss = "huber"
inputs = ["{REG}:pred", "{REG}:target"]
params = {{ delta = 2 }}
weight = 2
""",
    )
    res = cli(["check", cfg, "-f", "json"])
    assert res.code == 0, res.err
    c = res.json["checks"][0]
    assert c["composite"] is True
    assert [t["loss"] for t in c["terms"]] == ["mae", "huber"]
    assert c["terms"][0]["value"] == pytest.approx(mae, rel=1e-12)
    assert c["terms"][1]["value"] == pytest.approx(huber2, rel=1e-12)
    assert c["value"] == pytest.approx(5 * mae + 2 * huber2, rel=1e-12)
    table = cli(["check", cfg]).out
    assert "5 × mae" in table and "2 × huber" in table


@pytest.mark.parametrize(
    "body, needle",
    [
        (
            '[[checks]]\nname = "a"\nloss = "mse"\ninputs = ["x:p", "x:t"]\nmaxx = 1\n',
            "unknown key 'maxx'. Did you mean 'max'?",
        ),
        ('[[checks]]\nname = "a"\nloss = "msee"\ninputs = ["x:p", "x:t"]\n', "Unknown loss 'msee'"),
        (
            '[[checks]]\nname = "a"\nloss = "huber"\ninputs = ["x:p", "x:t"]\nparams = { delt = 1 }\n',
            "no parameter 'delt'",
        ),
        (
            '[[checks]]\nname = "a"\nloss = "huber"\ninputs = ["x:p", "x:t"]\nparams = { delta = -1 }\n',
            "--delta of huber must be",
        ),
        ('[[checks]]\nname = "a"\nloss = "mse"\ninputs = ["x:p"]\n', "takes 2 inputs"),
        ('[[checks]]\nname = "a"\nloss = "mse"\ninputs = ["x:p", "x:t"]\nmax-rel-increase = 0.1\n', "need a baseline"),
    ],
)
def test_bad_checks_are_errors_naming_the_check(cli, tmp_path, body, needle):
    """A problem inside one check makes that check an error (exit 1, as any check that could not
    run), named with the config file; the report is still written."""
    path = write_config(tmp_path, body)
    res = cli(["check", path, "-f", "json"])
    assert res.code == 1 and "Traceback" not in res.err, res.err
    assert needle in res.err and f"check a: {path}: check 1 (a)" in res.err, res.err
    assert res.json["checks"][0]["status"] == "error" and needle in res.json["checks"][0]["error"]


@pytest.mark.parametrize(
    "body, needle", [("[[checks]\n", "not valid TOML"), ("title = 1\n", "unknown key 'title'")]
)
def test_bad_configs_are_usage_errors(cli, tmp_path, body, needle):
    res = cli(["check", write_config(tmp_path, body)])
    assert_clean_error(res, 2, needle)


# ---------------------------------------------------------------------------
# confidence intervals
# ---------------------------------------------------------------------------


def test_ci_in_report_signature_and_independent_of_chunk_size(cli):
    a = cli([*CE, "-f", "json", "--ci", "0.9", "--ci-n", "300", "--seed", "7"]).json
    b = cli([*CE, "-f", "json", "--ci", "0.9", "--ci-n", "300", "--seed", "7", "--chunk-size", "13"]).json
    assert a["ci"]["level"] == 0.9 and a["ci"]["resamples"] == 300 and a["ci"]["seed"] == 7
    assert a["ci"]["low"] < a["value"] < a["ci"]["high"]
    assert b["ci"]["low"] == pytest.approx(a["ci"]["low"], rel=1e-12)
    assert b["ci"]["high"] == pytest.approx(a["ci"]["high"], rel=1e-12)
    assert "ci:0.9,n:300,seed:7" in a["signature"]
    c = cli([*CE, "-f", "json", "--ci", "0.9", "--ci-n", "300", "--seed", "8"]).json
    assert c["ci"]["low"] != a["ci"]["low"]
    assert_clean_error(cli([*CE, "--ci", "95"]), 2, "--ci is a confidence level")


def test_bootstrap_interval_covers_the_true_mean_at_its_level():
    """Synthetic data with a known mean: the 90% interval covers it about 90% of the time."""
    from lossctl.stats import PoissonBootstrap

    rng = np.random.default_rng(2024)
    reps, n, covered = 300, 400, 0
    for k in range(reps):
        x = rng.exponential(2.0, size=n)  # true mean 2
        b = PoissonBootstrap(400, seed=k)
        b.update(x, None, np.arange(n))
        lo, hi = b.interval(0.9)
        covered += lo <= 2.0 <= hi
    rate = covered / reps
    # binomial sd at p = 0.9, 300 reps: 0.017; percentile intervals of a skewed mean run a bit short
    assert 0.84 <= rate <= 0.95, rate


def test_ci_through_the_engine_matches_a_direct_bootstrap(tmp_path):
    from lossctl import engine, registry
    from lossctl.stats import PoissonBootstrap

    rng = np.random.default_rng(3)
    t = rng.exponential(1.0, size=3000)
    np.save(tmp_path / "p.npy", np.zeros(3000))
    np.save(tmp_path / "t.npy", t)
    spec = registry.get("mae")
    opts = engine.build_options({"ci": 0.95, "ci-n": 200, "seed": 5, "chunk-size": 257})
    rep = engine.run(spec, [str(tmp_path / "p.npy"), str(tmp_path / "t.npy")], {}, opts)
    b = PoissonBootstrap(200, 5)
    b.update(t, None, np.arange(3000))
    lo, hi = b.interval(0.95)
    assert rep["ci"]["low"] == pytest.approx(lo, rel=1e-12) and rep["ci"]["high"] == pytest.approx(hi, rel=1e-12)


# ---------------------------------------------------------------------------
# groups
# ---------------------------------------------------------------------------


@pytest.fixture
def grouped(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    pred = rng.normal(size=n)
    target = pred + rng.normal(size=n)
    lang = np.array(["en", "de", "fr"])[rng.integers(0, 3, size=n)]
    path = write_csv(tmp_path / "g.csv", {"lang": lang, "pred": pred, "target": target})
    return path, pred, target, lang


def test_group_by_column_every_format(cli, grouped):
    path, pred, target, lang = grouped
    args = ["compute", "mse", f"{path}:pred", f"{path}:target", "--group-by", "lang"]
    out = cli([*args, "-f", "json", "--chunk-size", "7"]).json
    assert out["group_by"] == "lang"
    groups = {g["group"]: g for g in out["groups"]}
    assert sorted(groups) == ["de", "en", "fr"]
    for key, g in groups.items():
        sel = lang == key
        assert g["count"] == int(sel.sum())
        assert g["value"] == pytest.approx(float(np.mean((target[sel] - pred[sel]) ** 2)), rel=1e-12)
        assert g["stats"]["max"] == pytest.approx(float(np.max((target[sel] - pred[sel]) ** 2)), rel=1e-12)
    assert sum(g["count"] for g in out["groups"]) == out["count"] == 120
    rows = list(csv.DictReader(io.StringIO(cli([*args, "-f", "csv"]).out)))
    assert [r["group"] for r in rows] == ["all", "de", "en", "fr"]
    assert float(rows[2]["value"]) == pytest.approx(groups["en"]["value"], rel=1e-12)
    md = cli([*args, "-f", "markdown"]).out
    assert "| `de` |" in md and "| group |" in md
    table = cli(args).out
    assert "by lang" in table and "all" in table


def test_group_by_side_file_and_per_group_bounds(cli, tmp_path, grouped):
    path, pred, target, lang = grouped
    side = write_csv(tmp_path / "meta.csv", {"lang": lang})
    out = cli(["compute", "mse", f"{path}:pred", f"{path}:target", "--group-by", f"{side}:lang", "-f", "json"]).json
    assert {g["group"] for g in out["groups"]} == {"en", "de", "fr"}
    worst = max(out["groups"], key=lambda g: g["value"])
    res = cli(
        [
            "compute",
            "mse",
            f"{path}:pred",
            f"{path}:target",
            "--group-by",
            "lang",
            "--per-group",
            "--max",
            str(worst["value"] - 1e-9),
            "-f",
            "json",
        ]
    )
    assert res.code == 3
    failed = [o for o in res.json["checks"] if not o["passed"]]
    assert [o.get("group") for o in failed] == [worst["group"]]
    assert_clean_error(
        cli(["compute", "mse", f"{path}:pred", f"{path}:target", "--group-by", "langg"]), 1, "--group-by 'langg'"
    )
    assert_clean_error(
        cli(["compute", "mse", f"{path}:pred", f"{path}:target", "--per-group", "--max", "1"]), 2, "--group-by"
    )


def test_group_by_with_id_join(cli, tmp_path):
    ids = np.array([f"k{i}" for i in range(6)])
    p = write_csv(tmp_path / "p.csv", {"id": ids, "pred": np.arange(6.0)})
    t = write_csv(
        tmp_path / "t.csv", {"id": ids[::-1], "target": np.zeros(6), "split": np.array(["a", "b", "a", "b", "a", "b"])}
    )
    out = cli(
        ["compute", "mae", f"{p}:pred", f"{t}:target", "--id-col", "id", "--group-by", "split", "-f", "json"]
    ).json
    by = {g["group"]: g["value"] for g in out["groups"]}
    # ids reversed: target row j holds id k(5-j); split 'a' is rows 0,2,4 -> ids k5,k3,k1 -> preds 5,3,1
    assert by == {"a": pytest.approx(3.0), "b": pytest.approx(2.0)}


# ---------------------------------------------------------------------------
# histogram
# ---------------------------------------------------------------------------


def test_histogram(cli):
    res = cli([*CE, "--hist", "-f", "json"])
    h = res.json["hist"]
    assert sum(h["counts"]) == 200 and len(h["edges"]) == len(h["counts"]) + 1
    assert h["edges"][0] == pytest.approx(res.json["stats"]["min"]) and h["edges"][-1] == pytest.approx(
        res.json["stats"]["max"]
    )
    table = cli([*CE, "--hist"]).out
    assert "per-sample loss" in table and "█" in table


def test_histogram_log_bins_for_heavy_tails(tmp_path):
    from lossctl.aggregate import Aggregate

    a = Aggregate()
    v = np.concatenate([np.full(990, 0.01), np.logspace(0, 4, 10)])
    a.add(v, v, None, {})
    h = a.histogram()
    assert h["scale"] == "log" and sum(h["counts"]) == 1000


# ---------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------


@pytest.fixture
def systems(tmp_path):
    rng = np.random.default_rng(1)
    n, c = 400, 4
    y = rng.integers(0, c, size=n)
    base = rng.normal(size=(n, c))
    base[np.arange(n), y] += 1.0
    better = base.copy()
    better[np.arange(n), y] += 0.5
    noise = base + rng.normal(size=(n, c)) * 1e-3
    for name, x in (("base", base), ("better", better), ("noise", noise)):
        write_parquet(tmp_path / f"{name}.parquet", {"logits": x})
    write_parquet(tmp_path / "labels.parquet", {"label": y})
    return tmp_path, base, better, noise, y


def _ce(x, y):
    m = x.max(axis=1)
    return np.log(np.exp(x - m[:, None]).sum(axis=1)) + m - x[np.arange(len(y)), y]


def test_compare_paired_difference_interval_and_p_value(cli, systems):
    d, base, better, noise, y = systems
    res = cli(
        [
            "compare",
            "ce",
            "--target",
            f"{d}/labels.parquet:label",
            f"{d}/base.parquet",
            f"{d}/better.parquet",
            f"{d}/noise.parquet",
            "-f",
            "json",
            "--permutations",
            "2000",
        ]
    )
    assert res.code == 0, res.err
    doc = res.json
    assert doc["kind"] == "compare" and doc["paired_rows"] == 400
    lb, lg, ln = _ce(base, y), _ce(better, y), _ce(noise, y)
    assert doc["baseline"]["value"] == pytest.approx(lb.mean(), rel=1e-12)
    good, same = doc["candidates"]
    assert good["delta"] == pytest.approx(lg.mean() - lb.mean(), rel=1e-10)
    assert good["delta_ci"]["high"] < 0 and good["p_value"] == pytest.approx(1 / 2001)
    assert good["better_rows"] == 400 and good["worse_rows"] == 0 and good["most_worse"] == []
    assert same["delta_ci"]["low"] < same["delta"] < same["delta_ci"]["high"]
    assert same["p_value"] > 0.05
    diff = ln - lb
    assert [w["row"] for w in same["most_worse"]] == list(np.argsort(-diff, kind="stable")[:5])
    assert same["most_worse"][0]["delta"] == pytest.approx(diff.max(), rel=1e-9)
    md = cli(
        [
            "compare",
            "ce",
            "--target",
            f"{d}/labels.parquet:label",
            f"{d}/base.parquet",
            f"{d}/better.parquet",
            "-f",
            "markdown",
            "--permutations",
            "100",
        ]
    ).out
    assert "(baseline)" in md and "| p |" in md


def _null_pairs(rng, m: int, weighted: bool) -> tuple[dict, dict]:
    """Two systems whose per-row values are exchangeable within each row (the null): a shared
    per-row difficulty plus independent noise, the same distribution for both."""
    base = rng.exponential(size=m)
    den = rng.choice([0.5, 1.0, 2.0], size=m) if weighted else np.ones(m)
    a = {"num": den * (base + rng.gamma(2.0, 0.3, size=m)), "den": den}
    c = {"num": den * (base + rng.gamma(2.0, 0.3, size=m)), "den": den.copy()}
    return a, c


@pytest.mark.parametrize("reduction,weighted", [("mean", False), ("mean", True), ("sum", False)])
def test_permutation_p_value_is_calibrated_under_the_null(reduction, weighted):
    """Under the null (systems exchangeable row by row), p <= 0.05 in about 5% of datasets:
    400 seeded null datasets, rejection rate within [0.02, 0.08] (the binomial sd is 0.011)."""
    from lossctl import compare

    n_sets, rejected = 400, 0
    for k in range(n_sets):
        rng = np.random.default_rng([12013, k])
        a, c = _null_pairs(rng, int(rng.integers(20, 60)), weighted)
        p = compare.permutation_p_value(a, c, reduction, 199, seed=k)
        assert 1 / 200 <= p <= 1.0
        rejected += p <= 0.05
    assert 0.02 <= rejected / n_sets <= 0.08, rejected


def test_permutation_p_value_approaches_the_exact_enumeration():
    """On 12 pairs, the randomized p-value is within Monte Carlo error of the exact one from
    all 2**12 swaps (enumerated here, with no random numbers)."""
    import itertools

    from lossctl import compare

    rng = np.random.default_rng(31)
    m = 12
    a = {"num": rng.exponential(size=m), "den": np.ones(m)}
    c = {"num": a["num"] + rng.normal(0.4, 0.8, size=m), "den": np.ones(m)}
    d = c["num"] - a["num"]
    obs = abs(math.fsum(d)) / m
    hits = sum(abs(math.fsum(s * v for s, v in zip(signs, d))) / m >= obs - 1e-12
               for signs in itertools.product((1, -1), repeat=m))  # fmt: skip
    exact = hits / 2**m
    assert 0.01 < exact < 0.5  # a p-value the test can resolve
    r = 20000
    p = compare.permutation_p_value(a, c, "mean", r, seed=5)
    assert abs(p - exact) < 4 * math.sqrt(exact * (1 - exact) / r) + 1 / r


def test_compare_needs_two_files_and_a_target(cli, systems):
    d = systems[0]
    assert_clean_error(
        cli(["compare", "ce", "--target", f"{d}/labels.parquet:label", f"{d}/base.parquet"]),
        2,
        "baseline and at least one candidate",
    )
    res = cli(["compare", "ce", f"{d}/base.parquet", f"{d}/better.parquet"])
    assert res.code == 2 and "--target" in res.err


def test_checks_reference_readme_formulas():
    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")).read()
    assert "over a zero baseline" in readme and "value - baseline > A" in readme
    help_text = json.dumps(checks.__doc__)
    assert "over a zero baseline" in checks.__doc__ and "max-rel-increase" in help_text


def test_check_config_per_group_bounds_against_a_grouped_baseline(cli, tmp_path, grouped):
    path, pred, target, lang = grouped
    base = tmp_path / "base.json"
    base.write_text(cli(["compute", "mse", f"{path}:pred", f"{path}:target", "--group-by", "lang", "-f", "json"]).out)
    write_csv(tmp_path / "w.csv", {"lang": lang, "pred": np.where(lang == "fr", pred + 1.0, pred), "target": target})
    cfg = write_config(
        tmp_path,
        """
[[checks]]
name = "per-language"
loss = "mse"
inputs = ["w.csv:pred", "w.csv:target"]
group-by = "lang"
per-group = true
baseline = "base.json"
max-rel-increase = 0.05
""",
    )
    res = cli(["check", cfg, "-f", "json"])
    assert res.code == 3, res.err
    outcomes = res.json["checks"][0]["outcomes"]
    failed = {o.get("group") for o in outcomes if not o["passed"]}
    assert "fr" in failed and "de" not in failed and "en" not in failed
    assert any(o.get("group") == "de" and o["passed"] for o in outcomes)
