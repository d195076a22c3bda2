"""Every `lossctl ...` command in the README's shell blocks runs as written.

Each line of a ```sh block that runs lossctl is executed with bash (pipefail) from a scratch
directory holding a link to the repository's sample_data/, so outputs the examples write land
there and never in the repository. A trailing `# exit N` comment states the documented exit
code (a failing gate); every other line must exit 0. Blocks meant as templates (placeholders,
remote buckets) are fenced as ```text and are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

README = os.path.join(ROOT, "README.md")


def _commands() -> list[tuple[int, str, int]]:
    text = open(README, encoding="utf-8").read()
    out = []
    for block in re.finditer(r"^```sh\n(.*?)^```", text, re.S | re.M):
        start = text.count("\n", 0, block.start()) + 2
        lines = block.group(1).split("\n")
        setup: list[str] = []  # VAR=value lines of the block, which later lines use
        i = 0
        while i < len(lines):
            line, first = lines[i], i
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            i += 1
            if re.match(r"^(export\s+)?[A-Za-z_][A-Za-z0-9_]*=\S*\s*(#.*)?$", line.strip()):
                setup.append(line.strip())
                continue
            if not re.search(r"(^|[|;&]\s*)lossctl\s", line.strip()) and not line.strip().startswith("lossctl"):
                continue
            m = re.search(r"#\s*exit (\d+)", line)
            out.append((start + first, "; ".join([*setup, line]), int(m.group(1)) if m else 0))
    return out


COMMANDS = _commands()


def test_the_readme_has_examples_to_run():
    assert len(COMMANDS) >= 25


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    os.symlink(os.path.join(ROOT, "sample_data"), d / "sample_data")
    return d


@pytest.mark.slow
@pytest.mark.parametrize("lineno, command, code", COMMANDS, ids=[f"README:{n}" for n, _, _ in COMMANDS])
def test_readme_command_runs(scratch, lineno, command, code):
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("GITHUB_STEP_SUMMARY", None)
    before = sorted(os.listdir(os.path.join(ROOT, "sample_data")))
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=scratch, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == code, f"README line {lineno}: {command}\nexit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert sorted(os.listdir(os.path.join(ROOT, "sample_data"))) == before  # examples never write into the repo


def test_quickstart_output_is_what_the_readme_prints():
    text = open(README, encoding="utf-8").read()
    shown = text.split("The first prints:", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    env = dict(os.environ, COLUMNS="")
    env.pop("COLUMNS")
    proc = subprocess.run(
        [sys.executable, "-m", "lossctl", "compute", "cross-entropy", "sample_data/classifier.parquet:logits",
         "sample_data/classifier.parquet:label"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    strip = lambda t: [ln.rstrip() for ln in t.strip().splitlines()]  # noqa: E731
    assert strip(proc.stdout) == strip(shown)
