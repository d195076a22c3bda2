"""The Python API (lossctl.compute / check / compare / losses): every loss from NumPy, pandas,
polars and Arrow inputs gives the CLI's `-f json` document on the same data written to a file."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import lossctl
from lossctl import registry
from tests.conftest import ROOT, run_cli

pd = pytest.importorskip("pandas", reason="pandas is in the test extra")
pl = pytest.importorskip("polars", reason="polars is in the test extra")

# What names the data's origin (a file vs an in-memory object) is the only difference allowed.
_ORIGIN = ("source", "path", "format", "column", "columns")


def _comparable(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    for i in doc.get("inputs") or []:
        for k in _ORIGIN:
            i.pop(k, None)
    return doc


def _example(spec):
    """The catalogue example's inputs (one Arrow or NumPy array per role) and parameters."""
    sources, params, args = [], {}, list(spec.example)
    while args:
        a = args.pop(0)
        if a.startswith("--"):
            p = spec.param(a[2:])
            params[p.dest] = True if p.type == "bool" else args.pop(0)
        else:
            sources.append(a)
    tables: dict[str, pa.Table] = {}
    out = []
    for text in sources:
        path, _, expr = text.rpartition(":")
        path = os.path.join(ROOT, path)
        if path not in tables:
            tables[path] = pq.read_table(path) if path.endswith(".parquet") else pacsv.read_csv(path)
        t = tables[path]
        names = [n for part in expr.split(",") for n in t.column_names if fnmatch.fnmatchcase(n, part)]
        if len(names) > 1 or any(ch in expr for ch in "*,"):
            out.append(np.column_stack([t.column(n).to_numpy() for n in names]))
        else:
            col = t.column(names[0]).combine_chunks()
            if pa.types.is_fixed_size_list(col.type) or (
                pa.types.is_list(col.type) and len(set(col.value_lengths().to_pylist())) == 1
            ):
                out.append(np.array(col.to_pylist(), dtype=col.type.value_type.to_pandas_dtype()))
            elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                out.append(col)  # ragged: stays Arrow
            else:
                out.append(col.to_numpy())
    return out, params


def _arrow(a):
    if isinstance(a, (pa.Array, pa.ChunkedArray)):
        return a
    if a.ndim == 1:
        return pa.array(a)
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(a).reshape(-1)), a.shape[1])


def _cli_params(params):
    out = []
    for k, v in params.items():
        out += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return out


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    out = {}
    for spec in registry.LOSSES:
        arrays, params = _example(spec)
        roles = [r.name.replace("-", "_") for r in spec.inputs[: len(arrays)]]
        table = pa.table({r: _arrow(a) for r, a in zip(roles, arrays)})
        path = str(d / f"{spec.name}.parquet")
        pq.write_table(table, path)
        res = run_cli(["compute", spec.name, *[f"{path}:{r}" for r in roles], *_cli_params(params), "-f", "json"])
        assert res.code == 0, (spec.name, res.err)
        out[spec.name] = (arrays, params, roles, table, res.json)
    return out


LOSS_NAMES = [s.name for s in registry.LOSSES]


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_loss_from_numpy_matches_the_cli(cases, loss):
    arrays, params, _, _, cli = cases[loss]
    report = lossctl.compute(loss, *arrays, **params)
    assert _comparable(report.to_dict()) == _comparable(cli)
    assert report.signature == cli["signature"]
    assert report.value == cli["value"] and report.count == cli["rows"]["used"]


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_loss_from_pandas_matches_the_cli(cases, loss):
    arrays, params, roles, _, cli = cases[loss]
    inputs = []
    for r, a in zip(roles, arrays):
        if isinstance(a, (pa.Array, pa.ChunkedArray)):  # ragged lists: a pandas Series of lists
            inputs.append(pd.Series(a.to_pylist(), name=r))
        elif a.ndim == 1:
            inputs.append(pd.Series(a, name=r))
        else:  # a DataFrame's columns r_0, r_1, ... selected by a glob
            frame = pd.DataFrame({f"{r}_{j}": a[:, j] for j in range(a.shape[1])})
            inputs.append((frame, f"{r}_*"))
    report = lossctl.compute(loss, *inputs, **params)
    assert _comparable(report.to_dict()) == _comparable(cli)


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_loss_from_polars_matches_the_cli(cases, loss):
    _, params, roles, table, cli = cases[loss]
    frame = pl.from_arrow(table)
    inputs = [frame[r] for r in roles]  # polars Series (list columns for 2-D rows)
    report = lossctl.compute(loss, *inputs, **params)
    assert _comparable(report.to_dict()) == _comparable(cli)
    report = lossctl.compute(loss, *roles, data=frame, **params)  # a DataFrame and column names
    assert _comparable(report.to_dict()) == _comparable(cli)


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_loss_from_arrow_matches_the_cli(cases, loss):
    _, params, roles, table, cli = cases[loss]
    report = lossctl.compute(loss, *[table.column(r) for r in roles], **params)  # ChunkedArrays
    assert _comparable(report.to_dict()) == _comparable(cli)
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=7))
    report = lossctl.compute(loss, *roles, data=reader, **params)  # a stream, read once
    assert _comparable(report.to_dict()) == _comparable(cli)


