"""Registry-wide checks: every registered loss has a reference test, a gradient check,
an explain text and a runnable example in sample_data/ - or this file fails."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cases import CASES
from conftest import ROOT, finite_difference
from lossctl import registry
from lossctl.ragged import Ragged

NAMES = [s.name for s in registry.LOSSES]


def kernel_params(p: dict) -> dict:
    return {k: v for k, v in p.items() if not k.startswith("_")}


@pytest.mark.parametrize("name", NAMES)
def test_kernel_matches_independent_reference(name):
    assert name in CASES, f"{name} has no reference case in tests/cases/"
    case = CASES[name]
    spec = registry.get(name)
    kernel = spec.load_kernel()
    for i, p in enumerate(case.params):
        rng = np.random.default_rng(1000 + i)
        arrays = case.make(rng, p)
        res = kernel(*arrays, **kernel_params(p))
        ref = np.asarray(case.reference(arrays, p), dtype=np.float64)
        assert res.loss.shape == (len(ref),), (name, p)
        assert res.loss.dtype == np.float64
        keep = np.ones(len(ref), bool) if res.ignored is None else ~res.ignored
        np.testing.assert_allclose(res.loss[keep], ref[keep], rtol=case.rtol, atol=case.atol, err_msg=f"{name} {p}")


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(name):
    assert name in CASES, f"{name} has no reference case in tests/cases/"
    case = CASES[name]
    spec = registry.get(name)
    kernel, grad_fn = spec.load_kernel(), spec.load_grad()
    make = case.grad_make or case.make
    for i, p in enumerate(case.grad_params or case.params):
        rng = np.random.default_rng(2000 + i)
        arrays = make(rng, p)
        kp = kernel_params(p)
        k = spec.pred_index

        def loss(pred):
            args = list(arrays)
            args[k] = pred
            return kernel(*args, **kp).loss

        g = grad_fn(*arrays, **kp)
        g_flat = (g.values if isinstance(g, Ragged) else np.asarray(g)).reshape(-1)
        fd = finite_difference(loss, arrays[k], relative=True, batched=spec.batched).reshape(-1)
        np.testing.assert_allclose(g_flat, fd, rtol=case.grad_rtol, atol=case.grad_atol, err_msg=f"{name} {p}")


@pytest.mark.parametrize("name", NAMES)
def test_explain_text_is_complete(name):
    spec = registry.get(name)
    for field in ("summary", "formula", "headline", "gradient", "used_for", "activation", "reference", "paper"):
        assert getattr(spec, field).strip(), f"{name}: empty {field}"
    assert spec.properties, f"{name}: no properties"
    assert spec.family in registry.FAMILIES
    for p in spec.params:
        assert p.help.strip(), f"{name}: parameter {p.name} has no help"


@pytest.mark.parametrize("name", NAMES)
def test_example_runs_on_sample_data(cli, name):
    spec = registry.get(name)
    assert spec.example, f"{name} has no example"
    for arg in spec.example:
        if not arg.startswith("-") and "sample_data/" in arg:
            path = arg.split(":")[0]
            assert os.path.exists(os.path.join(ROOT, path)), f"{name}: {path} is not in sample_data/"
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        res = cli(["compute", name, *spec.example, "-f", "json"])
    finally:
        os.chdir(cwd)
    assert res.code == 0, res.err
    assert res.json["loss"] == name
    assert res.json["count"] > 0


def test_readme_shows_a_command_per_family():
    readme = open(os.path.join(ROOT, "README.md")).read()
    for family in {s.family for s in registry.LOSSES}:
        names = [s.name for s in registry.LOSSES if s.family == family]
        assert any(f"lossctl compute {n} " in readme for n in names), f"README has no example for {family}"
