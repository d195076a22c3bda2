"""`lossctl completion bash|zsh|fish`: the scripts complete commands, losses, options, choices and files."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory):
    r = run_cli(["completion", "bash"])
    assert r.code == 0, r.err
    path = tmp_path_factory.mktemp("completion") / "lossctl.bash"
    path.write_text(r.out)
    return path


def _bash_complete(script, words: list[str]) -> list[str]:
    """Call the completion function as bash would: COMP_WORDS/COMP_CWORD set, COMPREPLY read."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    prog = f'source "{script}"; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _lossctl; printf "%s\\n" "${{COMPREPLY[@]}}"'
    out = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 0 and not out.stderr, out.stderr
    return [w for w in out.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize(
    "words, expected, exact",
    [
        (["lossctl", ""], {"compute", "compare", "check", "merge", "diff", "explain", "list", "completion"}, True),
        (["lossctl", "compute", "c"], {"cross-entropy", "ce", "contrastive", "cosine-embedding", "ciou"}, False),
        (["lossctl", "compute", "ce", "--pred-"], {"--pred-kind"}, True),
        (["lossctl", "compute", "kl", "--direction", ""], {"forward", "reverse"}, True),
        (["lossctl", "compute", "kl", "a.csv", "--direction", "r"], {"reverse"}, True),
        (["lossctl", "compute", "cross-entropy", "--format", "j"], {"json", "jsonl"}, True),
        (["lossctl", "compute", "ce", "--nan", "o"], {"omit"}, True),
        (["lossctl", "compute", "ce", "sample_data/classifier.p"], {"sample_data/classifier.parquet"}, True),
        (["lossctl", "compute", "ce", "--weight", "sample_data/classifier_lo"], {"sample_data/classifier_logits.npy"}, True),
        (["lossctl", "compare", "ce", "--tar"], {"--target", "--target-kind"}, True),
        (["lossctl", "diff", "--max-"], {"--max-delta", "--max-rel-delta"}, True),
        (["lossctl", "completion", ""], {"bash", "zsh", "fish"}, True),
        (["lossctl", "explain", "--f"], {"--format"}, True),
    ],
)
def test_bash_candidates(bash_script, words, expected, exact):
    got = set(_bash_complete(bash_script, words))
    if exact:
        assert got == expected, got
    else:
        assert expected <= got, got
        assert all(w.startswith(words[-1]) for w in got)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_every_loss_and_alias_is_offered(bash_script):
    from lossctl import registry

    got = set(_bash_complete(bash_script, ["lossctl", "compute", ""]))
    want = {s.name for s in registry.LOSSES} | {a for s in registry.LOSSES for a in s.aliases}
    assert got == want


def test_unknown_shell_is_a_usage_error():
    r = run_cli(["completion", "tcsh"])
    assert r.code == 2 and "bash, zsh, fish" in r.err


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (apt-get install zsh)")
def test_zsh_script_loads(tmp_path):
    path = tmp_path / "lossctl.zsh"
    path.write_text(run_cli(["completion", "zsh"]).out)
    out = subprocess.run(
        ["zsh", "-f", "-c", f'source "{path}"; (( $+functions[_lossctl] )) && echo loaded'],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "loaded", out.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed (apt-get install fish)")
def test_fish_candidates(tmp_path):
    path = tmp_path / "lossctl.fish"
    path.write_text(run_cli(["completion", "fish"]).out)

    def complete(line: str) -> set[str]:
        out = subprocess.run(
            ["fish", "--no-config", "-c", f'source "{path}"; complete -C "{line}"'],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        )
        assert out.returncode == 0, out.stderr
        return {ln.split("\t")[0] for ln in out.stdout.splitlines() if ln}

    assert {"cross-entropy", "ce", "contrastive"} <= complete("lossctl compute c")
    assert complete("lossctl compute ce --pred-") == {"--pred-kind"}
    assert complete("lossctl compute kl --direction ") == {"forward", "reverse"}