def test_source_strings_as_on_the_command_line():
    csv = os.path.join(ROOT, "sample_data", "regression.csv")
    res = run_cli(["compute", "mse", f"{csv}:pred", f"{csv}:target", "-f", "json"])
    report = lossctl.compute("mse", f"{csv}:pred", f"{csv}:target")
    assert report.to_dict() == res.json


class _CStream:
    """A foreign object offering only the Arrow PyCapsule stream interface."""

    def __init__(self, table):
        self.table = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self.table.__arrow_c_stream__(requested_schema)


class _ArrayOnly:
    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a


def test_capsule_and_array_protocol_objects():
    rng = np.random.default_rng(1)
    p, y = rng.normal(size=50), rng.normal(size=50)
    expected = float(np.mean((p - y) ** 2))  # oracle: the definition, in float64
    r = lossctl.compute("mse", "p", "y", data=_CStream(pa.table({"p": p, "y": y})))
    assert math.isclose(r.value, expected, rel_tol=1e-15)
    r = lossctl.compute("mse", _ArrayOnly(p), list(y))
    assert math.isclose(r.value, expected, rel_tol=1e-15)


def test_torch_tensor_without_importing_torch_ourselves():
    torch = pytest.importorskip("torch", reason="torch is not installed (it is in the bench extra)")
    logits = torch.randn(20, 5, dtype=torch.float64)
    labels = torch.randint(0, 5, (20,))
    r = lossctl.compute("cross-entropy", logits, labels, label_smoothing=0.1)
    ref = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1).item()
    assert math.isclose(r.value, ref, rel_tol=1e-12)


def test_zero_copy_views_of_numpy_inputs():
    from lossctl.io import memory
    from lossctl.io.sources import Request

    a = np.arange(10.0)
    token = memory.register(a, "pred")
    try:
        reader = memory.open_memory(memory.parse(token))
        reader.add(Request("pred", None, matrix=False))
        reader.resolve()
        chunks = [c["pred"] for c in reader.batches(4)]
    finally:
        memory.release(token)
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert all(np.shares_memory(c, a) for c in chunks)


def test_chunk_size_does_not_change_per_sample_values():
    rng = np.random.default_rng(2)
    p, y = rng.normal(size=(101, 3)), rng.integers(0, 3, 101)
    a = lossctl.compute("cross-entropy", p, y, per_sample=True, chunk_size=7)
    b = lossctl.compute("cross-entropy", p, y, per_sample=True)
    assert a.per_sample.equals(b.per_sample)  # per-sample values never depend on chunking
    assert a.value == pytest.approx(b.value, rel=1e-15)
    # Oracle: log-sum-exp minus the true logit, in float64.
    m = p.max(axis=1, keepdims=True)
    ref = (m[:, 0] + np.log(np.exp(p - m).sum(axis=1))) - p[np.arange(101), y]
    np.testing.assert_allclose(a.per_sample.column("loss").to_numpy(), ref, rtol=1e-13)
    assert a.per_sample.column("row").to_pylist() == list(range(101))


