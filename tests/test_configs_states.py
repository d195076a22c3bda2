"""Check configs, baselines, seeds and saved states are untrusted input (issues #12.11, #13.10-12).

Every reproducer runs through the real CLI and asserts the exit code, that there is no
"internal error" or traceback, and that the message names the file, the check and the key.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from tests.conftest import assert_clean_error, write_csv


def no_crash(res) -> None:
    assert "internal error" not in res.err and "Traceback" not in res.err, res.err
    assert "a bug in lossctl" not in res.err, res.err


@pytest.fixture
def data(tmp_path):
    """pred/target with a closed-form MSE (float64 in the test) and a known huber value."""
    pred = np.array([0.0, 1.0, 2.0, 4.0])
    target = np.array([0.5, 1.0, 0.0, 1.0])
    write_csv(tmp_path / "d.csv", {"pred": pred, "target": target})
    return tmp_path, math.fsum((p - t) ** 2 for p, t in zip(pred, target)) / 4  # 13.25 / 4


GOOD = """
[[checks]]
name = "good"
loss = "mse"
inputs = ["d.csv:pred", "d.csv:target"]
max = 100
"""


def run_config(cli, tmp_path, body: str, *extra: str):
    path = tmp_path / "c.toml"
    path.write_text(GOOD + body)
    res = cli(["check", str(path), "-f", "json", *extra])
    no_crash(res)
    return str(path), res


def bad_check(res, path: str, name: str, key: str, *needles: str) -> dict:
    """The check `name` is an error naming the config, the check and the key; `good` still ran."""
    assert res.code == 1, (res.code, res.err)
    by = {c["name"]: c for c in res.json["checks"]}
    assert by["good"]["status"] == "pass"
    assert by["good"]["value"] == pytest.approx(13.25 / 4, rel=1e-15)
    bad = by[name]
    assert bad["status"] == "error", bad
    for needle in (path, f"({name})", f"key {key!r}", *needles):
        assert needle in bad["error"], (needle, bad["error"])
        assert needle in res.err, (needle, res.err)
    return bad


# ---------------------------------------------------------------------------
# #12.11 / #13.11: config values validated by type and range, per check
# ---------------------------------------------------------------------------


def test_bad_parameter_names_check_file_and_key_and_the_rest_still_run(cli, data):
    tmp, _ = data
    path, res = run_config(
        cli,
        tmp,
        """
[[checks]]
name = "huber-bad"
loss = "huber"
inputs = ["d.csv:pred", "d.csv:target"]
params = { delta = -1 }

