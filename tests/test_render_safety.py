"""Data is data: ids, groups, names and messages are shown literally in every human-readable
output (never Rich markup, never terminal control), machine outputs stay valid (JUnit parses,
markdown tables keep their cells, CSV is spreadsheet-safe on request); boolean switches refuse
values helpfully; `lossctl list` into a pipe is one line per loss.

Expected texts are written out in the tests (the escape each character must become), not
computed with lossctl's own helper.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import write_parquet

# Each hostile value, and what a human-readable output must show for it.
HOSTILE = {
    "[/]": "[/]",
    "[link=https://evil.example]click[/link]": "[link=https://evil.example]click[/link]",
    "[bold red]loud": "[bold red]loud",
    ":cross_mark:": ":cross_mark:",
    "\x1b[2Jwipe": "\\x1b[2Jwipe",
    "\x1b[5;41mblink": "\\x1b[5;41mblink",
    "\x1b]0;TITLE\x07": "\\x1b]0;TITLE\\x07",
    "\x1b]8;;https://evil.example\x1b\\here\x1b]8;;\x1b\\": "\\x1b]8;;https://evil.example\\x1b\\here\\x1b]8;;\\x1b\\",
    "\x9b5mC1": "\\x9b5mC1",
    "left\u202eright": "left\\u202eright",
    "tab\there": "tab\\there",
    "line\nbreak": "line\\nbreak",
    "cr\rhere": "cr\\rhere",
    "nul\x00x": "nul\\x00x",
    "del\x7fx": "del\\x7fx",
}
SGR = re.compile(r"\x1b\[[0-9;]*m")  # Rich's own colours on a terminal


def assert_inert(text: str) -> None:
    """Nothing in ``text`` acts on a terminal except Rich's own colour codes."""
    assert "\x1b[5;41m" not in text and "\x1b[2J" not in text  # the injected sequences
    rest = SGR.sub("", text)
    for bad in ("\x1b", "\x07", "\x9b", "\x9d", "\x00", "\x7f", "\r", "\u202e"):
        assert bad not in rest, (bad, rest)