def test_report_attributes_options_and_views():
    rng = np.random.default_rng(3)
    n = 200
    frame = pd.DataFrame({"pred": rng.normal(size=n), "target": rng.normal(size=n), "site": rng.choice(["a", "b"], n)})
    r = lossctl.compute("mse", "pred", "target", data=frame, group_by="site", ci=0.9, seed=7, top=3)
    sq = (frame["pred"] - frame["target"]) ** 2
    assert math.isclose(r.value, float(sq.mean()), rel_tol=1e-14)
    assert r.count == n and len(r.top) == 3
    assert r.top[0]["loss"] == pytest.approx(float(sq.max()), rel=1e-14)
    groups = {g["group"]: g["value"] for g in r.groups}
    for site, value in sq.groupby(frame["site"]).mean().items():
        assert groups[site] == pytest.approx(value, rel=1e-14)
    assert r.ci["level"] == 0.9 and r.ci["low"] < r.value < r.ci["high"]
    assert r.stats["max"] == pytest.approx(float(sq.max()), rel=1e-14)
    assert "lossctl:" in r.signature and "group:site" in r.signature
    assert repr(r).startswith("<lossctl.Report mse mean = ") and "\n" not in repr(r)
    assert "| mse |" in r.to_markdown() or "mse" in r.to_markdown()
    html = r._repr_html_()
    assert "<script" not in html and "site" in html and r.signature.split("|")[0] in html
    with pytest.raises(AttributeError, match="per_sample=True"):
        r.per_sample


def test_group_by_keys_given_as_an_array_or_series():
    p, t = np.arange(6.0), np.zeros(6)
    r = lossctl.compute("mae", p, t, group_by=np.array(["a", "b", "a", "b", "a", "b"]))
    assert [(g["group"], g["value"]) for g in r.groups] == [("a", 2.0), ("b", 3.0)]  # (0+2+4)/3, (1+3+5)/3
    assert "group:<group_by keys>" in r.signature
    r = lossctl.compute("mae", p, t, group_by=pd.Series([1, 1, 2, 2, 3, 3]))
    assert [(g["group"], g["value"]) for g in r.groups] == [(1, 0.5), (2, 2.5), (3, 4.5)]
    with pytest.raises(lossctl.DataError, match="group_by .* has 3 rows"):
        lossctl.compute("mae", p, t, group_by=["a", "b", "c"])


def test_reduction_none_gives_per_sample_rows():
    r = lossctl.compute("mae", np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 1.0]), reduction="none")
    assert r.per_sample.column("loss").to_pylist() == [0.5, 0.0, 3.0]


def test_errors_are_python_exceptions_without_cli_flags():
    p, y = np.zeros((4, 3)), np.array([0, 1, 2, 3])
    with pytest.raises(lossctl.ParamError) as e:
        lossctl.compute("cross-entropy", p, y[:4], label_smoothing=1.5)
    assert e.value.param == "label_smoothing" and "--" not in str(e.value)
    with pytest.raises(lossctl.ParamError) as e:
        lossctl.compute("mse", p[:, 0], p[:, 0], reduction="median")
    assert e.value.param == "reduction" and "--" not in str(e.value)
    with pytest.raises(lossctl.ParamError) as e:
        lossctl.compute("mse", p[:, 0], p[:, 0], smoothing=1)
    assert e.value.param == "smoothing"
    with pytest.raises(lossctl.ParamError, match="Unknown loss 'msee'"):
        lossctl.compute("msee", p, p)
    with pytest.raises(lossctl.DataError) as e:
        lossctl.compute("cross-entropy", p, y)
    assert "row 3" in str(e.value) and "target" in str(e.value)
    with pytest.raises(lossctl.DataError, match="Row counts differ") as e:
        lossctl.compute("mse", np.zeros(3), np.zeros(4))
    assert "--" not in str(e.value)
    with pytest.raises(lossctl.DataError, match="cannot read an object of type"):
        lossctl.compute("mse", {"a": 1}, np.zeros(1))


def test_in_memory_objects_are_released_after_a_run():
    from lossctl.io import memory

    before = len(memory._OBJECTS)
    lossctl.compute("mse", np.zeros(3), np.ones(3))
    with pytest.raises(lossctl.DataError):
        lossctl.compute("mse", np.zeros(3), np.ones(4))
    assert len(memory._OBJECTS) == before