[[checks]]
name = "after"
loss = "mae"
inputs = ["d.csv:pred", "d.csv:target"]
max = 0.1
""",
    )
    bad_check(res, path, "huber-bad", "params.delta", "--delta of huber must be in (0, inf]")
    after = {c["name"]: c for c in res.json["checks"]}["after"]
    assert after["status"] == "fail" and after["value"] == pytest.approx((0.5 + 0 + 2 + 3) / 4, rel=1e-15)


def test_a_string_is_never_a_boolean(cli, tmp_path):
    """`params = { swap = "false" }` used to be read as true (the value changed)."""
    rng = np.random.default_rng(0)
    a, p, n = (rng.normal(size=(6, 3)) for _ in range(3))
    for name, arr in (("a", a), ("p", p), ("n", n)):
        np.save(tmp_path / f"{name}.npy", arr)
    body = '[[checks]]\nname = "t"\nloss = "triplet"\ninputs = ["a.npy", "p.npy", "n.npy"]\nparams = {{ swap = {} }}\n'
    (tmp_path / "c.toml").write_text(body.format('"false"'))
    res = cli(["check", str(tmp_path / "c.toml"), "-f", "json"])
    no_crash(res)
    assert res.code == 1 and "key 'params.swap'" in res.err and "not a string" in res.err, res.err
    assert "the string 'false'" in res.err
    # the boolean itself is accepted, and means what it says
    (tmp_path / "c.toml").write_text(body.format("false"))
    res = cli(["check", str(tmp_path / "c.toml"), "-f", "json"])
    assert res.code == 0, res.err
    d_ap = np.sqrt(((a - p + 1e-6) ** 2).sum(1))
    d_an = np.sqrt(((a - n + 1e-6) ** 2).sum(1))
    want = np.maximum(d_ap - d_an + 1.0, 0).mean()
    assert res.json["checks"][0]["value"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    "body, key, needle",
    [
        ('terms = []\n', "terms", "at least 1 item"),
        ('terms = "abc"\n', "terms", "a list of term tables"),
        ('loss = "mse"\ninputs = ["d.csv:pred", "d.csv:target"]\nparams = "x"\n', "params", "expected a table"),
        ('loss = "mse"\ninputs = ["d.csv:pred", "d.csv:target"]\nworkers = "abc"\n', "workers", "an integer >= 1"),
        ('loss = "mse"\ninputs = ["d.csv:pred", "d.csv:target"]\nchunk-size = "abc"\n', "chunk-size", "integer"),
        ('loss = "mse"\ninputs = ["d.csv:pred", "d.csv:target"]\nchunk-size = 0\n', "chunk-size", ">= 1"),
        ('loss = "mse"\ninputs = ["d.csv:pred", "d.csv:target"]\nper-group = "no"\n', "per-group", "not a string"),
        ('loss = "mse"\ninputs = ["d.csv:pred", "d.csv:target"]\nmax = "1.5"\n', "max", "a number"),
        ('loss = "mse"\ninputs = ["d.csv:pred", "d.csv:target"]\nmax = nan\n', "max", "a number"),
        ('loss = "mse"\ninputs = ["d.csv:pred", "d.csv:target"]\nseed = -1\n', "seed", "in [0,"),
        ('loss = "mse"\ninputs = ["d.csv:pred", "d.csv:target"]\nci = 95\n', "ci", "in (0, 1)"),
        ('loss = "mse"\ninputs = "d.csv:pred"\n', "inputs", "a list of sources"),
        ('loss = 3\ninputs = ["d.csv:pred", "d.csv:target"]\n', "loss", "a non-empty string"),
        ('loss = "msee"\ninputs = ["d.csv:pred", "d.csv:target"]\n', "loss", "msee"),
        ('loss = "mse"\ninputs = ["d.csv:pred", "d.csv:target"]\nbaseline = "nope.json"\n', "baseline", "not found"),
        (
            '[[checks.terms]]\nloss = "mse"\ninputs = ["d.csv:pred", "d.csv:target"]\nweight = "abc"\n',
            "terms[0].weight",
            "the string 'abc'",
        ),
        (
            '[[checks.terms]]\nloss = "mse"\ninputs = ["d.csv:pred", "d.csv:target"]\nweight = inf\n',
            "terms[0].weight",
            "finite",
        ),
        (
            '[[checks.terms]]\nloss = "huber"\ninputs = ["d.csv:pred", "d.csv:target"]\nparams = { delta = "2" }\n',
            "terms[0].params.delta",
            "a number",
        ),
    ],
)
def test_each_bad_value_is_an_error_of_its_check_only(cli, data, body, key, needle):
    tmp, _ = data
    path, res = run_config(cli, tmp, '\n[[checks]]\nname = "bad"\n' + body)
    bad_check(res, path, "bad", key, needle)


def test_checks_that_are_not_tables_are_errors_and_the_rest_still_run(cli, data):
    tmp, _ = data
    (tmp / "c.toml").write_text('checks = [1, 2]\n')
    res = cli(["check", str(tmp / "c.toml"), "-f", "json"])
    no_crash(res)
    assert res.code == 1 and [c["status"] for c in res.json["checks"]] == ["error", "error"]
    assert "check 1 (check-1)" in res.err and "check 2 (check-2)" in res.err and "expected a table" in res.err


@pytest.mark.parametrize(
    "text, needle",
    [
        ('defaults = "x"\n', "key 'defaults': expected a table"),
        ('[defaults]\nworkers = "abc"\n', "key 'defaults.workers'"),
        ('[defaults]\nno-header = "false"\n', "key 'defaults.no-header'"),
        ('checks = "abc"\n', "no [[checks]]"),
    ],
)
def test_bad_defaults_or_checks_table_is_a_usage_error_naming_the_key(cli, data, text, needle):
    tmp, _ = data
    (tmp / "c.toml").write_text(text + ('' if text.startswith("checks") else GOOD))
    res = cli(["check", str(tmp / "c.toml")])
    assert_clean_error(res, 2, str(tmp / "c.toml"), needle)


def test_typed_values_still_work(cli, data):
    """The schema accepts what TOML says: integers for floats, lists for number lists, booleans."""
    tmp, want = data
    path, res = run_config(
        cli,
        tmp,
        """
