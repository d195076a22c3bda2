"""--temperature / --scale-t2 on kl-divergence and js-divergence, and --classes for string labels
(issue #18, item 5). Oracles: mpmath softmax at 50 digits, SciPy's jensenshannon, plain Python."""

from __future__ import annotations

import math
import os

import mpmath
import numpy as np
import pytest
from conftest import assert_clean_error, finite_difference, ref_log_softmax, write_csv

from lossctl.losses.divergence import js_divergence, js_divergence_grad, kl_divergence, kl_divergence_grad

# -- temperature ----------------------------------------------------------------------------------


def mp_softmax(row, t):
    with mpmath.workdps(50):
        z = [mpmath.mpf(float(v)) / mpmath.mpf(t) for v in row]
        m = max(z)
        s = mpmath.fsum(mpmath.exp(v - m) for v in z)
        return [mpmath.exp(v - m) / s for v in z]


def mp_kl(p, q) -> float:
    with mpmath.workdps(50):
        return float(mpmath.fsum(a * mpmath.log(a / b) for a, b in zip(p, q) if a > 0))


def data(seed=3, n=7, c=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 3.0, size=(n, c))
    y = rng.normal(0.0, 3.0, size=(n, c))
    p = rng.dirichlet(np.ones(c), size=n)
    return x, y, p


@pytest.mark.parametrize("t", [0.5, 2.5, 7.0])
@pytest.mark.parametrize("scale", [False, True])
def test_kl_temperature_softens_logits_only(t, scale):
    x, y, p = data()
    res = kl_divergence(x, p, temperature=t, scale_t2=scale)  # target probabilities: used as given
    for i in range(len(x)):
        with mpmath.workdps(50):
            pp = [mpmath.mpf(float(v)) for v in p[i]]
        want = mp_kl(pp, mp_softmax(x[i], t)) * (t * t if scale else 1.0)
        assert res.loss[i] == pytest.approx(want, rel=1e-12)
    both = kl_divergence(x, y, target_kind="logits", temperature=t, scale_t2=scale)
    rev = kl_divergence(x, y, target_kind="logits", temperature=t, direction="reverse")
    for i in range(len(x)):
        pp, qq = mp_softmax(y[i], t), mp_softmax(x[i], t)
        assert both.loss[i] == pytest.approx(mp_kl(pp, qq) * (t * t if scale else 1.0), rel=1e-12)
        assert rev.loss[i] == pytest.approx(mp_kl(qq, pp), rel=1e-12)


def test_kl_temperature_leaves_log_probs_alone():
    x, y, _ = data(seed=5)
    lq = np.array([ref_log_softmax(r) for r in x.tolist()])  # a log-prob prediction: not softened
    res = kl_divergence(lq, y, pred_kind="log-probs", target_kind="logits", temperature=3.0)
    for i in range(len(x)):
        with mpmath.workdps(50):
            q = [mpmath.exp(mpmath.mpf(v)) for v in lq[i]]
        assert res.loss[i] == pytest.approx(mp_kl(mp_softmax(y[i], 3.0), q), rel=1e-11)


@pytest.mark.parametrize("t", [0.7, 4.0])
def test_js_temperature_against_scipy(t):
    from scipy.spatial.distance import jensenshannon

    x, _, p = data(seed=7)
    res = js_divergence(x, p, temperature=t, base=2.0)
    scaled = js_divergence(x, p, temperature=t, base=2.0, scale_t2=True)
    for i in range(len(x)):
        q = np.array([float(v) for v in mp_softmax(x[i], t)])
        want = jensenshannon(p[i], q, base=2.0) ** 2
        assert res.loss[i] == pytest.approx(want, rel=1e-9)
        assert scaled.loss[i] == pytest.approx(want * t * t, rel=1e-9)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("scale", [False, True])
