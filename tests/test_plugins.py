"""User-defined losses: a plugin package (pyproject.toml + installed metadata with an entry point
in the group `lossctl.losses`) built in a temp dir and put on the path of subprocess runs of the
CLI; its loss is served by list, compute (groups, CI, per-sample, grad), check, compare, merge and
--engine dask, with every number checked against NumPy written here. A broken plugin is an error
naming it, and never breaks the other losses or `lossctl --help`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT

PLUGIN = '''
"""A demo plugin: weighted L1 (mean over columns for (N, D))."""
import numpy as np
import lossctl


@lossctl.loss(
    name="demo-wl1",
    inputs=["pred", "target"],
    params={"weight": {"type": "float", "default": 1.0, "low": 0, "help": "Scale of the error."}},
    reference="weight * |pred - target|",
    formula="l = w·|ŷ - y| (mean over D)",
)
def weighted_l1(pred, target, weight=1.0):
    """Weighted absolute error (a demo plugin)."""
    d = weight * np.abs(pred - target)
    return d.mean(axis=1) if d.ndim == 2 else d


@weighted_l1.grad
def weighted_l1_grad(pred, target, weight=1.0):
    g = weight * np.sign(pred - target)
    return g / pred.shape[1] if g.ndim == 2 else g
'''


def _dist(site, name: str, version: str, entry_points: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[lossctl.losses]\n{entry_points}\n")
    (info / "top_level.txt").write_text(name.replace("-", "_") + "\n")
    (info / "RECORD").write_text("")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A site directory holding two "installed" plugin packages (what `pip install` of a package with
    this pyproject.toml leaves: the module and its dist-info with entry_points.txt), and the data."""
    root = tmp_path_factory.mktemp("plugins")
    src = root / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [project]
            name = "lossctl-demo"
            version = "0.3.1"
            dependencies = ["lossctl"]
            [project.entry-points."lossctl.losses"]
            demo-wl1 = "lossctl_demo:weighted_l1"
            """
        )
    )
    site = root / "site"
    (site / "lossctl_demo").mkdir(parents=True)
    (site / "lossctl_demo" / "__init__.py").write_text(PLUGIN)
    _dist(site, "lossctl-demo", "0.3.1", "demo-wl1 = lossctl_demo:weighted_l1")
    (site / "lossctl_broken").mkdir()
    (site / "lossctl_broken" / "__init__.py").write_text("import no_such_dependency_of_a_plugin\n")
    _dist(site, "lossctl-broken", "1.0", "broken-loss = lossctl_broken:loss")

    rng = np.random.default_rng(15)
    n = 400
    data = {
        "pred": rng.normal(size=n),
        "pred_b": rng.normal(size=n),
        "target": rng.normal(size=n),
        "g": rng.choice(["a", "b", "c"], n),
    }
    pq.write_table(pa.table(data), root / "data.parquet")
    pq.write_table(pa.table({k: v[:150] for k, v in data.items()}), root / "part1.parquet")
    pq.write_table(pa.table({k: v[150:] for k, v in data.items()}), root / "part2.parquet")
    e = dict(os.environ, PYTHONPATH=str(site) + os.pathsep + ROOT)
    e.pop("LOSSCTL_PLUGINS", None)
    return root, e, data


def _cli(env, *args, code=0):
    root, e, _ = env
    out = subprocess.run(
        [sys.executable, "-m", "lossctl", *map(str, args)], capture_output=True, text=True, env=e, cwd=root, timeout=300
    )
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    return out


def _oracle(pred, target, weight):
    return weight * np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64))


def test_list_shows_the_plugin_and_warns_about_the_broken_one(env):
    out = _cli(env, "list", "-f", "json")
    doc = {d["name"]: d for d in json.loads(out.stdout)}
    assert doc["demo-wl1"]["plugin"] == "lossctl-demo 0.3.1"
    assert doc["demo-wl1"]["reference"] == "weight * |pred - target|"
    assert "mse" in doc and "plugin" not in doc["mse"]
    assert "lossctl-broken 1.0" in out.stderr and "no_such_dependency_of_a_plugin" in out.stderr


def test_compute_with_groups_ci_per_sample_and_grad(env):
    root, _, data = env
    out = _cli(env, "compute", "demo-wl1", "data.parquet:pred", "data.parquet:target", "--weight", "2.5",
               "--group-by", "g", "--ci", "0.9", "--per-sample", "ps.csv", "--grad", "grad.npy",
               "-f", "json")  # fmt: skip
    doc = json.loads(out.stdout)
    ref = _oracle(data["pred"], data["target"], 2.5)
    assert doc["value"] == pytest.approx(float(ref.mean()), rel=1e-14)
    assert doc["plugin"] == "lossctl-demo 0.3.1"
    assert doc["signature"].startswith("demo-wl1|plugin:lossctl-demo@0.3.1|weight:2.5|")
    for g in doc["groups"]:
        assert g["value"] == pytest.approx(float(ref[data["g"] == g["group"]].mean()), rel=1e-14)
    assert doc["ci"]["low"] < doc["value"] < doc["ci"]["high"]
    ps = pacsv.read_csv(root / "ps.csv")
    np.testing.assert_allclose(ps.column("loss").to_numpy(), ref, rtol=1e-15)
    grad = np.load(root / "grad.npy")
    np.testing.assert_allclose(grad.reshape(-1), 2.5 * np.sign(data["pred"] - data["target"]), rtol=1e-15)


def test_help_and_explain_of_the_plugin_loss(env):
    out = _cli(env, "compute", "demo-wl1", "--help")
    assert "Weighted absolute error" in out.stdout and "--weight" in out.stdout
    out = _cli(env, "explain", "demo-wl1")
    assert "weight * |pred - target|" in out.stdout


def test_merge_of_plugin_states(env):
    _, _, data = env
    for part in ("part1", "part2"):
        offset = "0" if part == "part1" else "150"
        _cli(env, "compute", "demo-wl1", f"{part}.parquet:pred", f"{part}.parquet:target", "--weight", "2",
             "--row-offset", offset, "--save-state", f"{part}.state.json", "-f", "json")  # fmt: skip
    out = _cli(env, "merge", "part1.state.json", "part2.state.json", "-f", "json")
    doc = json.loads(out.stdout)
    assert doc["value"] == pytest.approx(float(_oracle(data["pred"], data["target"], 2).mean()), rel=1e-14)
    assert "plugin:lossctl-demo@0.3.1" in doc["signature"]


def test_check_and_compare_serve_the_plugin(env):
    root, _, data = env
    (root / "checks.toml").write_text(
        '[[checks]]\nname = "demo"\nloss = "demo-wl1"\ninputs = ["data.parquet:pred", "data.parquet:target"]\n'
        "max = 0.1\n[checks.params]\nweight = 1.0\n"
    )
    out = _cli(env, "check", "checks.toml", "-f", "json", code=3)
    result = json.loads(out.stdout)["checks"][0]
    assert result["status"] == "fail"
    assert result["value"] == pytest.approx(float(_oracle(data["pred"], data["target"], 1).mean()), rel=1e-14)
    out = _cli(env, "compare", "demo-wl1", "--target", "data.parquet:target", "data.parquet:pred",
               "data.parquet:pred_b", "-f", "json")  # fmt: skip
    doc = json.loads(out.stdout)
    base, cand = _oracle(data["pred"], data["target"], 1), _oracle(data["pred_b"], data["target"], 1)
    assert doc["candidates"][0]["delta"] == pytest.approx(float(cand.mean() - base.mean()), rel=1e-12, abs=1e-15)
    assert "plugin:lossctl-demo@0.3.1" in doc["signature"]


@pytest.mark.slow
def test_engine_dask_serves_the_plugin(env):
    pytest.importorskip("distributed", reason="dask/distributed are in the dask extra")
    _, _, data = env
    out = _cli(env, "compute", "demo-wl1", "data.parquet:pred", "data.parquet:target", "--weight", "3",
               "--engine", "dask", "--workers", "1", "-f", "json")  # fmt: skip
    doc = json.loads(out.stdout)
    assert doc["value"] == pytest.approx(float(_oracle(data["pred"], data["target"], 3).mean()), rel=1e-14)
    assert "plugin:lossctl-demo@0.3.1" in doc["signature"]


def test_a_broken_plugin_is_an_error_naming_it_and_nothing_else_breaks(env):
    out = _cli(env, "compute", "broken-loss", "data.parquet:pred", code=2)
    assert "lossctl-broken 1.0" in out.stderr and "no_such_dependency_of_a_plugin" in out.stderr
    assert "Traceback" not in out.stderr
    out = _cli(env, "compute", "mse", "data.parquet:pred", "data.parquet:target", "-f", "json")
    assert json.loads(out.stdout)["loss"] == "mse" and out.stderr == ""
    out = _cli(env, "--help")
    assert "Usage" in out.stdout and out.stderr == ""


def test_plugin_option_and_env_variable(env, tmp_path):
    root, e, data = env
    mod = tmp_path / "teamloss.py"
    mod.write_text(PLUGIN.replace("demo-wl1", "team-wl1"))
    out = _cli(env, "--plugin", mod, "compute", "team-wl1", "data.parquet:pred", "data.parquet:target", "-f", "json")
    assert json.loads(out.stdout)["value"] == pytest.approx(float(_oracle(data["pred"], data["target"], 1).mean()))
    bad = _cli(env, "compute", "mse", "--plugin", "no_such_plugin_module", "data.parquet:pred", code=2)
    assert "--plugin no_such_plugin_module" in bad.stderr and "could not be imported" in bad.stderr


def test_name_clash_with_a_built_in_is_refused(env, tmp_path):
    mod = tmp_path / "clash.py"
    mod.write_text("import lossctl\n@lossctl.loss(name='mse')\ndef f(p, t):\n    return p\n")
    out = _cli(env, "--plugin", mod, "list", code=2)
    assert "'mse' is already a built-in loss" in out.stderr


def test_decorator_in_process_serves_the_api():
    import lossctl
    from lossctl import registry

    @lossctl.loss(name="test-api-sq", inputs=["pred", "target"], params={"k": 2.0}, version="9.9")
    def sq(pred, target, k=2.0):
        return k * (pred - target) ** 2

    try:
        p, t = np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 5.0])
        r = lossctl.compute("test-api-sq", p, t, k=3.0, per_sample=True)
        np.testing.assert_array_equal(r.per_sample.column("loss").to_numpy(), 3.0 * (p - t) ** 2)
        assert "plugin:" in r.signature and "@9.9" in r.signature
        from lossctl import losses

        np.testing.assert_array_equal(losses.test_api_sq(p, t, k=3.0), 3.0 * (p - t) ** 2)
        with pytest.raises(lossctl.ParamError):
            lossctl.compute("test-api-sq", p, t, grad_of=1)

        @lossctl.loss(name="test-api-bad", inputs=["pred"])
        def bad(pred):
            raise ZeroDivisionError("boom")

        with pytest.raises(lossctl.DataError, match="test-api-bad.*ZeroDivisionError: boom"):
            lossctl.compute("test-api-bad", p)
        with pytest.raises(lossctl.LossctlError, match="built-in"):
            lossctl.loss(name="cross-entropy")(sq)
        with pytest.raises(lossctl.LossctlError, match="lossctl's own options"):
            lossctl.loss(name="test-api-opt", params={"top": 1.0})(sq)
    finally:
        from lossctl import library

        for name in ("test-api-sq", "test-api-bad"):
            spec = registry.BY_NAME.pop(name, None)
            registry.LOSSES = tuple(s for s in registry.LOSSES if s is not spec)
            library._CACHE.pop(name, None)


def test_reserved_names_cover_the_cli_options():
    from lossctl import cli, plugins

    names = set()
    for _, _, opt in cli.COMMON_OPTIONS:
        names.update(d.lstrip("-") for d in opt.param_decls if d.startswith("--"))
    assert names <= plugins.RESERVED