[[checks]]
name = "typed"
chunk-size = 2
seed = 18446744073709551615
ci = 0.9
ci-n = 20
max = 7
[[checks.terms]]
loss = "mse"
inputs = ["d.csv:pred", "d.csv:target"]
weight = 2
""",
    )
    assert res.code == 0, res.err
    typed = {c["name"]: c for c in res.json["checks"]}["typed"]
    assert typed["status"] == "pass" and typed["value"] == pytest.approx(2 * want, rel=1e-15)


# ---------------------------------------------------------------------------
# #13.10: seeds and baselines
# ---------------------------------------------------------------------------


def mse_args(tmp):
    return ["compute", "mse", f"{tmp}/d.csv:pred", f"{tmp}/d.csv:target"]


def test_negative_seed_is_a_usage_error(cli, data):
    tmp, _ = data
    res = cli([*mse_args(tmp), "--ci", "0.9", "--seed", "-1"])
    assert_clean_error(res, 2, "--seed must be an integer from 0 to 2**64 - 1; got -1")
    res = cli([*mse_args(tmp), "--ci", "0.9", "--seed", str(2**64)])
    assert_clean_error(res, 2, "--seed")


def test_bad_seed_in_the_environment_is_a_usage_error(cli, data, monkeypatch):
    tmp, _ = data
    monkeypatch.setenv("LOSSCTL_SEED", "abc")
    assert_clean_error(cli([*mse_args(tmp), "--ci", "0.9"]), 2, "LOSSCTL_SEED", "'abc'")
    monkeypatch.setenv("LOSSCTL_SEED", "-5")
    assert_clean_error(cli([*mse_args(tmp), "--ci", "0.9"]), 2, "LOSSCTL_SEED", "'-5'")
    monkeypatch.setenv("LOSSCTL_SEED", "7")
    res = cli([*mse_args(tmp), "--ci", "0.9", "--ci-n", "20", "-f", "json"])
    assert res.code == 0 and res.json["ci"]["seed"] == 7


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"value": NaN}', "NaN is not JSON"),
        ('{"value": "abc"}', "key 'value'"),
        ('{"value": 1, "groups": [{"group": [1], "value": 2}]}', "key 'groups[0].group'"),
        ('{"value": 1, "groups": "x"}', "key 'groups'"),
        ('{"checks": 5}', "result of lossctl check"),
        ("[1, 2]", "a lossctl JSON result"),
    ],
)
def test_hostile_baseline_json_is_a_data_error(cli, data, text, needle):
    tmp, _ = data
    (tmp / "b.json").write_text(text)
    res = cli([*mse_args(tmp), "--baseline", str(tmp / "b.json"), "--max-abs-increase", "1"])
    assert_clean_error(res, 1, f"baseline {tmp / 'b.json'}", needle)


# ---------------------------------------------------------------------------
# #13.12: merge verifies what it merges
# ---------------------------------------------------------------------------


def canonical_checksum(doc: dict) -> str:
    """The documented rule, written here independently: sha256 of the state's JSON without its
    `checksum` key, keys sorted, no spaces, ASCII."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def shards(cli, tmp_path):
    """Two CSV shards (4 + 3 rows) saved with --row-offset 0 and 4; the MSE of all 7 rows."""
    p = np.array([0.0, 1.0, 2.0, 4.0, -1.0, 0.25, 3.0])
    t = np.array([0.5, 1.0, 0.0, 1.0, 1.0, 0.0, 3.5])
    paths = []
    for k, (a, b) in enumerate(((0, 4), (4, 7))):
        write_csv(tmp_path / f"s{k}.csv", {"pred": p[a:b], "target": t[a:b]})
        state = str(tmp_path / f"s{k}.json")
        args = ["compute", "mse", f"{tmp_path}/s{k}.csv:pred", f"{tmp_path}/s{k}.csv:target"]
        res = cli([*args, "--save-state", state, "--row-offset", str(a), "--ci", "0.9", "--ci-n", "20", "-b"])
        assert res.code == 0, res.err
        paths.append(state)
    return paths, math.fsum((x - y) ** 2 for x, y in zip(p, t)) / 7


