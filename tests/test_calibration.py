"""Calibration: ece (ECE / RMS / MCE) and brier, and the reliability table of classification losses.

Oracles written here, independently of lossctl: torchmetrics' calibration-error formulas
(per-bin accuracy and mean confidence, weighted by the bin's share of rows) with bins found by an
explicit loop over sklearn's edges, scikit-learn's calibration_curve and brier_score_loss, and
softmax/sigmoid from SciPy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import expit, softmax

from conftest import run_cli

sklearn = pytest.importorskip("sklearn", reason="scikit-learn (the test extra) is the reference for calibration_curve")
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import brier_score_loss  # noqa: E402

N, C = 3000, 5


def _data(seed=0, n=N, c=C):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, c))
    # labels drawn from a sharpened softmax: a miscalibrated but informative classifier
    p = softmax(1.7 * logits, axis=1)
    labels = np.array([rng.choice(c, p=row) for row in p])
    return logits, labels


def _files(tmp_path, logits, labels, name="m"):
    pred, target = tmp_path / f"{name}_pred.npy", tmp_path / f"{name}_label.npy"
    np.save(pred, logits)
    np.save(target, labels)
    return str(pred), str(target)


def _bin_of(conf: float, n_bins: int) -> int:
    """sklearn's bins: (low, high], the first one [0, high]; found by a plain loop."""
    for b in range(n_bins):
        if conf <= (b + 1) / n_bins or b == n_bins - 1:
            return b
    raise AssertionError


def _oracle(conf, hit, n_bins, norm):
    """torchmetrics' _ce_compute: acc_bin, conf_bin, prop_bin per bin, then l1 / l2 / max."""
    count = [0] * n_bins
    sconf = [[] for _ in range(n_bins)]
    shit = [[] for _ in range(n_bins)]
    for cf, h in zip(conf.tolist(), hit.tolist()):
        b = _bin_of(cf, n_bins)
        count[b] += 1
        sconf[b].append(cf)
        shit[b].append(h)
    total = len(conf)
    gaps, props = [], []
    for b in range(n_bins):
        if count[b]:
            gaps.append(math.fsum(shit[b]) / count[b] - math.fsum(sconf[b]) / count[b])
            props.append(count[b] / total)
    if norm == "l1":
        return math.fsum(abs(g) * p for g, p in zip(gaps, props))
    if norm == "l2":
        return math.sqrt(math.fsum(g * g * p for g, p in zip(gaps, props)))
    return max(abs(g) for g in gaps)


def _compute(args):
    res = run_cli(["compute", *args, "-f", "json"])
    assert res.code == 0, res.err
    return res.json


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("bins", [15, 7])
def test_multiclass_ece_matches_the_torchmetrics_formulas(tmp_path, norm, bins):
    logits, labels = _data()
    pred, target = _files(tmp_path, logits, labels)
    q = softmax(logits, axis=1)
    conf, hit = q.max(axis=1), (q.argmax(axis=1) == labels).astype(float)
    rep = _compute(["ece", pred, target, "--bins", str(bins), "--norm", norm])
    assert rep["value"] == pytest.approx(_oracle(conf, hit, bins, norm), rel=1e-12, abs=1e-12)
    assert rep["count"] == N
    # The per-sample value is the row's calibration gap |confidence - correct|.
    assert rep["stats"]["mean"] == pytest.approx(np.mean(np.abs(conf - hit)), rel=1e-12)


@pytest.mark.parametrize("kind", ["logits", "probs"])
def test_binary_ece_matches_the_torchmetrics_binary_formula(tmp_path, kind):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, size=N)
    y = (rng.random(N) < expit(0.6 * x)).astype(np.int64)
    p = expit(x)
    pred, target = _files(tmp_path, x if kind == "logits" else p, y)
    rep = _compute(["ece", pred, target, "--pred-kind", kind, "--bins", "10"])
    assert rep["value"] == pytest.approx(_oracle(p, y.astype(float), 10, "l1"), rel=1e-12, abs=1e-12)