def test_kl_and_js_gradients_with_temperature(direction, scale):
    x, y, p = data(seed=11)
    t = 2.0
    kw = {"target_kind": "logits", "temperature": t, "scale_t2": scale}
    g = kl_divergence_grad(x, y, direction=direction, **kw)
    fd = finite_difference(lambda v: kl_divergence(v, y, direction=direction, **kw).loss, x, 1e-6)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    g = js_divergence_grad(x, p, temperature=t, scale_t2=scale)
    fd = finite_difference(lambda v: js_divergence(v, p, temperature=t, scale_t2=scale).loss, x, 1e-6)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_cli_temperature_options_and_refusals(cli, tmp_path):
    x, _, p = data(seed=13, n=4, c=3)
    path = write_csv(
        tmp_path / "d.csv", {**{f"x{k}": x[:, k] for k in range(3)}, **{f"p{k}": p[:, k] for k in range(3)}}
    )
    res = cli(["compute", "kl", f"{path}:x*", f"{path}:p*", "--temperature", "2", "--scale-t2", "-f", "json"])
    assert res.code == 0, res.err
    want = [mp_kl([mpmath.mpf(float(v)) for v in p[i]], mp_softmax(x[i], 2.0)) * 4.0 for i in range(4)]
    assert res.json["value"] == pytest.approx(math.fsum(want) / 4, rel=1e-12)
    assert "temperature:2|scale-t2:yes" in res.json["signature"]
    # temperature with no logits anywhere: refused, not silently ignored
    bad = cli(["compute", "js", f"{path}:p*", f"{path}:p*", "--pred-kind", "probs", "--temperature", "2"])
    assert_clean_error(bad, 2, "--temperature", "logits")
    zero = cli(["compute", "kl", f"{path}:x*", f"{path}:p*", "--temperature", "0"])
    assert_clean_error(zero, 2, "--temperature")


def test_tiny_temperature_that_overflows_names_the_row():
    from lossctl.errors import InputError

    x = np.array([[1.0, 2.0], [1e300, 0.0]])
    with pytest.raises(InputError) as err:
        kl_divergence(x, np.array([[0.5, 0.5], [0.5, 0.5]]), temperature=1e-10)
    assert err.value.rows == [1]


# -- --classes ------------------------------------------------------------------------------------

NAMES = ["cat", "dog", "bird"]


