"""The command line: reports, formats, per-sample output, checks, exit codes, pipes."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, SAMPLE, assert_clean_error, write_csv
from reference.torch_values import CROSS_ENTROPY
from test_classification import ref_ce_index

PQ = f"{SAMPLE}/classifier.parquet"
CE = ["compute", "cross-entropy", f"{PQ}:logits", f"{PQ}:label"]


@pytest.fixture(scope="module")
def sample_ref():
    import pyarrow.parquet as pq

    t = pq.read_table(PQ)
    x = np.stack(t.column("logits").to_numpy(zero_copy_only=False)).astype(np.float64)
    y = t.column("label").to_numpy()
    per, mean = ref_ce_index(x.tolist(), y.tolist())
    return np.array(per), mean


def test_table_report(cli, sample_ref):
    per, mean = sample_ref
    res = cli(CE)
    assert res.code == 0, res.err
    assert res.err == ""
    lines = res.out.splitlines()
    assert lines[0] == f"cross-entropy = {mean:.6g}"
    assert "read pred 200, target 200" in res.out and "used 200" in res.out
    for key in ("count", "mean", "std", "min", "p50", "p90", "p99", "max", "worst 5"):
        assert key in res.out
    worst = int(np.argmax(per))
    assert f"{per[worst]:.6g}" in res.out and str(worst) in res.out
    assert lines[-1].startswith("cross-entropy|pred-kind:logits|")
    assert "\x1b[" not in res.out  # not a terminal: no escape codes


def test_json_report_schema_and_values(cli, sample_ref):
    per, mean = sample_ref
    out = cli([*CE, "-f", "json"]).json
    for key in (
        "schema_version",
        "loss",
        "params",
        "value",
        "reduction",
        "count",
        "stats",
        "signature",
        "inputs",
        "rows",
        "top",
    ):
        assert key in out
    assert out["schema_version"] == 1
    assert out["loss"] == "cross-entropy"
    assert out["params"] == {
        "pred-kind": "logits",
        "weight": None,
        "ignore-index": -100,
        "classes": None,
        "label-smoothing": 0.0,
        "target-kind": "probs",
    }
    assert out["value"] == pytest.approx(mean, rel=1e-6)
    st = out["stats"]
    assert st["count"] == 200
    assert st["std"] == pytest.approx(per.std(ddof=1), rel=1e-5)
    assert st["min"] == pytest.approx(per.min(), rel=1e-5)
    assert st["max"] == pytest.approx(per.max(), rel=1e-5)
    assert st["p90"] == pytest.approx(np.quantile(per, 0.9), rel=1e-5)
    assert [t["row"] for t in out["top"]] == list(np.argsort(-per, kind="stable")[:5])
    assert out["inputs"][0] == {
        "role": "pred",
        "source": f"{PQ}:logits",
        "path": PQ,
        "column": "logits",
        "columns": ["logits"],
        "format": "parquet",
        "shape": ["N", 5],
        "dtype": "float32",
        "rows": 200,
    }
    assert out["rows"]["read"] == {"pred": 200, "target": 200}


def test_other_formats(cli, sample_ref):
    _, mean = sample_ref
    line = cli([*CE, "-f", "jsonl"]).out
    assert line.count("\n") == 1 and json.loads(line)["value"] == pytest.approx(mean, rel=1e-6)
    rows = list(csv.DictReader(io.StringIO(cli([*CE, "-f", "csv"]).out)))
    assert len(rows) == 1 and float(rows[0]["value"]) == pytest.approx(mean, rel=1e-6)
    assert rows[0]["count"] == "200"
    tsv = cli([*CE, "-f", "tsv"]).out
    assert tsv.splitlines()[0].split("\t")[:3] == ["loss", "reduction", "value"]
    md = cli([*CE, "-f", "markdown"]).out
    assert md.startswith("| loss | value |") and f"**{mean:.6g}**" in md


def test_format_from_environment(cli, monkeypatch, sample_ref):
    monkeypatch.setenv("LOSSCTL_FORMAT", "json")
    assert cli(CE).json["loss"] == "cross-entropy"


def test_score_only_and_precision(cli, sample_ref):
    _, mean = sample_ref
    res = cli([*CE, "-b"])
    assert res.out.strip() == repr(float(res.out))
    assert float(res.out) == pytest.approx(mean, rel=1e-6)
    assert cli([*CE, "-b", "--precision", "3"]).out.strip() == f"{mean:.3g}"


def test_reduction_sum_and_none(cli, sample_ref):
    per, _ = sample_ref
    assert float(cli([*CE, "-b", "--reduction", "sum"]).out) == pytest.approx(per.sum(), rel=1e-6)
    res = cli([*CE, "--reduction", "none"])
    rows = list(csv.DictReader(io.StringIO(res.out)))
    assert len(rows) == 200
    np.testing.assert_allclose([float(r["loss"]) for r in rows], per, rtol=1e-6)
    assert_clean_error(cli([*CE, "--reduction", "none", "--max", "1"]), 2, "--reduction none")


def test_weighted_headline_is_pytorch_rule_and_says_so(cli, tmp_path):
    x = np.array([[1.0, 2.0, 3.0], [1.0, 0.0, -1.0]])
    path = write_csv(tmp_path / "d.csv", {"x": x, "y": np.array([0, 1])})
    out = cli(["compute", "ce", f"{path}:x_*", f"{path}:y", "--weight", "1,2,3", "-f", "json"]).json
    torch = CROSS_ENTROPY["values"]["weight"]  # F.cross_entropy(x, y, weight=[1, 2, 3])
    assert out["value"] == pytest.approx(torch["mean"], rel=1e-6)
    assert out["stats"]["mean"] == pytest.approx(sum(torch["none"]) / 2, rel=1e-6)
    assert out["headline_differs_from_mean"] is True
    table = cli(["compute", "ce", f"{path}:x_*", f"{path}:y", "--weight", "1,2,3"]).out
    assert "Σ_n w[y_n]" in table
    wfile = tmp_path / "w.txt"
    wfile.write_text("1\n2\n3\n")
    out2 = cli(["compute", "ce", f"{path}:x_*", f"{path}:y", "--weight", str(wfile), "-f", "json"]).json
    assert out2["value"] == out["value"]
    np.save(tmp_path / "w.npy", np.array([1.0, 2.0, 3.0]))
    out3 = cli(["compute", "ce", f"{path}:x_*", f"{path}:y", "--weight", str(tmp_path / "w.npy"), "-f", "json"]).json
    assert out3["value"] == out["value"]
    res = cli(["compute", "ce", f"{path}:x_*", f"{path}:y", "--weight", "1,2"])
    assert_clean_error(res, 2, "--weight has 2 value(s)", "3 classes")


def test_ignore_index_counted(cli, tmp_path):
    x = np.array([[1.0, 2.0, 3.0], [1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    path = write_csv(tmp_path / "d.csv", {"x": x, "y": np.array([0, -100, 1])})
    out = cli(["compute", "ce", f"{path}:x_*", f"{path}:y", "-f", "json", "--per-sample", str(tmp_path / "p.csv")]).json
    assert out["rows"]["ignored"] == 1 and out["count"] == 2
    assert out["value"] == pytest.approx((2.4076059 + math.log(3)) / 2, rel=1e-6)
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["status"] for r in rows] == ["ok", "ignored", "ok"]
    assert rows[1]["loss"] == ""


# ---------------------------------------------------------------------------
# per-sample output
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["csv", "tsv", "parquet", "npy", "jsonl"])
def test_per_sample_every_format_one_row_per_input_row(cli, tmp_path, sample_ref, ext):
    per, _ = sample_ref
    path = tmp_path / f"out.{ext}"
    res = cli([*CE, "--per-sample", str(path), "--chunk-size", "33", "-q"])
    assert res.code == 0, res.err
    if ext in ("csv", "tsv"):
        rows = list(csv.DictReader(open(path), delimiter="," if ext == "csv" else "\t"))
        loss = [float(r["loss"]) for r in rows]
        assert [int(r["row"]) for r in rows] == list(range(200))
        assert set(rows[0]) == {"row", "loss", "status", "p_true", "pred_class"}
        p_true = np.array([float(r["p_true"]) for r in rows])
        np.testing.assert_allclose(p_true, np.exp(-per), rtol=1e-6)
    elif ext == "parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(path)
        loss = t.column("loss").to_pylist()
        assert t.column("row").to_pylist() == list(range(200))
    elif ext == "npy":
        loss = np.load(path)
        assert loss.dtype == np.float64 and loss.shape == (200,)
    else:
        rows = [json.loads(line) for line in open(path)]
        loss = [r["loss"] for r in rows]
        assert rows[0]["status"] == "ok"
    np.testing.assert_allclose(loss, per, rtol=1e-6)


def test_per_sample_with_ids(cli, tmp_path):
    out = tmp_path / "p.csv"
    res = cli([*CE, "--id-col", "id", "--per-sample", str(out)])
    assert res.code == 0, res.err
    rows = list(csv.DictReader(open(out)))
    assert rows[0]["id"] == "s0000" and rows[-1]["id"] == "s0199"


def test_per_sample_to_stdout_keeps_stdout_clean(cli):
    res = cli([*CE, "--per-sample", "-"])
    rows = list(csv.DictReader(io.StringIO(res.out)))
    assert len(rows) == 200 and "cross-entropy =" not in res.out


def test_per_sample_bad_extension_and_unwritable_path(cli, tmp_path):
    assert_clean_error(cli([*CE, "--per-sample", str(tmp_path / "x.xlsx")]), 2, "x.xlsx", "extension")
    assert_clean_error(cli([*CE, "--per-sample", str(tmp_path / "no" / "dir" / "x.csv")]), 1, "does not exist")


def test_failed_run_leaves_no_output_file(cli, tmp_path):
    bad = write_csv(tmp_path / "d.csv", {"x": np.zeros((50, 2)), "y": np.r_[np.zeros(49, int), [7]]})
    out = tmp_path / "p.csv"
    res = cli(["compute", "ce", f"{bad}:x_*", f"{bad}:y", "--per-sample", str(out), "--chunk-size", "10"])
    assert res.code == 1
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


# ---------------------------------------------------------------------------
# checks and exit codes
# ---------------------------------------------------------------------------


def test_max_min_bounds(cli, sample_ref):
    _, mean = sample_ref
    ok = cli([*CE, "-b", "--max", "1.0", "--min", "0.5"])
    assert ok.code == 0 and float(ok.out) == pytest.approx(mean, rel=1e-6)
    hi = cli([*CE, "-b", "--max", "0.9"])
    assert hi.code == 3 and float(hi.out) == pytest.approx(mean, rel=1e-6)
    assert "check failed" in hi.err and "> max 0.9" in hi.err
    lo = cli([*CE, "-f", "json", "--min", "1.0"])
    assert lo.code == 3 and lo.json["value"] == pytest.approx(mean, rel=1e-6)
    assert "< min 1" in lo.err


def test_nan_headline_fails_every_bound(cli, tmp_path):
    path = write_csv(tmp_path / "d.csv", {"x": np.array([[0.0, np.nan]]), "y": np.array([0])})
    res = cli(["compute", "ce", f"{path}:x_*", f"{path}:y", "--nan", "propagate", "--max", "100", "-b"])
    assert res.code == 3 and "NaN" in res.err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["compute", "crossentropy", "a", "b"], "Did you mean 'cross-entropy'"),
        (["compte"], "Did you mean 'compute'"),
        ([*CE, "--label-smoothing", "1.5"], "--label-smoothing of cross-entropy must be in [0, 1]"),
        ([*CE, "--label-smoothing", "abc"], "expects a number"),
        ([*CE, "--pred-kind", "scores"], "must be one of logits, probs, log-probs"),
        ([*CE, "--bogus"], "No such option"),
        ([*CE, "--format", "xml"], "--format must be one of"),
        ([*CE, "--nan", "skip"], "--nan must be one of"),
        ([*CE, "--chunk-size", "0"], "--chunk-size must be at least 1"),
        (["compute", "ce", f"{PQ}:logits"], "Missing argument"),
        (["compute", "bce", f"{PQ}:label", f"{PQ}:label", "--pos-weight", "-1"], "must be in [0, inf]"),
    ],
)
def test_usage_errors_exit_2(cli, args, needle):
    res = cli(args)
    assert res.code == 2, (res.code, res.err)
    assert needle in res.err
    assert "Traceback" not in res.err


def test_help_lists_exit_codes_and_is_generated_from_registry(cli):
    top = cli(["--help"])
    assert top.code == 0 and "Exit codes" in top.out and "compute" in top.out
    sub = cli(["compute", "cross-entropy", "--help"])
    assert sub.code == 0
    for needle in (
        "--label-smoothing",
        "--ignore-index",
        "--weight",
        "--pred-kind",
        "torch.nn.functional.cross_entropy",
        "w[y_n]",
        "Exit codes",
    ):
        assert needle in sub.out
    alias = cli(["compute", "ce", "--help"])
    assert alias.code == 0 and "--label-smoothing" in alias.out


def test_list_table_and_json(cli):
    res = cli(["list"])
    assert res.code == 0
    for name in ("cross-entropy", "binary-cross-entropy", "mse", "mae", "classification", "regression"):
        assert name in res.out
    items = cli(["list", "--format", "json"]).json
    names = {i["name"] for i in items}
    assert {"cross-entropy", "binary-cross-entropy", "mse", "mae"} <= names
    ce = next(i for i in items if i["name"] == "cross-entropy")
    assert ce["aliases"] == ["ce"]
    assert any(p["name"] == "label-smoothing" and p["default"] == 0.0 for p in ce["params"])


def test_version(cli):
    from lossctl import __version__

    assert cli(["--version"]).out.strip() == f"lossctl {__version__}"


def test_debug_shows_traceback(cli, tmp_path):
    res = cli(["--debug", "compute", "ce", str(tmp_path / "nope.csv"), "x"])
    assert res.code == 1 and "Traceback" in res.err and "file not found" in res.err


# ---------------------------------------------------------------------------
# real processes: console script, python -m, pipes, colour
# ---------------------------------------------------------------------------


def _env(**extra):
    env = dict(os.environ)
    env.pop("LOSSCTL_FORMAT", None)
    env.update(extra)
    return env


def test_console_script_and_module(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "lossctl")
    a = subprocess.run([exe, *CE, "-b"], capture_output=True, text=True, env=_env(), cwd=ROOT)
    b = subprocess.run(
        [sys.executable, "-m", "lossctl", *CE, "-b"], capture_output=True, text=True, env=_env(), cwd=ROOT
    )
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    assert a.out if False else a.stdout == b.stdout


def test_pipe_closed_early_ends_quietly(tmp_path):
    rng = np.random.default_rng(0)
    n = 200_000
    np.save(tmp_path / "p.npy", rng.normal(size=n))
    np.save(tmp_path / "t.npy", rng.normal(size=n))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lossctl",
            "compute",
            "mse",
            str(tmp_path / "p.npy"),
            str(tmp_path / "t.npy"),
            "--per-sample",
            "-",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert first.startswith(b"row,loss")
    assert "Traceback" not in err and "Error" not in err, err
    assert proc.returncode == 0


def test_no_color_is_honoured_on_a_forced_terminal():
    colored = subprocess.run(
        [sys.executable, "-m", "lossctl", *CE], capture_output=True, text=True, env=_env(FORCE_COLOR="1"), cwd=ROOT
    )
    assert "\x1b[36m" in colored.stdout or "\x1b[1;36m" in colored.stdout  # cyan loss name
    plain = subprocess.run(
        [sys.executable, "-m", "lossctl", *CE],
        capture_output=True,
        text=True,
        env=_env(FORCE_COLOR="1", NO_COLOR="1"),
        cwd=ROOT,
    )
    assert "36m" not in plain.stdout
    flag = subprocess.run(
        [sys.executable, "-m", "lossctl", *CE, "--no-color"],
        capture_output=True,
        text=True,
        env=_env(FORCE_COLOR="1"),
        cwd=ROOT,
    )
    assert "36m" not in flag.stdout


def test_quickstart_commands_in_readme_match_ci():
    readme = open(os.path.join(ROOT, "README.md")).read()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```sh\n")[1:3]]
    assert "lossctl compute cross-entropy sample_data/" in blocks[0]
    assert "pytest" in blocks[1]
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert blocks[1] in ci


def test_grad_output_and_norm(cli, tmp_path, sample_ref):
    import pyarrow.parquet as pq

    from lossctl.losses.classification import cross_entropy_grad

    t = pq.read_table(PQ)
    x = np.stack(t.column("logits").to_numpy(zero_copy_only=False))
    y = t.column("label").to_numpy()
    expected = cross_entropy_grad(x, y)
    for ext in ("npy", "parquet", "csv", "jsonl"):
        path = tmp_path / f"g.{ext}"
        res = cli([*CE, "--grad", str(path), "--chunk-size", "37", "-f", "json"])
        assert res.code == 0, res.err
        assert res.json["grad"] == {"path": str(path), "rows": 200, "wrt": "pred"}
        if ext == "npy":
            g = np.load(path)
        elif ext == "parquet":
            g = np.array(pq.read_table(path).column("grad").to_pylist())
        elif ext == "csv":
            rows = list(csv.DictReader(open(path)))
            g = np.array([[float(r[f"grad_{k}"]) for k in range(5)] for r in rows])
        else:
            g = np.array([json.loads(line)["grad"] for line in open(path)])
        np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-15)
    ps = tmp_path / "p.csv"
    res = cli([*CE, "--per-sample", str(ps), "--grad-norm"])
    norms = np.array([float(r["grad_norm"]) for r in csv.DictReader(open(ps))])
    np.testing.assert_allclose(norms, np.linalg.norm(expected, axis=1), rtol=1e-12)
    assert_clean_error(cli([*CE, "--grad-norm"]), 2, "--per-sample")
    assert_clean_error(cli([*CE, "--grad", str(tmp_path / "g.txt")]), 2, "--grad")


def test_explain(cli):
    res = cli(["explain", "ce"])
    assert res.code == 0
    for needle in (
        "cross-entropy (ce)",
        "Formula",
        "log softmax",
        "Inputs",
        "PRED",
        "--label-smoothing",
        "default 0.0",
        "Gradient",
        "softmax(x_n)",
        "Properties",
        "Used for",
        "activation",
        "torch.nn.functional.cross_entropy",
        "Paper",
        "lossctl compute cross-entropy sample_data/",
    ):
        assert needle in res.out, needle
    data = cli(["explain", "mae", "--format", "json"]).json
    assert data["name"] == "mae" and data["reference"].startswith("torch.nn.functional.l1_loss")
    assert_clean_error(cli(["explain", "hubr"]), 2, "Unknown loss 'hubr'")


def test_info_nce_values_never_depend_on_the_reading_chunk_size(cli, tmp_path):
    views = f"{SAMPLE}/contrastive_views.parquet"
    outs = []
    for chunk in ("7", "32", "1000"):
        path = tmp_path / f"p{chunk}.npy"
        res = cli(
            [
                "compute",
                "info-nce",
                f"{views}:query",
                f"{views}:key",
                "--batch-size",
                "32",
                "--chunk-size",
                chunk,
                "--per-sample",
                str(path),
                "-f",
                "json",
            ]
        )
        assert res.code == 0, res.err
        assert res.json["batch_size"] == 32 and res.json["params"]["batch-size"] == 32
        outs.append(np.load(path))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    whole = cli(["compute", "info-nce", f"{views}:query", f"{views}:key", "-f", "json"]).json
    assert whole["batch_size"] == whole["count"]  # default: the whole input is one batch