def test_states_record_rows_fingerprint_and_a_checksum_of_their_body(shards):
    (s0, s1), _ = shards
    for path, rows in ((s0, [0, 4]), (s1, [4, 7])):
        doc = json.load(open(path))
        assert doc["lossctl_state"] == 2
        assert doc["source"]["rows"] == rows
        assert doc["source"]["fingerprint"].startswith("sha256:")
        assert doc["checksum"] == canonical_checksum(doc)
    assert json.load(open(s0))["source"]["fingerprint"] != json.load(open(s1))["source"]["fingerprint"]


def test_disjoint_shards_still_merge_to_the_value_of_all_rows(cli, shards):
    (s0, s1), want = shards
    res = cli(["merge", s0, s1, "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(want, rel=1e-15) and res.json["count"] == 7


def test_the_same_state_twice_is_refused(cli, shards, tmp_path):
    (s0, s1), _ = shards
    assert_clean_error(cli(["merge", s0, s1, s0]), 1, "same state", s0, "count its rows twice")
    copy = tmp_path / "copy.json"
    copy.write_bytes(open(s0, "rb").read())
    assert_clean_error(cli(["merge", s0, str(copy)]), 1, "same state", str(copy))


def test_the_same_inputs_at_another_offset_are_refused(cli, shards, tmp_path):
    (s0, _), _ = shards
    again = str(tmp_path / "again.json")
    args = ["compute", "mse", f"{tmp_path}/s0.csv:pred", f"{tmp_path}/s0.csv:target", "--ci", "0.9", "--ci-n", "20"]
    assert cli([*args, "--save-state", again, "--row-offset", "100", "-b"]).code == 0
    assert_clean_error(cli(["merge", s0, again]), 1, "same input files", again, s0)


def test_overlapping_row_ranges_are_refused(cli, shards, tmp_path):
    """Shards of other files whose global rows overlap (the --row-offset was forgotten)."""
    (s0, _), _ = shards
    late = str(tmp_path / "late.json")
    args = ["compute", "mse", f"{tmp_path}/s1.csv:pred", f"{tmp_path}/s1.csv:target", "--ci", "0.9", "--ci-n", "20"]
    assert cli([*args, "--save-state", late, "--row-offset", "2", "-b"]).code == 0
    assert_clean_error(cli(["merge", s0, late]), 1, "rows 0 to 3", "rows 2 to 4", "overlap", "--row-offset")


def edited(path: str, tmp_path, change, resign: bool = True, name: str = "edited.json") -> str:
    doc = json.load(open(path))
    change(doc)
    if resign:
        doc["checksum"] = canonical_checksum(doc)
    out = tmp_path / name
    out.write_text(json.dumps(doc))
    return str(out)


def test_a_hand_edited_count_or_sum_fails_the_checksum(cli, shards, tmp_path):
    (s0, s1), _ = shards

    def more_rows(d):
        d["state"]["all"]["num"]["s"] *= 2

    bad = edited(s0, tmp_path, more_rows, resign=False)
    assert_clean_error(cli(["merge", bad, s1]), 1, bad, "checksum does not match")
    no_sum = edited(s0, tmp_path, lambda d: d.pop("checksum"), resign=False, name="nosum.json")
    assert_clean_error(cli(["merge", no_sum, s1]), 1, no_sum, "key 'checksum'")


def _set(keys, value):
    def change(d):
        node = d
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return change


@pytest.mark.parametrize(
    "change, key, needle",
    [
        (_set(["state", "all", "stats", "m2"], -1.0), "state.all.stats.m2", "a number >= 0"),
        (_set(["state", "all", "used"], "4"), "state.all.used", "the string '4'"),
        (_set(["state", "all", "used"], 5), "state.all.stats.count", "used + nan_propagated"),
        (_set(["state", "all", "stats", "count"], 9), "state.all.stats.count", "used + nan_propagated"),
        (_set(["state"], [1, 2]), "state", "expected a table"),
        (lambda d: d.pop("meta"), "meta", "required"),
        (_set(["loss"], "mae"), "loss", "the loss of its metadata"),
        (lambda d: (_set(["loss"], "nope")(d), _set(["meta", "loss"], "nope")(d)), "loss", "a loss of this lossctl"),
        (_set(["state", "bootstrap"], "x"), "state.bootstrap", "expected a table"),
        (
            _set(["state", "bootstrap", "num"], [1.0, 2.0]),
            "state.bootstrap.num",
            "a list of n (20) resample sums, as den; got a list of 2",
        ),
        (_set(["state", "all", "stats", "values"], None), "state.all.stats", "either kept values or a sketch"),
        (_set(["state", "bootstrap", "seed"], -1), "state.bootstrap.seed", "an integer in [0,"),
        (_set(["state", "top", "rows"], [-1]), "state.top.rows[0]", "an integer in [0, 9223372036854775807]"),
        (_set(["state", "groups"], [[[1], {}]]), "state.groups[0][0]", "a string, a number or null"),
        (_set(["source", "rows"], [0, 99]), "source.rows", "row_offset"),
        (_set(["meta", "params"], {"delta": 1.0}), "meta.params", "the parameters of mse"),
        (_set(["extra"], 1), "extra", "no such key"),
    ],
)
def test_invalid_state_fields_are_data_errors_naming_the_key(cli, shards, tmp_path, change, key, needle):
    """Even with a valid checksum (re-signed), every field is checked by type, range and consistency."""
    (s0, s1), _ = shards
    bad = edited(s0, tmp_path, change)
    res = cli(["merge", s1, bad])
    no_crash(res)
    assert_clean_error(res, 1, bad, f"key {key!r}", needle)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"lossctl_state": 2, "x": NaN}', "NaN is not JSON"),
        ('{"lossctl_state": 2, "x": Infinity}', "Infinity is not JSON"),
        ("[1, 2]", "not a lossctl state"),
        ('{"a": "\xff"}', "not UTF-8"),
    ],
)
def test_unreadable_state_files_are_data_errors(cli, shards, tmp_path, text, needle):
    (s0, _), _ = shards
    bad = tmp_path / "bad.json"
    bad.write_bytes(text.encode("latin-1"))
    assert_clean_error(cli(["merge", s0, str(bad)]), 1, str(bad), needle)