def test_ece_table_equals_calibration_curve_and_headline_is_from_its_bins(tmp_path):
    logits, labels = _data(1)
    pred, target = _files(tmp_path, logits, labels)
    q = softmax(logits, axis=1)
    conf, hit = q.max(axis=1), (q.argmax(axis=1) == labels).astype(int)
    rep = _compute(["ece", pred, target, "--bins", "12"])
    prob_true, prob_pred = calibration_curve(hit, conf, n_bins=12, strategy="uniform")
    full = [b for b in rep["reliability"]["bins"] if b["count"]]
    assert len(rep["reliability"]["bins"]) == 12
    np.testing.assert_allclose([b["accuracy"] for b in full], prob_true, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose([b["confidence"] for b in full], prob_pred, rtol=1e-12, atol=1e-12)
    assert sum(b["count"] for b in full) == N


def test_cross_entropy_report_has_a_reliability_table_equal_to_calibration_curve(tmp_path):
    logits, labels = _data(2)
    pred, target = _files(tmp_path, logits, labels)
    q = softmax(logits, axis=1)
    conf, hit = q.max(axis=1), (q.argmax(axis=1) == labels).astype(int)
    for loss, args in (("cross-entropy", [pred, target]), ("nll", None)):
        if loss == "nll":
            lp = tmp_path / "lp.npy"
            np.save(lp, np.log(q))
            args = [str(lp), target]
        rep = _compute([loss, *args])
        rel = rep["reliability"]
        assert rel["n_bins"] == 10 and rel["binning"] == "uniform"
        prob_true, prob_pred = calibration_curve(hit, conf, n_bins=10)
        full = [b for b in rel["bins"] if b["count"]]
        np.testing.assert_allclose([b["accuracy"] for b in full], prob_true, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose([b["confidence"] for b in full], prob_pred, rtol=1e-12, atol=1e-12)
        assert [b["low"] for b in rel["bins"]] == pytest.approx(np.linspace(0, 0.9, 10))
        assert not any(k.startswith("rel/") for k in rep["components"])


@pytest.mark.parametrize("loss", ["binary-cross-entropy", "focal"])
def test_binary_losses_have_a_reliability_table_of_positive_probability(tmp_path, loss):
    rng = np.random.default_rng(4)
    x = rng.normal(0, 2, size=2000)
    y = (rng.random(2000) < expit(0.8 * x)).astype(np.float64)
    pred, target = _files(tmp_path, x, y)
    rel = _compute([loss, pred, target])["reliability"]
    prob_true, prob_pred = calibration_curve(y, expit(x), n_bins=10)
    full = [b for b in rel["bins"] if b["count"]]
    np.testing.assert_allclose([b["accuracy"] for b in full], prob_true, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose([b["confidence"] for b in full], prob_pred, rtol=1e-12, atol=1e-12)


def test_chunk_size_does_not_change_ece_or_the_table(tmp_path):
    logits, labels = _data(5)
    pred, target = _files(tmp_path, logits, labels)
    base = _compute(["ece", pred, target, "--norm", "l2"])
    for chunk in ("7", "1000"):
        rep = _compute(["ece", pred, target, "--norm", "l2", "--chunk-size", chunk])
        assert rep["value"] == pytest.approx(base["value"], rel=1e-14, abs=1e-15)
        for a, b in zip(rep["reliability"]["bins"], base["reliability"]["bins"]):
            assert a["count"] == b["count"]
            if a["count"]:
                assert a["confidence"] == pytest.approx(b["confidence"], rel=1e-14)
                assert a["accuracy"] == pytest.approx(b["accuracy"], rel=1e-14)


def test_saved_states_merge_to_the_ece_of_all_rows(tmp_path):
    logits, labels = _data(6)
    q = softmax(logits, axis=1)
    conf, hit = q.max(axis=1), (q.argmax(axis=1) == labels).astype(float)
    states = []
    for k, (a, b) in enumerate(((0, 1100), (1100, N))):
        pred, target = _files(tmp_path, logits[a:b], labels[a:b], name=f"s{k}")
        state = str(tmp_path / f"s{k}.json")
        res = run_cli(["compute", "ece", pred, target, "--save-state", state, "--row-offset", str(a), "-b"])
        assert res.code == 0, res.err
        states.append(state)
    res = run_cli(["merge", *states, "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(_oracle(conf, hit, 15, "l1"), rel=1e-12, abs=1e-12)
    assert sum(b["count"] for b in res.json["reliability"]["bins"]) == N


def test_group_by_gives_each_group_its_own_ece(tmp_path):
    logits, labels = _data(7, n=1200)
    q = softmax(logits, axis=1)
    conf, hit = q.max(axis=1), (q.argmax(axis=1) == labels).astype(float)
    groups = np.arange(1200) % 3
    pred, target = _files(tmp_path, logits, labels)
    g = tmp_path / "g.csv"
    g.write_text("g\n" + "\n".join(map(str, groups)) + "\n")
    rep = _compute(["ece", pred, target, "--group-by", f"{g}:g", "--norm", "max"])
    got = {int(r["group"]): r["value"] for r in rep["groups"]}
    for k in range(3):
        sel = groups == k
        assert got[k] == pytest.approx(_oracle(conf[sel], hit[sel], 15, "max"), rel=1e-12, abs=1e-12)


def test_quantile_binning_is_close_to_exact_quantiles_and_says_it_is_approximate(tmp_path):
    logits, labels = _data(8)
    pred, target = _files(tmp_path, logits, labels)
    rep = _compute(["ece", pred, target, "--binning", "quantile", "--bins", "10"])
    rel = rep["reliability"]
    assert rel["approximate"] is True and "approximate" in rel["note"]
    counts = [b["count"] for b in rel["bins"]]
    assert sum(counts) == N and len(counts) == 10
    # Bins of about N/10 rows: edges on a 1/1000 grid move each by at most the rows in one grid cell.
    q = softmax(logits, axis=1)
    conf = np.sort(q.max(axis=1))
    per_cell = max(np.sum((conf > k / 1000) & (conf <= (k + 1) / 1000)) for k in range(1000))
    assert all(abs(c - N / 10) <= 2 * per_cell + 1 for c in counts), counts


def test_ece_refuses_sum_and_ci_with_quantile_bins_with_a_clear_message(tmp_path):
    logits, labels = _data(9, n=50)
    pred, target = _files(tmp_path, logits, labels)
    res = run_cli(["compute", "ece", pred, target, "--ci", "0.9", "--binning", "quantile"])
    assert res.code == 2 and "--ci is not available for ece with --binning quantile" in res.err
    assert "Traceback" not in res.err
    res = run_cli(["compute", "ece", pred, target, "--reduction", "sum"])
    assert res.code == 2 and "--reduction sum" in res.err


def _numpy_bootstrap(conf, hit, n_bins, norm, level, resamples=2000, seed=1):
    """An independent Poisson bootstrap of the ECE: NumPy's own generator for the weights and
    a weighted version of the oracle's bins (count, mean confidence, accuracy per bin)."""
    rng = np.random.default_rng(seed)
    bins = np.array([_bin_of(c, n_bins) for c in conf.tolist()])
    est = []
    for _ in range(resamples):
        w = rng.poisson(1.0, size=len(conf)).astype(float)
        n = np.bincount(bins, weights=w, minlength=n_bins)
        sc = np.bincount(bins, weights=w * conf, minlength=n_bins)
        sh = np.bincount(bins, weights=w * hit, minlength=n_bins)
        full = n > 0
        gap = np.abs(sh[full] / n[full] - sc[full] / n[full])
        if norm == "l1":
            est.append(float((gap * n[full]).sum() / n.sum()))
        elif norm == "l2":
            est.append(float(np.sqrt((gap**2 * n[full]).sum() / n.sum())))
        else:
            est.append(float(gap.max()))
    return np.quantile(est, [(1 - level) / 2, (1 + level) / 2])


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_ece_interval_agrees_with_an_independent_bootstrap(tmp_path, norm):
    """The streaming bootstrap resamples the bin sums: its interval is a bootstrap of the ECE.
    Checked against a NumPy bootstrap written here (its own random stream), to a tenth of the
    interval's width, and it holds the value."""
    logits, labels = _data(11, n=2000)
    pred, target = _files(tmp_path, logits, labels)
    rep = _compute(["ece", pred, target, "--norm", norm, "--bins", "10", "--ci", "0.9", "--ci-n", "2000"])
    q = softmax(logits, axis=1)
    conf, hit = q.max(axis=1), (q.argmax(axis=1) == labels).astype(float)
    lo, hi = _numpy_bootstrap(conf, hit, 10, norm, 0.9)
    ci = rep["ci"]
    width = hi - lo
    assert ci["low"] == pytest.approx(lo, abs=0.1 * width) and ci["high"] == pytest.approx(hi, abs=0.1 * width)
    if norm != "max":  # the MCE's bootstrap distribution can sit above its value (a maximum of noisy gaps)
        assert ci["low"] < rep["value"] < ci["high"]


def test_ece_interval_does_not_depend_on_chunks_and_merges(tmp_path):
    logits, labels = _data(12, n=1500)
    pred, target = _files(tmp_path, logits, labels)
    one = _compute(["ece", pred, target, "--ci", "0.95"])["ci"]
    chunked = _compute(["ece", pred, target, "--ci", "0.95", "--chunk-size", "97"])["ci"]
    assert chunked["low"] == pytest.approx(one["low"], rel=1e-12) and chunked["high"] == pytest.approx(one["high"], rel=1e-12)
    a, b = _files(tmp_path, logits[:700], labels[:700], "a"), _files(tmp_path, logits[700:], labels[700:], "b")
    sa, sb = tmp_path / "a.json", tmp_path / "b.json"
    assert run_cli(["compute", "ece", *a, "--ci", "0.95", "--save-state", sa, "-b"]).code == 0
    assert run_cli(["compute", "ece", *b, "--ci", "0.95", "--row-offset", "700", "--save-state", sb, "-b"]).code == 0
    merged = run_cli(["merge", sa, sb, "-f", "json"])
    assert merged.code == 0, merged.err
    m = merged.json["ci"]
    assert m["low"] == pytest.approx(one["low"], rel=1e-12) and m["high"] == pytest.approx(one["high"], rel=1e-12)


def test_ece_with_nan_propagate_is_nan_and_omit_counts_rows(tmp_path):
    logits, labels = _data(10, n=200)
    logits[5, 2] = np.nan
    pred, target = _files(tmp_path, logits, labels)
    rep = _compute(["ece", pred, target, "--nan", "propagate"])
    assert rep["value"] is None and rep["rows"]["nan_propagated"] == 1  # NaN is null in JSON
    rep = _compute(["ece", pred, target, "--nan", "omit"])
    keep = np.ones(200, bool)
    keep[5] = False
    q = softmax(logits[keep], axis=1)
    want = _oracle(q.max(axis=1), (q.argmax(axis=1) == labels[keep]).astype(float), 15, "l1")
    assert rep["value"] == pytest.approx(want, rel=1e-12) and rep["rows"]["nan_omitted"] == 1


def test_brier_multiclass_and_binary_match_scikit_learn(tmp_path):
    logits, labels = _data(11)
    pred, target = _files(tmp_path, logits, labels)
    q = softmax(logits, axis=1)
    onehot = np.eye(C)[labels]
    want = np.mean([math.fsum(r) for r in (q - onehot) ** 2])
    rep = _compute(["brier", pred, target])
    assert rep["value"] == pytest.approx(want, rel=1e-12)
    try:  # scikit-learn >= 1.7 scores multi-class probabilities the same way (Brier 1950)
        sk = brier_score_loss(labels, q, labels=list(range(C)), scale_by_half=False)
        assert rep["value"] == pytest.approx(sk, rel=1e-12)
    except TypeError:
        pass
    probs = tmp_path / "q.npy"
    np.save(probs, q)
    assert _compute(["brier", str(probs), target, "--pred-kind", "probs"])["value"] == pytest.approx(want, rel=1e-12)
    rng = np.random.default_rng(12)
    x = rng.normal(0, 2, size=500)
    y = (rng.random(500) < expit(x)).astype(np.int64)
    bp, bt = _files(tmp_path, x, y, name="b")
    assert _compute(["brier", bp, bt])["value"] == pytest.approx(brier_score_loss(y, expit(x)), rel=1e-12)


def test_brier_gradient_matches_finite_differences(tmp_path):
    logits, labels = _data(13, n=20, c=4)
    pred, target = _files(tmp_path, logits, labels)
    out = tmp_path / "g.npy"
    res = run_cli(["compute", "brier", pred, target, "--grad", str(out), "-b"])
    assert res.code == 0, res.err
    g = np.load(out)

    def f(x, n):
        d = softmax(x) - np.eye(4)[labels[n]]
        return float(d @ d)

    h = 1e-6
    for n in range(20):
        for c in range(4):
            e = np.zeros(4)
            e[c] = h
            fd = (f(logits[n] + e, n) - f(logits[n] - e, n)) / (2 * h)
            assert g[n, c] == pytest.approx(fd, abs=1e-7)


def test_ece_and_brier_are_listed_and_explained():
    res = run_cli(["list", "-f", "json"])
    assert res.code == 0
    names = json.dumps(res.json)
    assert '"ece"' in names and '"brier"' in names
    res = run_cli(["explain", "ece"])
    assert res.code == 0 and "torchmetrics" in res.out


@pytest.mark.slow
def test_dask_engine_gives_the_local_ece_and_table(tmp_path):
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    import os

    from conftest import write_parquet

    logits, labels = _data(14, n=1500)
    f = write_parquet(tmp_path / "c.parquet", {"logits": logits, "label": labels}, row_group_size=200)
    args = ["compute", "ece", f"{f}:logits", f"{f}:label", "--norm", "l2", "-f", "json"]
    local = run_cli(args)
    saved = dict(os.environ)
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    )
    os.environ.clear()
    os.environ.update(saved)
    try:
        dask = run_cli([*args, "--engine", "dask", "--scheduler", cluster.scheduler_address])
    finally:
        cluster.close()
    assert local.code == 0 and dask.code == 0, dask.err
    assert dask.json["value"] == pytest.approx(local.json["value"], rel=1e-12)
    counts = [[b["count"] for b in r.json["reliability"]["bins"]] for r in (dask, local)]
    assert counts[0] == counts[1]


def test_terminal_table_shows_the_reliability_bins_for_ece_and_with_hist(tmp_path):
    logits, labels = _data(15, n=400)
    pred, target = _files(tmp_path, logits, labels)
    res = run_cli(["compute", "ece", pred, target, "--bins", "4"])
    assert res.code == 0, res.err
    assert "reliability (4 uniform bins)" in res.out and "confidence" in res.out
    res = run_cli(["compute", "ece", pred, target, "--binning", "quantile", "--bins", "4"])
    assert "approximate edges" in res.out
    assert "reliability" not in run_cli(["compute", "ce", pred, target]).out
    assert "reliability (10 uniform bins)" in run_cli(["compute", "ce", pred, target, "--hist"]).out