def test_library_functions_per_sample_and_grad():
    from lossctl import losses

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(8, 5)), rng.integers(0, 5, 8)
    ls = 0.1
    got = losses.cross_entropy(x, y, label_smoothing=ls)
    logp = x - (x.max(1, keepdims=True) + np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)))
    target = np.full((8, 5), ls / 5)
    target[np.arange(8), y] += 1 - ls
    np.testing.assert_allclose(got, -(target * logp).sum(1), rtol=1e-13)
    g = losses.cross_entropy.grad(x, y, label_smoothing=ls)
    np.testing.assert_allclose(g, np.exp(logp) - target, rtol=1e-12, atol=1e-15)
    doc = losses.cross_entropy.__doc__
    spec = registry.get("cross-entropy")
    parts = ("Parameters\n----------", "Returns\n-------", spec.formula, spec.reference, spec.paper, "label_smoothing")
    for part in parts:
        assert part in doc
    with pytest.raises(lossctl.InputError) as e:
        losses.cross_entropy(x, np.array([0, 1, 2, 3, 4, 5, 0, 0]))
    assert e.value.role == "target" and e.value.rows == [5]
    with pytest.raises(lossctl.ParamError) as e:
        losses.huber(np.zeros(2), np.zeros(2), delta=-1)
    assert e.value.param == "delta" and "--" not in e.value.message
    with pytest.raises(AttributeError):
        losses.no_such_loss
    # A kernel module keeps its name (lossctl.losses.contrastive); its loss is also reachable with "_loss".
    import types

    assert isinstance(losses.contrastive, types.ModuleType)
    x1, x2, lab = np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[3.0, 4.0], [1.0, 1.0]]), np.array([1, 0])
    assert losses.contrastive_loss.__name__ == "contrastive"
    per_sample = lossctl.compute("contrastive", x1, x2, lab, per_sample=True).per_sample.column("loss").to_numpy()
    np.testing.assert_array_equal(losses.contrastive_loss(x1, x2, lab), per_sample)


def test_check_and_compare_objects():
    rng = np.random.default_rng(5)
    y = rng.normal(size=300)
    a, b = y + rng.normal(size=300), y + 0.3 * rng.normal(size=300)
    res = lossctl.check(
        [
            {"name": "good", "loss": "mse", "inputs": [b, y], "max": 0.5},
            {"name": "bad", "loss": "mse", "inputs": [a, y], "max": 0.5},
        ]
    )
    assert not res.passed and [f["name"] for f in res.failures] == ["bad"]
    assert res.checks[0]["value"] == pytest.approx(float(np.mean((b - y) ** 2)), rel=1e-14)
    cmp = lossctl.compare("mse", a, b, references=y, fail_if_worse=True)
    assert cmp.passed and cmp.failures == []
    assert cmp.candidates[0]["delta"] == pytest.approx(float(np.mean((b - y) ** 2) - np.mean((a - y) ** 2)), rel=1e-12)
    worse = lossctl.compare("mse", b, a, references=y, fail_if_worse=True)
    assert not worse.passed and worse.failures[0]["label"] == "candidate"
    assert "candidate" in repr(worse) and "\n" not in repr(worse)


def test_check_from_a_config_path(tmp_path):
    cfg = tmp_path / "checks.toml"
    cfg.write_text(
        f'[[checks]]\nname = "reg"\nloss = "mse"\ninputs = ["{ROOT}/sample_data/regression.csv:pred", '
        f'"{ROOT}/sample_data/regression.csv:target"]\nmax = 1e9\n'
    )
    res = lossctl.check(str(cfg))
    cli = run_cli(["check", str(cfg), "-f", "json"])
    assert res.passed and cli.code == 0
    assert res.to_dict() == cli.json


def test_import_is_light_and_never_imports_dataframe_libraries():
    code = (
        "import sys, lossctl, numpy as np\n"
        "r = lossctl.compute('mse', np.ones(3), np.zeros(3))\n"
        "from lossctl import losses; losses.mse(np.ones(2), np.zeros(2))\n"
        "print(sorted(m for m in ('pandas', 'polars', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import lossctl"], capture_output=True, text=True, check=True
    )
    own = [line for line in out.stderr.splitlines() if line.rstrip().endswith("lossctl") or "lossctl." in line]
    cumulative_us = max(int(line.split("|")[1]) for line in own)
    assert cumulative_us < 30_000, out.stderr


def test_readme_python_examples_run(tmp_path):
    """Every ```python block of the README's "Python API" section runs, in order, in a fresh process."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]
    assert len(blocks) >= 4
    env = dict(os.environ, PYTHONPATH=ROOT)
    outputs = []
    for i, code in enumerate(blocks):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert out.returncode == 0, (i, code, out.stderr)
        outputs.append(out)
    first = outputs[0]
    assert first.stdout.startswith("<lossctl.Report mse mean = ") and "(0.95 CI) over 1000 rows>" in first.stdout


@pytest.mark.slow
def test_ten_million_rows_in_memory_stay_within_one_and_a_half_times_the_inputs():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import run as bench
    finally:
        sys.path.pop(0)
    res = bench.run_api_memory(10_000_000)
    assert res["value_ok"] and res["ratio"] <= 1.5, res
