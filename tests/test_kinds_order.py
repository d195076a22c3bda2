"""Issue #12 items 2, 3 and 10: never guess silently what the numbers are.

- #12.3 one argument order for every loss: the model's outputs first, then the references;
- #12.2 a prediction declared as logits that looks like probabilities or log-probabilities
  (and the reverse cases) gives a warning (stderr + the report's ``warnings``); --strict
  turns warnings into exit 1;
- #12.10 rectangular policy-kl gradients to NPY, --reduction none with --per-sample FILE,
  the softmax-focal explain text, and what --grad writes for ignored rows.

Every number is checked against an independent float64 / SciPy oracle written here.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from scipy.special import log_softmax, rel_entr, softmax
from scipy.spatial.distance import jensenshannon

from conftest import ROOT, assert_clean_error, run_cli


def npy(tmp_path, name: str, a) -> str:
    path = tmp_path / name
    np.save(path, np.asarray(a))
    return str(path)


def _probs(rng, n: int, c: int) -> np.ndarray:
    p = rng.random((n, c)) + 0.05
    return p / p.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------
# #12.3 argument order
# ---------------------------------------------------------------------------

# Role names that hold the model's outputs, and those that hold references.
_MODEL = {"pred", "student", "policy-logp", "new-logp", "recon", "mu", "logvar", "anchor", "x1", "query", "var"}
_REFERENCE = {"target", "teacher", "ref-logp", "old-logp", "advantages", "labels", "prior-mu", "prior-logvar"}
# Extra model outputs that follow the reference, as in PyTorch (F.gaussian_nll_loss(input, target, var)).
_EXTRAS_LAST = {"gaussian-nll": {"var"}, "vae": {"mu", "logvar"}}


def test_every_loss_takes_model_outputs_before_references():
    from lossctl import registry

    for spec in registry.LOSSES:
        names = [r.name for r in spec.inputs]
        assert spec.pred_index == 0, spec.name  # the gradient is w.r.t. the first input
        assert names[0] in _MODEL, (spec.name, names)
        seen_reference = False
        for n in names:
            if n in _REFERENCE:
                seen_reference = True
            elif n in _MODEL and seen_reference:
                assert n in _EXTRAS_LAST.get(spec.name, ()), (spec.name, names)


def test_kl_and_js_take_pred_then_target(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 4)) * 2  # logits of the prediction Q
    p = _probs(rng, 7, 4)  # target P
    q = softmax(x, axis=1)
    xp, pp = npy(tmp_path, "x.npy", x), npy(tmp_path, "p.npy", p)
    res = run_cli(["compute", "kl", xp, pp, "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(rel_entr(p, q).sum(axis=1).mean(), rel=1e-13)
    assert [i["role"] for i in res.json["inputs"]] == ["pred", "target"]
    rev = run_cli(["compute", "kl", xp, pp, "--direction", "reverse", "-f", "json"])
    assert rev.json["value"] == pytest.approx(rel_entr(q, p).sum(axis=1).mean(), rel=1e-13)
    js = run_cli(["compute", "js", xp, pp, "-f", "json"])
    assert js.json["value"] == pytest.approx((jensenshannon(p, q, axis=1) ** 2).mean(), rel=1e-10)
    # the old order (TARGET PRED) reads the logits as probabilities: an error, not another number
    old = run_cli(["compute", "kl", pp, xp])
    assert_clean_error(old, 1, "x.npy")


def test_kl_gradient_is_with_respect_to_the_first_input(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 3))
    p = _probs(rng, 5, 3)
    g_path = tmp_path / "g.npy"
    res = run_cli(["compute", "kl", npy(tmp_path, "x.npy", x), npy(tmp_path, "p.npy", p), "--grad", g_path])
    assert res.code == 0, res.err
    # d/dx Σ_c p_c (log p_c - log softmax(x)_c) = softmax(x)·Σp - p
    np.testing.assert_allclose(np.load(g_path), softmax(x, axis=1) - p, rtol=1e-12, atol=1e-15)


def test_the_order_rule_is_stated_in_help_list_and_readme():
    rule_words = "model's outputs first"
    help_ = run_cli(["compute", "--help"])
    assert rule_words in " ".join(help_.out.split())
    listing = run_cli(["list"])
    assert rule_words in " ".join(listing.out.split())
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    assert "One argument order for every loss" in readme
    assert "| `kl-divergence` (`kl`) | pred `(N, C)`, target `(N, C)` |" in readme
    assert "| `js-divergence` (`js`) | pred `(N, C)`, target `(N, C)` |" in readme


# ---------------------------------------------------------------------------
# #12.2 warnings when the declared kind looks wrong
# ---------------------------------------------------------------------------


def _ce_oracle(x: np.ndarray, y: np.ndarray) -> float:
    """Cross-entropy of logits x against indices y, float64 log-softmax (SciPy)."""
    return float(-log_softmax(x.astype(np.float64), axis=1)[np.arange(len(y)), y].mean())


@pytest.fixture
def proba(tmp_path):
    rng = np.random.default_rng(12)
    p = _probs(rng, 60, 5)
    y = rng.integers(0, 5, 60)
    return p, y, npy(tmp_path, "proba.npy", p), npy(tmp_path, "y.npy", y)


def test_probabilities_read_as_logits_warn_once_on_stderr_and_in_json(proba):
    p, y, pp, yp = proba
    res = run_cli(["compute", "ce", pp, yp, "-f", "json", "--chunk-size", "7"])  # 9 chunks
    assert res.code == 0, res.err
    doc = res.json  # stdout is one clean JSON document
    # the number is unchanged: the input is still read as declared (logits), never guessed
    assert doc["value"] == pytest.approx(_ce_oracle(p, y), rel=1e-13)
    assert _ce_oracle(p, y) != pytest.approx(float(-np.log(p[np.arange(60), y]).mean()), rel=1e-3)
    assert len(doc["warnings"]) == 1
    w = doc["warnings"][0]
    assert "--pred-kind probs" in w and "proba.npy" in w and "all 60 rows" in w
    lines = [ln for ln in res.err.splitlines() if ln.startswith("lossctl: warning:")]
    assert lines == [f"lossctl: warning: {w}"]  # once, not per chunk
    assert "warning" not in res.out.replace('"warnings"', "")
    # markdown carries it too; --quiet silences stderr only
    md = run_cli(["compute", "ce", pp, yp, "-f", "markdown", "--quiet"])
    assert md.code == 0 and md.err == ""
    md_lines = [ln for ln in md.out.splitlines() if "warning:" in ln]
    assert len(md_lines) == 1 and "--pred-kind probs" in md_lines[0] and "proba.npy" in md_lines[0]


def test_one_row_that_is_not_a_distribution_means_no_warning(tmp_path, proba):
    p, y, _, yp = proba
    q = p.copy()
    q[57] = [0.5, 0.5, 0.5, 0.0, 0.0]  # in [0, 1] but sums to 1.5: not probabilities (last chunk)
    res = run_cli(["compute", "ce", npy(tmp_path, "q.npy", q), yp, "-f", "json", "--chunk-size", "10"])
    assert res.code == 0, res.err
    assert res.json["warnings"] == [] and "warning" not in res.err
    q = p.copy()
    q[3, 0] = -1e-3  # one value just below 0
    q[3, 1] += 1e-3
    res = run_cli(["compute", "ce", npy(tmp_path, "q.npy", q), yp, "-f", "json"])
    assert res.json["warnings"] == []


def test_ordinary_logits_give_no_warning(tmp_path, proba):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 5)) * 2
    res = run_cli(["compute", "ce", npy(tmp_path, "x.npy", x), proba[3], "-f", "json"])
    assert res.code == 0 and res.err == ""
    assert res.json["warnings"] == []
    assert res.json["value"] == pytest.approx(_ce_oracle(x, proba[1]), rel=1e-13)


def test_log_probabilities_read_as_logits_warn(tmp_path, proba):
    p, y, _, yp = proba
    lp = np.log(p)
    for loss, extra in (("ce", [yp]), ("entropy", [])):
        res = run_cli(["compute", loss, npy(tmp_path, "lp.npy", lp), *extra, "-f", "json"])
        assert res.code == 0, res.err
        (w,) = res.json["warnings"]
        assert "log-probabilities" in w and "--pred-kind log-probs" in w
    # the value is the same either way (softmax of log-probabilities gives them back)
    res = run_cli(["compute", "ce", npy(tmp_path, "lp.npy", lp), yp, "-b"])
    assert float(res.out) == pytest.approx(float(-np.log(p[np.arange(60), y]).mean()), rel=1e-13)
    # declared as log-probs: no warning
    res = run_cli(["compute", "ce", npy(tmp_path, "lp.npy", lp), yp, "--pred-kind", "log-probs", "-f", "json"])
    assert res.json["warnings"] == [] and res.err == ""


def test_kl_and_js_prediction_that_looks_like_probabilities_warns(tmp_path, proba):
    p = proba[0]
    t = _probs(np.random.default_rng(8), 60, 5)
    for loss in ("kl", "js"):
        res = run_cli(["compute", loss, proba[2], npy(tmp_path, "t.npy", t), "-f", "json"])
        assert res.code == 0, res.err
        (w,) = res.json["warnings"]
        assert w.startswith("PRED (") and "--pred-kind probs" in w
    res = run_cli(["compute", "kl", proba[2], npy(tmp_path, "t.npy", t), "--pred-kind", "probs", "-f", "json"])
    assert res.json["warnings"] == []
    assert res.json["value"] == pytest.approx(rel_entr(t, p).sum(axis=1).mean(), rel=1e-13)


def test_element_wise_scores_have_no_row_rule(tmp_path):
    # bce (N, K): independent labels; rows that happen to sum to 1 say nothing about the kind
    x = np.array([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0]])
    t = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    res = run_cli(["compute", "bce", npy(tmp_path, "x.npy", x), npy(tmp_path, "t.npy", t), "-f", "json"])
    assert res.code == 0 and res.json["warnings"] == [] and res.err == ""
    sp = np.logaddexp(0, -x) * t + np.logaddexp(0, x) * (1 - t)  # softplus forms of BCE with logits
    assert res.json["value"] == pytest.approx(sp.mean(), rel=1e-14)


def test_distillation_teacher_probabilities_warn(tmp_path, proba):
    rng = np.random.default_rng(9)
    s = rng.normal(size=(60, 5))
    res = run_cli(["compute", "distillation", npy(tmp_path, "s.npy", s), proba[2], "-f", "json"])
    assert res.code == 0, res.err
    (w,) = res.json["warnings"]
    assert w.startswith("TEACHER (") and "log-probabilities are valid logits" in w


def test_the_warning_does_not_depend_on_the_chunk_size(proba):
    outs = {
        k: run_cli(["compute", "ce", proba[2], proba[3], "-f", "json", "--chunk-size", str(k)]).json["warnings"]
        for k in (1, 13, 1000)
    }
    assert outs[1] == outs[13] == outs[1000] and len(outs[1]) == 1


def test_strict_turns_the_warning_into_exit_1_and_writes_nothing(tmp_path, proba):
    out, grad, state = tmp_path / "rows.csv", tmp_path / "g.npy", tmp_path / "state.json"
    res = run_cli(["compute", "ce", proba[2], proba[3], "--strict", "--per-sample", out, "--grad", grad,
                   "--save-state", state, "-f", "json"])
    assert_clean_error(res, 1, "--strict", "--pred-kind probs", "proba.npy")
    assert not out.exists() and not grad.exists() and not state.exists()
    ok = run_cli(["compute", "ce", proba[2], proba[3], "--strict", "--pred-kind", "probs", "-b"])
    assert ok.code == 0, ok.err
    assert float(ok.out) == pytest.approx(float(-np.log(proba[0][np.arange(60), proba[1]]).mean()), rel=1e-13)


def test_strict_in_a_check_config(tmp_path, proba):
    cfg = tmp_path / "checks.toml"
    body = f'[[checks]]\nname = "val"\nloss = "ce"\ninputs = ["{proba[2]}", "{proba[3]}"]\nmax = 100\n'
    cfg.write_text(body)
    res = run_cli(["check", cfg, "-f", "json"])
    assert res.code == 0, res.err
    assert "lossctl: warning: check val: PRED (" in res.err
    assert res.json["checks"][0]["report"]["warnings"]
    cfg.write_text(body + "strict = true\n")
    res = run_cli(["check", cfg, "-f", "json"])
    assert res.code == 1
    assert res.json["checks"][0]["status"] == "error"
    assert "--pred-kind probs" in res.json["checks"][0]["error"]
    cfg.write_text('[defaults]\nstrict = "yes"\n' + body)
    res = run_cli(["check", cfg])
    assert res.code == 2 and "defaults.strict" in res.err and "true or false" in res.err


def test_nll_on_logits_asks_did_you_mean_ce(tmp_path, proba):
    x = np.random.default_rng(2).normal(size=(60, 5))
    res = run_cli(["compute", "nll", npy(tmp_path, "x.npy", x), proba[3]])
    assert_clean_error(res, 1, "x.npy, row", "did you mean `ce`")
    assert "--pred-kind" not in res.err.split("did you mean")[0]  # nll has no --pred-kind


def test_kl_target_logits_error_suggests_target_kind_logits(tmp_path):
    rng = np.random.default_rng(19)
    x = rng.normal(size=(20, 4))
    t = rng.normal(size=(20, 4)) * 10  # logits given as the target
    tp = npy(tmp_path, "t.npy", t)
    for loss in ("kl", "js"):
        res = run_cli(["compute", loss, npy(tmp_path, "x.npy", x), tp])
        assert_clean_error(res, 1, "t.npy, row 0", "outside [0, 1]", "use --target-kind logits")
    res = run_cli(["compute", "kl", npy(tmp_path, "x.npy", x), tp, "--target-kind", "logits", "-b"])
    assert res.code == 0, res.err
    ref = rel_entr(softmax(t, axis=1), softmax(x, axis=1)).sum(axis=1).mean()
    assert float(res.out) == pytest.approx(ref, rel=1e-12)
    # a target in [0, 1] that does not sum to 1 gets the same suggestion
    u = rng.random((20, 4))
    res = run_cli(["compute", "kl", npy(tmp_path, "x.npy", x), npy(tmp_path, "u.npy", u)])
    assert_clean_error(res, 1, "u.npy, row 0", "sum to", "use --target-kind logits")


def test_the_rule_is_documented_in_the_readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = " ".join(fh.read().split())
    for needle in ("Never guessed, but never silent", "every value in [0, 1] and every row summing to 1",
                   "every value ≤ 0 and every row's exponentials summing to 1", "`--strict`", "strict = true"):
        assert needle in readme, needle


# ---------------------------------------------------------------------------
# #12.10 rough edges
# ---------------------------------------------------------------------------


def test_policy_kl_gradients_of_a_rectangular_input_go_to_npy_and_csv(tmp_path):
    rng = np.random.default_rng(10)
    lp = -rng.random((6, 4)) * 3
    ref = -rng.random((6, 4)) * 3
    args = ["compute", "policy-kl", npy(tmp_path, "lp.npy", lp), npy(tmp_path, "ref.npy", ref), "--estimator", "k3"]
    res = run_cli([*args, "--grad", tmp_path / "g.npy", "-b"])
    assert res.code == 0, res.err
    g = np.load(tmp_path / "g.npy")
    # k3 = (rho - 1) - log rho, rho = exp(ref - lp): d/d lp = 1 - rho
    assert g.shape == (6, 4)
    np.testing.assert_allclose(g, 1.0 - np.exp(ref - lp), rtol=1e-13, atol=1e-15)
    res = run_cli([*args, "--grad", tmp_path / "g.csv", "-b"])
    assert res.code == 0, res.err
    rows = np.loadtxt(tmp_path / "g.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(rows[:, 1:], 1.0 - np.exp(ref - lp), rtol=1e-13, atol=1e-15)


def test_policy_kl_gradients_of_ragged_rows_are_still_refused_for_npy(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"lp": [[-0.5, -1.0], [-0.2]], "ref": [[-0.4, -1.5], [-0.3]]}), path)
    res = run_cli(["compute", "policy-kl", f"{path}:lp", f"{path}:ref", "--grad", tmp_path / "g.npy"])
    assert_clean_error(res, 2, "different length per row", ".parquet or .jsonl")
    assert not (tmp_path / "g.npy").exists()


def test_reduction_none_with_a_per_sample_file_writes_both(tmp_path):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(9, 3))
    y = rng.integers(0, 3, 9)
    out = tmp_path / "rows.csv"
    res = run_cli(["compute", "ce", npy(tmp_path, "x.npy", x), npy(tmp_path, "y.npy", y), "--reduction", "none",
                   "--per-sample", out])
    assert res.code == 0, res.err
    assert res.out == out.read_text()
    header, *lines = res.out.splitlines()
    assert header.split(",")[:3] == ["row", "loss", "status"]
    got = np.array([float(ln.split(",")[1]) for ln in lines])
    np.testing.assert_allclose(got, -log_softmax(x, axis=1)[np.arange(9), y], rtol=1e-14)
    # the help says so
    help_ = " ".join(run_cli(["compute", "ce", "--help"]).out.replace("│", " ").split())
    assert "(and to --per-sample PATH too when given)" in help_


def test_softmax_focal_reference_text_has_the_right_sign(tmp_path):
    from lossctl import registry

    ref_text = registry.get("softmax-focal").reference
    expr = ref_text.split("per sample equals ")[1].split(" with ce")[0]
    rng = np.random.default_rng(13)
    x = rng.normal(size=(8, 4)) * 2
    y = rng.integers(0, 4, 8)
    alpha, gamma = np.array([0.5, 1.0, 2.0, 0.25]), 1.5
    ce = -log_softmax(x, axis=1)[np.arange(8), y]
    documented = eval(expr, {"alpha": alpha, "y": y, "exp": np.exp, "gamma": gamma, "ce": ce})  # noqa: S307
    # Lin et al. 2017: FL = -alpha_y (1 - p_y)^gamma log p_y, non-negative
    p_y = softmax(x, axis=1)[np.arange(8), y]
    oracle = -alpha[y] * (1 - p_y) ** gamma * np.log(p_y)
    np.testing.assert_allclose(documented, oracle, rtol=1e-12)
    assert (documented > 0).all()
    res = run_cli(["compute", "softmax-focal", npy(tmp_path, "x.npy", x), npy(tmp_path, "y.npy", y),
                   "--alpha", "0.5,1,2,0.25", "--gamma", "1.5", "--reduction", "none"])
    got = np.array([float(ln.split(",")[1]) for ln in res.out.splitlines()[1:]])
    np.testing.assert_allclose(got, oracle, rtol=1e-12)
    assert "alpha[y] * (1 - exp(-ce))**gamma * ce" in run_cli(["explain", "softmax-focal"]).out


def test_gradients_of_ignored_rows_are_zero_and_of_uncomputed_rows_nan(tmp_path):
    x = np.array([[1.0, 2, 3], [0.5, 0.1, -1], [2, 2, 2], [1, np.nan, 0]])
    y = np.array([0, -100, 2, 1])
    res = run_cli(["compute", "ce", npy(tmp_path, "x.npy", x), npy(tmp_path, "y.npy", y), "--nan", "omit",
                   "--grad", tmp_path / "g.npy", "-b"])
    assert res.code == 0, res.err
    g = np.load(tmp_path / "g.npy")
    # rows 0 and 2: d loss_n / d x_n = softmax(x_n) - onehot(y_n) (per row, no 1/N)
    for i in (0, 2):
        np.testing.assert_allclose(g[i], softmax(x[i]) - np.eye(3)[y[i]], rtol=1e-14, atol=1e-16)
    assert (g[1] == 0).all()  # ignored: adds nothing to the loss
    assert np.isnan(g[3]).all()  # NaN row left out by --nan omit: never computed
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = " ".join(fh.read().split())
    assert "Ignored rows (`--ignore-index`, sequences without tokens) get 0" in readme
    assert "Rows never computed (`--nan omit`, dropped by `--id-col`) get NaN in NPY" in readme