def test_states_of_another_format_or_version_are_refused(cli, shards, tmp_path):
    (s0, s1), _ = shards
    old = edited(s0, tmp_path, _set(["lossctl_state"], 1), name="old.json")
    assert_clean_error(cli(["merge", old, s1]), 1, old, "format 1", "reads format 2")
    other = edited(s0, tmp_path, _set(["lossctl_version"], "0.0.1"), name="other.json")
    assert_clean_error(cli(["merge", other, s1]), 1, other, "lossctl 0.0.1", "within one lossctl version")


def test_integer_keys_take_integers_only_and_deep_toml_is_a_usage_error(cli, data):
    tmp, _ = data
    path, res = run_config(
        cli, tmp, '\n[[checks]]\nname = "bad"\nloss = "mse"\ninputs = ["d.csv:pred", "d.csv:target"]\nci-n = 100.0\n'
    )
    bad_check(res, path, "bad", "ci-n", "an integer >= 10; got 100.0")
    (tmp / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert_clean_error(cli(["check", str(tmp / "deep.toml")]), 2, "deep.toml", "not valid TOML")


def test_checksum_survives_relayout_but_not_a_byte_edit(cli, shards, tmp_path):
    """The checksum is over the canonical JSON, so a pretty-printed copy still merges; changing
    one number in place (the file's layout kept) is detected."""
    (s0, s1), want = shards
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.load(open(s0)), indent=2))
    res = cli(["merge", str(pretty), s1, "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(want, rel=1e-15)
    raw = open(s0).read()
    assert raw.count('"used":4}') == 1
    edited_in_place = tmp_path / "inplace.json"
    edited_in_place.write_text(raw.replace('"used":4}', '"used":3}'))
    assert_clean_error(cli(["merge", str(edited_in_place), s1]), 1, "checksum does not match")
