"""Regenerate tests/golden/*.txt: what lossctl prints for the bundled examples.

    python tests/golden/make_golden.py

The outputs must stay byte-identical through refactors (tests/test_golden_outputs.py); run this
only when a change of output is intended, and say so in the commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def cases() -> list[tuple[str, list[str]]]:
    sys.path.insert(0, ROOT)
    from lossctl import registry

    out: list[tuple[str, list[str]]] = [
        ("help", ["--help"]),
        ("compute_help", ["compute", "--help"]),
        ("check_help", ["check", "--help"]),
        ("list", ["list"]),
        ("list_json", ["list", "--format", "json"]),
    ]
    seen = set()
    for n in registry.names():
        spec = registry.get(n)
        if spec.name in seen or spec.plugin:
            continue
        seen.add(spec.name)
        ex = list(spec.example)
        out.append((f"explain_{spec.name}", ["explain", spec.name]))
        out.append((f"compute_{spec.name}", ["compute", spec.name, *ex]))
        out.append((f"compute_{spec.name}_json", ["compute", spec.name, *ex, "--format", "json"]))
        out.append((f"compute_{spec.name}_md", ["compute", spec.name, *ex, "--format", "markdown"]))
        out.append((f"compute_{spec.name}_rows", ["compute", spec.name, *ex, "--per-sample", "-", "-q"]))
    return out


def run(args: list[str]) -> str:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("FORCE_COLOR", None)
    p = subprocess.run([sys.executable, "-m", "lossctl", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    return json.dumps({"code": p.returncode, "stdout": p.stdout, "stderr": p.stderr}, indent=1, ensure_ascii=False)


def main() -> None:
    for name, args in cases():
        with open(os.path.join(HERE, name + ".txt"), "w", encoding="utf-8") as f:
            f.write(json.dumps(args) + "\n" + run(args) + "\n")


if __name__ == "__main__":
    main()