def labelled(tmp_path, labels, seed=17):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 2.0, size=(len(labels), 3))
    path = write_csv(tmp_path / "s.csv", {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": np.array(labels)})
    return x, path


def ref_ce(x, labels) -> float:
    vals = [-ref_log_softmax(row)[NAMES.index(y)] for row, y in zip(x.tolist(), labels)]
    return math.fsum(vals) / len(vals)


def test_classes_map_names_to_logit_positions(cli, tmp_path):
    labels = ["dog", "cat", "bird", "bird", "cat", "dog", "cat"]
    x, path = labelled(tmp_path, labels)
    res = cli(["compute", "ce", f"{path}:a,b,c", f"{path}:label", "--classes", "cat,dog,bird", "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(ref_ce(x, labels), rel=1e-14)
    assert "classes:cat,dog,bird" in res.json["signature"]
    assert res.json["params"]["classes"] == NAMES
    # another order is another mapping, and another number
    other = cli(["compute", "ce", f"{path}:a,b,c", f"{path}:label", "--classes", "bird,dog,cat", "-f", "json"])
    assert other.json["value"] != pytest.approx(res.json["value"], rel=1e-6)


def test_classes_from_a_file(cli, tmp_path):
    labels = ["bird", "cat", "dog"]
    x, path = labelled(tmp_path, labels)
    lines = tmp_path / "names.txt"
    lines.write_text("cat\ndog\n\nbird\n")
    one = tmp_path / "names.csv"
    one.write_text("cat, dog, bird\n")
    for f in (lines, one):
        res = cli(["compute", "ce", f"{path}:a,b,c", f"{path}:label", "--classes", str(f), "-f", "json"])
        assert res.code == 0, res.err
        assert res.json["value"] == pytest.approx(ref_ce(x, labels), rel=1e-14)


def test_nll_and_softmax_focal_take_classes(cli, tmp_path):
    labels = ["cat", "bird", "dog", "cat"]
    x, _ = labelled(tmp_path, labels)
    lp = np.array([ref_log_softmax(r) for r in x.tolist()])
    path = write_csv(tmp_path / "lp.csv", {"a": lp[:, 0], "b": lp[:, 1], "c": lp[:, 2], "label": np.array(labels)})
    res = cli(["compute", "nll", f"{path}:a,b,c", f"{path}:label", "--classes", "cat,dog,bird", "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(ref_ce(x, labels), rel=1e-13)
    foc = cli(
        [
            "compute",
            "softmax-focal",
            f"{path}:a,b,c",
            f"{path}:label",
            "--classes",
            "cat,dog,bird",
            "--gamma",
            "0",
            "-f",
            "json",
        ]
    )
    assert foc.code == 0, foc.err
    assert foc.json["value"] == pytest.approx(ref_ce(x, labels), rel=1e-13)  # γ = 0: cross-entropy


def test_unknown_label_names_the_row_and_writes_nothing(cli, tmp_path):
    labels = ["cat"] * 7 + ["Cat"] + ["dog"] * 3
    _, path = labelled(tmp_path, labels)
    out = tmp_path / "per.csv"
    res = cli(
        [
            "compute",
            "ce",
            f"{path}:a,b,c",
            f"{path}:label",
            "--classes",
            "cat,dog,bird",
            "--chunk-size",
            "3",
            "--per-sample",
            str(out),
        ]
    )
    assert_clean_error(res, 1, "row 7", "'Cat'", "--classes")
    assert not os.path.exists(out)


def test_label_text_is_shown_literally(cli, tmp_path):
    labels = ["cat", "c\x1b[31mat"]
    _, path = labelled(tmp_path, labels)
    res = cli(["compute", "ce", f"{path}:a,b,c", f"{path}:label", "--classes", "cat,dog,bird"])
    assert res.code == 1
    assert "\x1b" not in res.err and "\\x1b" in res.err


def test_class_count_must_match_the_logits(cli, tmp_path):
    _, path = labelled(tmp_path, ["cat", "dog"])
    res = cli(["compute", "ce", f"{path}:a,b,c", f"{path}:label", "--classes", "cat,dog"])
    assert_clean_error(res, 1, "3 class columns", "2 classes")


@pytest.mark.parametrize("names", ["cat,dog,cat", "cat,,dog"])
def test_bad_class_lists_are_usage_errors(cli, tmp_path, names):
    _, path = labelled(tmp_path, ["cat", "dog"])
    res = cli(["compute", "ce", f"{path}:a,b,c", f"{path}:label", "--classes", names])
    assert_clean_error(res, 2, "--classes")


def test_classes_and_temperature_in_a_check_config(cli, tmp_path):
    labels = ["dog", "cat", "bird", "cat"]
    x, path = labelled(tmp_path, labels)
    p = np.full((len(labels), 3), 1.0 / 3)
    soft = write_csv(tmp_path / "soft.csv", {"p0": p[:, 0], "p1": p[:, 1], "p2": p[:, 2]})
    want_kl = math.fsum(mp_kl([mpmath.mpf(1) / 3] * 3, mp_softmax(x[i], 3.0)) * 9.0 for i in range(len(labels))) / len(
        labels
    )
    cfg = tmp_path / "checks.toml"
    cfg.write_text(
        f"""
[[checks]]
name = "named-labels"
loss = "cross-entropy"
inputs = ["{path}:a,b,c", "{path}:label"]
params = {{ classes = ["cat", "dog", "bird"] }}
max = 100

[[checks]]
name = "soft-kl"
loss = "kl"
inputs = ["{path}:a,b,c", "{soft}:p*"]
params = {{ temperature = 3.0, scale-t2 = true }}
max = 100
"""
    )
    res = cli(["check", str(cfg), "-f", "json"])
    assert res.code == 0, res.err
    by = {c["name"]: c for c in res.json["checks"]}
    assert by["named-labels"]["value"] == pytest.approx(ref_ce(x, labels), rel=1e-14)
    assert by["soft-kl"]["value"] == pytest.approx(want_kl, rel=1e-12)
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace('["cat", "dog", "bird"]', "[1, 2]"))
    # a check that cannot run is an error of that check (exit 1), naming the key
    res = cli(["check", str(bad)])
    assert res.code == 1 and "Traceback" not in res.err
    assert "key 'params.classes'" in res.err and "non-empty string" in res.err