@pytest.fixture
def terminal(monkeypatch):
    """Rich believes it writes to a wide colour terminal (links and styles would be emitted)."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLORTERM", "truecolor")
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("LOSSCTL_FORMAT", raising=False)


def hostile_parquet(path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(HOSTILE)
    n = len(names)
    p = np.linspace(0.5, 3.0, n)
    pq.write_table(pa.table({"id": names, "g": names, "p": p, "t": np.zeros(n)}), str(path))
    return str(path)


def test_hostile_ids_and_groups_are_shown_literally_on_a_terminal(cli, tmp_path, terminal):
    f = hostile_parquet(tmp_path / "h.parquet")
    ps = tmp_path / "ps.csv"
    res = cli(
        ["compute", "mse", f + ":p", f + ":t", "--id-col", "id", "--group-by", "g", "--top", "20"]
        + ["--per-sample", str(ps)]
    )
    assert res.code == 0, res.err
    assert res.err == ""
    assert "\x1b[" in res.out  # a colour terminal indeed
    assert_inert(res.out)
    plain = SGR.sub("", res.out)
    for shown in HOSTILE.values():
        # once in the group table, once in the worst-rows table
        assert plain.count(shown) >= 2, (shown, plain)
    assert "❌" not in plain  # :cross_mark: is not an emoji code here
    assert plain.rstrip().splitlines()[-1].startswith("mse|")  # the whole report, to its signature
    # The per-sample CSV keeps the ids exactly (data is data in machine outputs).
    with open(ps, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == list(HOSTILE)


def test_hostile_groups_from_a_state_file_are_shown_literally(cli, tmp_path, terminal):
    f = hostile_parquet(tmp_path / "h.parquet")
    state = tmp_path / "s.json"
    assert cli(["compute", "mse", f + ":p", f + ":t", "--group-by", "g", "--save-state", state, "-q"]).code == 0
    res = cli(["merge", state])
    assert res.code == 0, res.err
    assert_inert(res.out)
    plain = SGR.sub("", res.out)
    for shown in HOSTILE.values():
        assert shown in plain, shown


def test_markdown_tables_keep_their_cells(cli, tmp_path):
    f = hostile_parquet(tmp_path / "h.parquet")
    res = cli(["compute", "mse", f + ":p", f + ":t", "--group-by", "g", "-f", "markdown", "--max", "0"])
    assert res.code == 3
    assert_inert(res.out)
    table = [line for line in res.out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 1 + len(HOSTILE)  # header, rule, all, one row per group
    widths = {len(re.split(r"(?<!\\)\|", line)) for line in table}
    assert widths == {len(re.split(r"\|", table[0]))}, table
    assert "\\x1b[2Jwipe" in res.out and "line\\nbreak" in res.out


def test_markdown_cells_with_pipes_and_backticks(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups = ["a|b", "`tick`", "x``y", "|"]
    n = len(groups)
    path = str(tmp_path / "g.parquet")
    pq.write_table(pa.table({"g": groups, "p": np.arange(n, dtype=float), "t": np.zeros(n)}), path)
    res = cli(["compute", "mse", path + ":p", path + ":t", "--group-by", "g", "-f", "markdown"])
    assert res.code == 0, res.err
    table = [line for line in res.out.splitlines() if line.startswith("|")]
    assert len(table) == 3 + n
    assert {len(re.split(r"(?<!\\)\|", line)) for line in table} == {len(table[0].split("|"))}
    # each group is one code span whose text, with \| unescaped, is the group value
    for g in groups:
        cells = [re.split(r"(?<!\\)\|", line)[1].strip() for line in table[3:]]
        spans = [re.fullmatch(r"(`+) ?(.*?) ?\1", c) for c in cells]
        assert all(spans), cells
        assert g in [s.group(2).replace("\\|", "|") for s in spans], (g, cells)


def _toml_str(s: str) -> str:
    """A TOML basic string with every control character as a \\uXXXX escape."""
    out = []
    for ch in s:
        if ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def test_check_table_junit_and_markdown_survive_hostile_names(cli, tmp_path, terminal):
    good = write_parquet(tmp_path / "ok.parquet", {"p": np.array([1.0, 2.0]), "t": np.array([1.0, 2.5])})
    bad = tmp_path / "bad.csv"
    bad.write_text("p,t\n1,[/]\n2,3\n")
    missing = str(tmp_path / "gone\x1b]0;T\x07.csv")
    names = {
        "[/]": "[/]",
        "esc\x1b[2Jname": "esc\\x1b[2Jname",
        "osc\x1b]0;T\x07": "osc\\x1b]0;T\\x07",
        'amp&<lt>"q': 'amp&<lt>"q',
        "nul\x00|pipe": "nul\\x00|pipe",
    }
    inputs = [
        [good + ":p", good + ":t"],  # passes (max 1)
        [str(bad) + ":p", str(bad) + ":t"],  # error: '[/]' is not a number
        [missing + ":p", missing + ":t"],  # error: file not found, a name with ESC and BEL
        [good + ":p", good + ":t"],
        [good + ":p", good + ":t"],
    ]
    maxes = [1, 1, 1, 0.01, 1]
    blocks = [
        f"[[checks]]\nname = {_toml_str(n)}\nloss = \"mse\"\ninputs = [{', '.join(_toml_str(i) for i in ins)}]\n"
        f"max = {m}\n"
        for n, ins, m in zip(names, inputs, maxes)
    ]
    config = tmp_path / "c.toml"
    config.write_text("\n".join(blocks))
    junit = tmp_path / "j.xml"

    res = cli(["check", config, "--junit", junit])
    assert res.code == 1, res.err  # two checks could not run
    assert "MarkupError" not in res.err and "internal error" not in res.err
    assert_inert(res.out)
    assert_inert(res.err)
    plain = SGR.sub("", res.out)
    for shown in names.values():
        assert shown in plain, (shown, plain)  # every check keeps its row
    assert "2 passed, 1 failed, 2 errors" in plain
    assert "'[/]' is not a number" in res.err
    assert "gone\\x1b]0;T\\x07.csv" in res.err

    root = ET.parse(junit).getroot()  # parses: nothing XML 1.0 forbids
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == list(names.values())
    errors = [c.find("error") for c in cases]
    assert errors[2] is not None and "gone\\x1b]0;T\\x07.csv" in errors[2].get("message")
    assert errors[1] is not None and "'[/]' is not a number" in errors[1].text
    assert cases[3].find("failure") is not None

    md = cli(["check", config, "-f", "markdown", "-q"])
    assert md.code == 1
    assert_inert(md.out)
    rows = [line for line in md.out.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(names)
    assert {len(re.split(r"(?<!\\)\|", line)) for line in rows} == {len(rows[0].split("|"))}


def test_compare_shows_hostile_file_names_literally(cli, tmp_path, terminal):
    rng = np.random.default_rng(3)
    t = rng.normal(size=40)
    target = write_parquet(tmp_path / "t.parquet", {"t": t})
    base = write_parquet(tmp_path / "base\x1b[2J.parquet", {"p": t + rng.normal(size=40)})
    cand = write_parquet(tmp_path / "c|x`[b]\x1b]0;T\x07.parquet", {"p": t + 0.5 * rng.normal(size=40)})
    args = ["compare", "mse", "--target", target + ":t", base + ":p", cand + ":p", "--permutations", "200"]
    res = cli(args)
    assert res.code == 0, res.err
    assert_inert(res.out)
    plain = SGR.sub("", res.out)
    assert "base\\x1b[2J.parquet:p (baseline)" in plain
    assert "c|x`[b]\\x1b]0;T\\x07.parquet:p" in plain
    md = cli(args + ["-f", "markdown"])
    assert md.code == 0, md.err
    assert_inert(md.out)
    rows = [line for line in md.out.splitlines() if line.startswith("|")]
    assert len(rows) == 4
    assert {len(re.split(r"(?<!\\)\|", line)) for line in rows} == {len(rows[0].split("|"))}


def test_error_messages_show_paths_and_names_literally(cli, tmp_path, terminal):
    res = cli(["compute", "mse", str(tmp_path / "no\x1b]0;T\x07.csv") + ":p", str(tmp_path / "x.csv") + ":t"])
    assert res.code == 1
    assert_inert(res.err)
    assert "no\\x1b]0;T\\x07.csv" in res.err

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "cols.parquet")
    pq.write_table(pa.table({"\x1b[2Jcol": [1.0, 2.0], "[/]": [1.0, 2.0]}), path)
    res = cli(["compute", "mse", path + ":zz", path + ":[/]"])
    assert res.code == 1
    assert "Traceback" not in res.err and "internal error" not in res.err
    assert_inert(res.err)
    assert "\\x1b[2Jcol" in res.err

    res = cli(["compute", "mse", "--\x1b[2Jbad", "a", "b"])  # click's own usage error quotes the option
    assert res.code == 2
    assert_inert(res.err)


def test_a_plugin_loss_with_hostile_texts_is_listed_and_explained_literally(cli, monkeypatch, terminal):
    from lossctl import registry

    evil = dataclasses.replace(
        registry.BY_NAME["mse"],
        name="evil\x1b]0;T\x07[/]",
        aliases=(),
        summary="[link=https://evil.example]click[/link] \x1b[2J",
        formula="l = \x1b[5;41m[bold]x",
        properties=(":cross_mark: \u202e",),
    )
    monkeypatch.setattr(registry, "LOSSES", registry.LOSSES + (evil,))
    monkeypatch.setattr(registry, "BY_NAME", {**registry.BY_NAME, evil.name: evil})
    listed = cli(["list"])
    assert listed.code == 0, listed.err
    assert_inert(listed.out)
    assert "evil\\x1b]0;T\\x07[/]" in listed.out
    assert "[link=https://evil.example]click[/link] \\x1b[2J" in listed.out
    shown = cli(["explain", evil.name])
    assert shown.code == 0, shown.err
    assert_inert(shown.out)
    plain = SGR.sub("", shown.out)
    for text in ("evil\\x1b]0;T\\x07[/]", "[link=https://evil.example]click[/link]", "\\x1b[5;41m[bold]x"):
        assert text in plain, text
    assert ":cross_mark: \\u202e" in plain


# ---------------------------------------------------------------------------
# CSV: data by default, spreadsheet-safe with --csv-safe
# ---------------------------------------------------------------------------

FORMULAS = ["=1+2", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tlead", "-5", "+1.5e3", "plain", "-x"]
SAFE = ["'=1+2", "'+cmd|' /C calc'!A0", "'-2+3", "'@SUM(A1)", "'\tlead", "-5", "+1.5e3", "plain", "'-x"]


def _formula_parquet(tmp_path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(FORMULAS)
    path = str(tmp_path / "f.parquet")
    pred = -1.5 - np.arange(n, dtype=float)  # negative gradients: numbers that start with '-'
    pq.write_table(pa.table({"id": FORMULAS, "p": pred, "t": np.zeros(n)}), path)
    return path


def _read(path, delimiter=","):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


def test_csv_outputs_carry_ids_exactly_by_default(cli, tmp_path):
    f = _formula_parquet(tmp_path)
    ps, g = tmp_path / "ps.csv", tmp_path / "g.csv"
    res = cli(["compute", "mse", f + ":p", f + ":t", "--id-col", "id", "--per-sample", ps, "--grad", g, "-q"])
    assert res.code == 0, res.err
    assert [r["id"] for r in _read(ps)] == FORMULAS
    assert [r["id"] for r in _read(g)] == FORMULAS


@pytest.mark.parametrize("ext,delim", [("csv", ","), ("tsv", "\t")])
def test_csv_safe_defuses_formulas_and_keeps_numbers(cli, tmp_path, ext, delim):
    f = _formula_parquet(tmp_path)
    ps, g = tmp_path / f"ps.{ext}", tmp_path / "g.csv"
    args = ["compute", "mse", f + ":p", f + ":t", "--id-col", "id", "--per-sample", ps, "--grad", g]
    res = cli(args + ["--csv-safe", "-q"])
    assert res.code == 0, res.err
    rows = _read(ps, delim)
    assert [r["id"] for r in rows] == SAFE
    # losses are (p - 0)^2 with p = -1.5 - k; gradients 2p: plain negative numbers
    n = len(FORMULAS)
    p = -1.5 - np.arange(n)
    assert [float(r["loss"]) for r in rows] == list(p**2)
    grads = _read(g)
    assert [r["id"] for r in grads] == SAFE
    assert [float(r["grad_0"]) for r in grads] == list(2 * p)
    assert all(r["grad_0"].startswith("-") for r in grads)

    report = cli(
        ["compute", "mse", f + ":p", f + ":t", "--group-by", f + ":id", "-f", ext, "--csv-safe"]
    )
    assert report.code == 0, report.err
    rows = list(csv.DictReader(io.StringIO(report.out), delimiter=delim))
    assert sorted(r["group"] for r in rows[1:]) == sorted(SAFE)
    assert rows[0]["group"] == "all" and float(rows[0]["min"]) == 2.25


# ---------------------------------------------------------------------------
# Boolean switches
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,advice",
    [
        (["compute", "poisson-nll", "--log-input", "false", "p.csv:p", "p.csv:t"], "use --no-log-input"),
        (["compute", "poisson-nll", "p.csv:p", "p.csv:t", "--log-input", "TRUE"], "use --log-input (alone)"),
        (["compute", "poisson-nll", "p.csv:p", "p.csv:t", "--log-input=no"], "use --no-log-input"),
        (["compute", "poisson-nll", "p.csv:p", "p.csv:t", "--no-log-input", "0"], "use --log-input."),
        (["compute", "poisson-nll", "p.csv:p", "p.csv:t", "--no-log-input", "yes"], "use --no-log-input (alone)"),
        (["compute", "mse", "p.csv:p", "p.csv:t", "--hist", "1"], "use --hist (alone)"),
        (["compute", "mse", "p.csv:p", "p.csv:t", "--hist", "off"], "leave out --hist"),
        (["compute", "mse", "p.csv:p", "p.csv:t", "-q", "true"], "use --quiet (alone)"),
        (["merge", "s.json", "--per-group", "false"], "leave out --per-group"),
        (["--debug", "true", "list"], "use --debug (alone)"),
    ],
)
def test_a_value_after_a_switch_says_which_switch_to_write(cli, args, advice):
    res = cli(args)
    assert res.code == 2, (res.code, res.err)
    assert "is a switch and takes no value" in res.err and advice in res.err, res.err
    assert "Traceback" not in res.err and res.out == ""


def test_switches_alone_still_work(cli, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("p,t\n0.5,1\n2,1\n")
    on = cli(["compute", "poisson-nll", f"{path}:p", f"{path}:t", "--log-input", "-b"])
    off = cli(["compute", "poisson-nll", f"{path}:p", f"{path}:t", "--no-log-input", "-b"])
    assert on.code == 0 and off.code == 0, (on.err, off.err)
    y, x = np.array([1.0, 1.0]), np.array([0.5, 2.0])
    assert float(on.out) == pytest.approx(np.mean(np.exp(x) - y * x), rel=1e-15)
    assert float(off.out) == pytest.approx(np.mean(x - y * np.log(x + 1e-8)), rel=1e-15)


# ---------------------------------------------------------------------------
# `lossctl list` into a pipe
# ---------------------------------------------------------------------------


def test_list_into_a_pipe_is_one_whole_line_per_loss(cli):
    from lossctl import registry

    res = cli(["list"])  # stdout is not a terminal here
    assert res.code == 0, res.err
    table, rule = res.out.split("\n\n")  # the table, then the input-order rule
    assert rule.strip() == registry.INPUT_ORDER_RULE
    lines = table.splitlines()
    families = {s.family for s in registry.LOSSES}
    assert len(lines) == 1 + len(families) + len(registry.LOSSES)  # nothing wrapped onto extra lines
    assert lines[0].split() == ["loss", "aliases", "inputs", "what", "it", "is"]
    assert all(line == line.rstrip() for line in lines)
    loss_lines = {ln.split()[0]: ln for ln in lines if ln.startswith("  ")}
    assert sorted(loss_lines) == sorted(s.name for s in registry.LOSSES)
    for spec in registry.LOSSES:
        assert loss_lines[spec.name].endswith(spec.summary), (spec.name, loss_lines[spec.name])
    # columns line up: every loss line has its summary starting at the same column
    starts = {loss_lines[s.name].index(s.summary) for s in registry.LOSSES}
    assert len(starts) == 1
    json_names = [d["name"] for d in json.loads(cli(["list", "-f", "json"]).out)]
    assert json_names == [s.name for s in registry.LOSSES]


@pytest.mark.parametrize("fmt,delim", [("csv", ","), ("tsv", "\t")])
def test_report_csv_keeps_every_group_value_exactly(cli, tmp_path, fmt, delim):
    """Machine outputs carry data unchanged: a group value with a lone carriage return, a line
    break, a tab, a quote or a comma reads back as itself (the csv module left '\\r' unquoted)."""
    f = hostile_parquet(tmp_path / "h.parquet")
    res = cli(["compute", "mse", f + ":p", f + ":t", "--group-by", "g", "-f", fmt])
    assert res.code == 0, res.err
    rows = list(csv.DictReader(io.StringIO(res.out, newline=""), delimiter=delim))
    assert len(rows) == 1 + len(HOSTILE)
    assert sorted(r["group"] for r in rows[1:]) == sorted(HOSTILE)
    p = np.linspace(0.5, 3.0, len(HOSTILE))
    assert {r["group"]: float(r["value"]) for r in rows[1:]} == dict(zip(HOSTILE, p**2))


def test_merge_csv_safe_defuses_group_values_from_a_state(cli, tmp_path):
    f = _formula_parquet(tmp_path)
    state = tmp_path / "s.json"
    assert cli(["compute", "mse", f + ":p", f + ":t", "--group-by", f + ":id", "--save-state", state, "-q"]).code == 0
    plain = cli(["merge", state, "-f", "csv"])
    safe = cli(["merge", state, "-f", "csv", "--csv-safe"])
    assert plain.code == 0 and safe.code == 0, (plain.err, safe.err)
    groups = [r["group"] for r in csv.DictReader(io.StringIO(plain.out, newline=""))][1:]
    assert sorted(groups) == sorted(FORMULAS)
    groups = [r["group"] for r in csv.DictReader(io.StringIO(safe.out, newline=""))][1:]
    assert sorted(groups) == sorted(SAFE)


@pytest.mark.parametrize(
    "cell,shown",
    [
        ("=1+1", "'=1+1"),
        ("+A1", "'+A1"),
        ("-A1", "'-A1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-1.5", "-1.5"),
        ("+2", "+2"),
        ("-.5e-3", "-.5e-3"),
        ("-", "'-"),
        ("1-1", "1-1"),
        ("", ""),
        ("a=1", "a=1"),
    ],
)
def test_spreadsheet_safe_cells(cell, shown):
    from lossctl.literal import spreadsheet_safe

    assert spreadsheet_safe(cell) == shown
