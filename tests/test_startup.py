"""Start-up (issue #14): what `lossctl --help` and a small compute import, and the start-up benchmark.

Wall-clock targets are measured by benchmarks/startup.py (a shared CI machine is too noisy to
assert times); these tests pin what makes start-up fast: the modules each command loads.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

_PROBE = """
import sys
from lossctl.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stdout = sys.__stdout__
print("MODULES", " ".join(sorted(sys.modules)))
"""


def _modules_after(args: list[str], cwd: str = ROOT) -> set[str]:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
    out = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, cwd=cwd, env=env)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("MODULES ")]
    assert line, out.stderr
    return set(line[-1].split()[1:])


def test_help_loads_no_data_stack_and_no_option_machinery():
    mods = _modules_after(["--help"])
    for heavy in ("numpy", "pyarrow", "rich", "lossctl.engine", "lossctl.io.sources"):
        assert heavy not in mods, heavy
    # built only when a loss command is: the option schema, its Typer options, the command bodies
    for lazy in ("lossctl.options", "lossctl.cli.schema", "lossctl.cli.run", "lossctl.cli.catalogue"):
        assert lazy not in mods, lazy
    assert "typer" in mods  # the floor: Typer (and its click) parse every command line


def test_compute_help_builds_one_loss_command_without_numpy():
    mods = _modules_after(["compute", "mse", "--help"])
    assert "lossctl.cli.schema" in mods and "lossctl.options" in mods
    assert "numpy" not in mods and "pyarrow" not in mods  # (Rich draws its option panels)


def test_machine_output_of_a_small_compute_needs_no_rich(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("p,t\n" + "".join(f"{i / 10},{i / 7}\n" for i in range(10)))
    mods = _modules_after(["compute", "mse", f"{csv}:p", f"{csv}:t", "-f", "json"], cwd=str(tmp_path))
    assert "lossctl.engine" in mods  # it did run
    assert not any(m == "rich" or m.startswith("rich.") for m in mods)


def test_startup_benchmark_covers_the_issue_cases(tmp_path):
    import startup

    assert startup.MIN_REPS >= 7
    assert (startup.HELP_TARGET_S, startup.COMPUTE_TARGET_S) == (0.1, 0.2)
    data = startup.write_data(tmp_path)
    cmd = [sys.executable, "-m", "lossctl"]
    names = [name for name, _, _ in startup.cases(cmd, data)]
    for want in ("lossctl --help", "lossctl list", "lossctl explain mse", "10-row CSV", "10-row Parquet"):
        assert any(want in n for n in names), want
    targets = {name: t for name, _, t in startup.cases(cmd, data)}
    assert targets["lossctl --help"] == 0.1
    assert [t for n, t in targets.items() if "10-row" in n] == [0.2, 0.2]
    # the two computes run and give the number an independent float64 sum gives
    import json

    import numpy as np
    import pyarrow.parquet as pq

    rows = [ln.split(",") for ln in data["csv"].read_text().splitlines()[1:]]
    p, t = (np.array([float(r[i]) for r in rows]) for i in (0, 1))
    for name, argv, _ in startup.cases(cmd, data):
        if "10-row" not in name:
            continue
        out = subprocess.run([*argv, "-f", "json"], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        value = json.loads(out.stdout)["value"]
        if "CSV" in name:
            assert value == pytest.approx(float(np.mean((p - t) ** 2)), rel=1e-12)
        else:
            table = pq.read_table(str(data["parquet"]))
            x = np.array(table["logits"].to_pylist(), dtype=np.float64)
            y = np.array(table["label"].to_pylist())
            lse = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
            assert value == pytest.approx(float(np.mean(lse - x[np.arange(10), y])), rel=1e-6)


def test_startup_benchmark_measures_an_installed_or_editable_copy():
    import startup

    cmd, kind = startup.lossctl_command(None)
    assert kind in ("installed", "editable", "unknown")
    assert cmd[0].endswith("lossctl") or cmd[-1] == "lossctl"
