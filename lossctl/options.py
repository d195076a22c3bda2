"""The run options: declared once, here.

Every option of ``lossctl compute`` (and of the commands that share them) is one :class:`Opt`
record in :data:`SCHEMA`: its Python name, type, default, valid range or choices, help text,
command-line spelling (and short flag), metavar, help panel, and whether a check config
accepts it. Derived from it:

- the Typer options of ``compute`` and ``compare`` (``lossctl.cli.schema``);
- the run-option keys of a check config and their validation (``checks.RUN_SCHEMA``);
- :func:`build_options`, which validates the values once and returns the :class:`Options`
  that travel below the command line (engine, checks, compare, cluster);
- how the CLI spells an option the core names with ``errors.opt`` (:func:`flag_of`).

This module imports neither NumPy nor Typer: the CLI reads it to build ``--help``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any, Callable

from lossctl.errors import UsageError, opt
from lossctl.io import formats  # the input and output formats (plain data: no NumPy, no pyarrow)

# Without --chunk-size, a chunk holds about this many bytes of input (the engine's rule; the
# --chunk-size help quotes it).
CHUNK_BYTES = 8 << 20
DEFAULT_MAX_GROUPS = 10_000
DEFAULT_SEED = 12345
SEED_MAX = 2**64 - 1  # bootstrap seeds: 0 to 2**64 - 1 (--seed, LOSSCTL_SEED, seed in a config)
# Row numbers are int64; an offset up to 2**62 leaves room for 2**62 rows after it.
MAX_ROW_OFFSET = 2**62

IN, OUT, CHK, ENG = "Inputs", "Output", "Checks", "Engine"


class OptionError(UsageError):
    """A run option's value is outside its contract. ``option`` is its Python name; the
    message names it through ``errors.opt`` so each face spells it its own way."""

    def __init__(self, option: str, message: str, *, expected: str = "", value: Any = None):
        super().__init__(message)
        self.option = option
        self.expected = expected
        self.value = value


class Opt:
    """One option. ``default`` is what the command line passes when it is not given (None: not
    given, the run decides); ``must`` is how a message states the contract (``must be at least 1``);
    ``config`` is True when a check config accepts it (as ``key``); ``run`` is True when it is a
    field of :class:`Options` (``field``; ``invert`` for ``no_header`` -> ``header``).

    A plain class, not a dataclass: the CLI reads the schema to build ``--help``, and ~60
    frozen-dataclass instances cost start-up time.
    """

    __slots__ = (
        "name", "type", "help", "panel", "default", "metavar", "flag", "short", "envvar", "choices", "low",
        "high", "low_open", "high_open", "must", "config", "run", "field", "invert",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        type: str,  # text | int | float | bool | choice | char | names
        help: str,
        panel: str,
        default: Any = None,
        metavar: str | None = None,
        flag: str = "",  # the long flag; default --name-with-hyphens
        short: str | None = None,
        envvar: str | None = None,
        choices: tuple[str, ...] = (),
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = False,
        must: str = "",
        config: bool = False,
        run: bool = False,
        field: str = "",
        invert: bool = False,
    ):
        self.name, self.type, self.help, self.panel, self.default = name, type, help, panel, default
        self.metavar, self.flag, self.short, self.envvar, self.choices = metavar, flag, short, envvar, choices
        self.low, self.high, self.low_open, self.high_open, self.must = low, high, low_open, high_open, must
        self.config, self.run, self.field, self.invert = config, run, field, invert

    def but(self, **change: Any) -> "Opt":
        """A variant: the same option with some fields changed."""
        return Opt(**{**{k: getattr(self, k) for k in Opt.__slots__}, **change})

    def __repr__(self) -> str:
        return f"Opt({self.name!r}, {self.type!r})"

    @property
    def key(self) -> str:
        """The key in a check config (and in the hyphenated dicts of older callers)."""
        return self.name.replace("_", "-")

    @property
    def spelled(self) -> str:
        return self.flag or "--" + self.key

    @property
    def shown_metavar(self) -> str | None:
        if self.metavar is None and self.type == "choice":
            return "[" + "|".join(self.choices) + "]"
        return self.metavar

    @property
    def dest(self) -> str:
        return self.field or self.name

    def check(self, value: Any) -> Any:
        """``value`` (not None) converted and checked against the contract, or an OptionError."""
        if self.type == "names":  # a list of texts (compare's --label): the command line made it
            return value
        if self.type == "bool":
            if not isinstance(value, bool):
                raise self._bad(value, "must be true or false")
            return value
        if self.type in ("text", "choice", "char"):
            if not isinstance(value, str):
                raise self._bad(value, "must be a string")
            if self.type == "choice" and value not in self.choices:
                raise self._bad(value, self.must or "must be one of " + ", ".join(self.choices))
            if self.type == "char" and len(value) != 1:
                raise self._bad(value)
            return value
        x = _as_int(value) if self.type == "int" else _as_float(value)
        if x is None:
            raise self._bad(value, "must be a whole number" if self.type == "int" else "must be a number")
        if not self.within(x):
            raise self._bad(x)
        return x

    def within(self, x: float) -> bool:
        """In [low, high] (open ends as declared); NaN never is."""
        if self.low is None and self.high is None:
            return True  # any number (a bound such as --max may be NaN: it then always fails)
        if x != x:
            return False
        if self.low is not None and not (x > self.low if self.low_open else x >= self.low):
            return False
        return self.high is None or (x < self.high if self.high_open else x <= self.high)

    def _bad(self, value: Any, must: str = "") -> OptionError:
        must = must or self.must
        return OptionError(self.name, f"{opt(self.name)} {must}; got {value!r}.", expected=must, value=value)


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    try:
        import numbers

        if isinstance(v, numbers.Integral):
            return int(v)
        if isinstance(v, float):
            return int(v) if v.is_integer() else None
        if isinstance(v, str):
            return int(v.strip())
    except (ValueError, OverflowError):
        return None
    return None


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------
# The schema. The order is that of `lossctl compute NAME --help`.
# ---------------------------------------------------------------------------

_REDUCTION_HELP = (
    "Headline reduction as in PyTorch: 'mean' (the loss's reference mean) or 'sum' (PyTorch's "
    "reduction='sum': for (N, D) element-wise losses such as mse, bce and focal the sum over all "
    "N·D elements, D times the sum of the per-sample values, which are row means); "
    "'none' writes the per-sample values to stdout (and to --per-sample PATH too when given)."
)

SCHEMA: tuple[Opt, ...] = (
    Opt("id_col", "text", "Join inputs by this key column instead of by row position.", IN,
        metavar="NAME", config=True, run=True),
    Opt("on_missing", "choice", "With --id-col: ids missing on one side are an error, or dropped and counted.", IN,
        default="error", choices=("error", "drop"), config=True, run=True),
    Opt("nan", "choice", "Rows with NaN: an error naming them, omitted and counted, or NaN in the result.", IN,
        default="error", choices=("error", "omit", "propagate"), config=True, run=True),
    Opt("input_format", "text", "Format of stdin ('-') and of files whose name does not tell.", IN,
        metavar="[" + formats.input_metavar() + "]", config=True, run=True),
    Opt("no_header", "bool", "CSV/TSV files have no header line (columns are f0, f1, ...).", IN,
        default=False, config=True, run=True, field="header", invert=True),
    Opt("delimiter", "char", "CSV field delimiter (default ',' or tab for .tsv).", IN,
        metavar="CHAR", must="must be one character", config=True, run=True),
    Opt("prob_atol", "float", "Tolerance on |Σp - 1| for probability rows (default 1e-4, more for float16).", IN,
        metavar="TOL", low=0, low_open=True, must="must be above 0", config=True, run=True),
    Opt("chunk_size", "int", f"Rows per chunk (default: about {CHUNK_BYTES >> 20} MB of input).", IN,
        metavar="ROWS", low=1, must="must be at least 1", config=True, run=True, field="chunk_rows"),
    Opt("format", "choice", "Report format on stdout (env LOSSCTL_FORMAT).", OUT,
        default="table", short="-f", envvar="LOSSCTL_FORMAT",
        choices=("table", "json", "jsonl", "csv", "tsv", "markdown")),
    Opt("score_only", "bool", "Print only the headline number.", OUT, default=False, short="-b"),
    Opt("reduction", "choice", _REDUCTION_HELP, OUT,
        default="mean", choices=("mean", "sum", "none"), config=True, run=True),
    Opt("per_sample", "text", "Write one row per input row (row, id, loss, status, ...): "
        f"{formats.extensions_text(formats.sink_names())}, or - for stdout.", OUT, metavar="PATH", run=True),
    Opt("top", "int", "Show the K worst samples.", OUT, default=5, metavar="K", low=0, must="must be 0 or more",
        run=True),
    Opt("group_by", "text", "One aggregate per value of COL (a column of an input, or of a side file) plus 'all'.",
        OUT, metavar="COL|PATH:COL", config=True, run=True),
    Opt("max_groups", "int", "With --group-by: more than N distinct values (default 10000) is an error, found early.",
        OUT, metavar="N", low=1, must="must be a whole number of at least 1", config=True, run=True),
    Opt("hist", "bool", "Add a histogram of the per-sample losses.", OUT, default=False),
    Opt("html", "text", "Also write a self-contained HTML report (histogram, worst samples, groups, signature).",
        OUT, metavar="PATH"),
    Opt("ci", "float", "Bootstrap confidence interval of the value, e.g. 0.95.", OUT, metavar="LEVEL",
        low=0, high=1, low_open=True, high_open=True, must="is a confidence level in (0, 1), e.g. 0.95",
        config=True, run=True),
    Opt("ci_n", "int", "Bootstrap resamples.", OUT, default=1000, metavar="N", low=10,
        must="must be at least 10 resamples", config=True, run=True),
    Opt("seed", "int", "Bootstrap seed, 0 to 2**64 - 1 (default 12345, or env LOSSCTL_SEED).", OUT, metavar="N",
        low=0, high=SEED_MAX, must="must be an integer from 0 to 2**64 - 1", config=True, run=True),
    Opt("grad", "text", "Write d loss_n / d prediction_n for every row, in input order: "
        f"{formats.extensions_text(formats.grad_names(), ', ', ' or ')}.", OUT, metavar="PATH", run=True),
    Opt("per_token", "text", "Token-level losses (token-cross-entropy): write one row per scored token (row, "
        "position, token, loss): .csv .tsv .parquet .jsonl.", OUT, metavar="PATH", run=True),
    Opt("normalize_by", "text", "Perplexity per token, word or byte (and bits per byte) in 'derived', as "
        "lm-evaluation-harness defines them: exp(Σ NLL / Σ units) over the corpus; bytes and words need --counts.",
        OUT, metavar="[tokens|bytes|words]", run=True),
    Opt("counts", "text", "The number of bytes, words or tokens of each sequence (a column of an input, or of a "
        "side file), for --normalize-by.", OUT, metavar="COL|PATH:COL", run=True),
    Opt("csv_safe", "bool", "CSV/TSV outputs for spreadsheets: a text cell (id, group) starting with = + - @ or a "
        "tab gets a leading ' so it is not run as a formula (numbers stay numbers).", OUT, default=False, run=True),
    Opt("grad_norm", "bool", "Add each row's gradient norm (how hard it pulls) to --per-sample.", OUT,
        default=False, run=True),
    Opt("precision", "int", "Significant digits in table/markdown (default 6) and -b (default: exact).", OUT,
        metavar="N"),
    Opt("quiet", "bool", "No progress bar or messages on stderr.", OUT, default=False, short="-q"),
    Opt("no_color", "bool", "No colour (NO_COLOR is honoured too).", OUT, default=False),
    Opt("save_state", "text", "Write the run's mergeable state (JSON) for `lossctl merge` (shards evaluated "
        "anywhere).", OUT, metavar="PATH", run=True),
    Opt("remote_timeout", "float", "Wait at most SECONDS for a remote (s3://) endpoint to connect or answer; tried "
        "twice (default 10, or LOSSCTL_REMOTE_TIMEOUT).", IN, metavar="SECONDS"),
    Opt("row_offset", "int", "Number this shard's rows from N (global rows across shards).", IN, default=0,
        metavar="N", low=0, high=MAX_ROW_OFFSET, must=f"must be between 0 and 2**62 ({MAX_ROW_OFFSET})", run=True),
    Opt("strict", "bool", "Treat warnings (e.g. a prediction read as logits that looks like probabilities) as "
        "errors: exit 1 and write nothing.", CHK, default=False, config=True, run=True),
    Opt("max_value", "float", "Exit 3 if the headline value is above X (or NaN).", CHK, metavar="X", flag="--max"),
    Opt("baseline", "text", "A previous value: a number, or a --format json result.", CHK, metavar="NUMBER|JSON"),
    Opt("max_abs_increase", "float", "Exit 3 if value - baseline > A.", CHK, metavar="A"),
    Opt("max_rel_increase", "float", "Exit 3 if (value - baseline) / |baseline| > R; over a zero baseline any "
        "increase fails.", CHK, metavar="R"),
    Opt("per_group", "bool", "Apply the bounds to every --group-by group too.", CHK, default=False, config=True),
    Opt("junit", "text", "Write the check as JUnit XML (one test case).", CHK, metavar="PATH"),
    Opt("engine", "choice", "local: this process. dask: tasks on a Dask cluster (Parquet inputs; needs the dask "
        "extra).", ENG, default="local", choices=("local", "dask"), config=True, run=True),
    Opt("scheduler", "text", "With --engine dask: a running Dask scheduler, e.g. tcp://10.0.0.5:8786.", ENG,
        metavar="ADDRESS", config=True, run=True),
    Opt("workers", "int", "With --engine dask: start a local cluster of N worker processes (default: one per "
        "core).", ENG, metavar="N", low=1, must="must be at least 1", config=True, run=True),
    Opt("min_value", "float", "Exit 3 if the headline value is below X (or NaN).", CHK, metavar="X", flag="--min"),
)  # fmt: skip

# `lossctl compare NAME`: the options it shares with compute, then its own (a variant of an option
# above keeps its name and contract and changes only what compare says or defaults to).
COMPARE_SHARED = (
    "id_col", "on_missing", "nan", "input_format", "no_header", "delimiter", "prob_atol", "chunk_size", "ci_n",
    "seed", "precision", "quiet", "no_color", "html", "group_by", "per_group", "remote_timeout",
)  # fmt: skip
COMPARE_OWN: tuple[Opt, ...] = (
    Opt("reduction", "choice", "Headline reduction.", OUT, default="mean", choices=("mean", "sum"),
        must="must be mean or sum for compare"),
    Opt("ci", "float", "Level of the paired bootstrap interval of each difference.", OUT, default=0.95,
        metavar="LEVEL", low=0, high=1, low_open=True, high_open=True,
        must="is a confidence level in (0, 1), e.g. 0.95"),
    Opt("permutations", "int", "Approximate-randomization permutations for the p-value.", OUT, default=10000,
        metavar="R", low=1, must="must be at least 1"),
    Opt("top", "int", "Show the K samples that got most worse.", OUT, default=5, metavar="K", low=0,
        must="must be 0 or more"),
    Opt("labels", "names", "A name per system, in order (default: the shortest path suffixes that tell them apart).",
        OUT, metavar="NAME", flag="--label"),
    Opt("correction", "choice", "Adjust the p-values of several candidates or groups (Holm's step-down).", OUT,
        default="none", choices=("holm", "none")),
    Opt("max_delta", "float", "Exit 3 if candidate - baseline > A.", CHK, metavar="A", low=-math.inf,
        must="must be a number, not NaN"),
    Opt("max_rel_delta", "float", "Exit 3 if (candidate - baseline) / |baseline| > R.", CHK, metavar="R",
        low=-math.inf, must="must be a number, not NaN"),
    Opt("fail_if_worse", "bool", "Exit 3 if the interval of the difference lies entirely on the worse side.", CHK,
        default=False),
    Opt("gate_alpha", "float", "Exit 3 if a candidate is worse with a permutation p-value (adjusted by "
        "--correction) below A.", CHK, metavar="A", flag="--alpha", low=0, high=1, low_open=True, high_open=True,
        must="must lie in (0, 1)"),
    Opt("junit", "text", "Write JUnit XML: one test case per candidate.", CHK, metavar="PATH"),
    Opt("no_step_summary", "bool", "Do not append the markdown report to $GITHUB_STEP_SUMMARY.", OUT, default=False),
    Opt("format", "choice", "Output format.", OUT, default="table", short="-f", envvar="LOSSCTL_FORMAT",
        choices=("table", "json", "markdown"), must="must be table, json or markdown"),
)  # fmt: skip

BY_NAME: dict[str, Opt] = {o.name: o for o in SCHEMA}
COMPARE_BY_NAME: dict[str, Opt] = {o.name: o for o in COMPARE_OWN}
RUN_OPTIONS: tuple[Opt, ...] = tuple(o for o in SCHEMA if o.run)
CONFIG_OPTIONS: tuple[Opt, ...] = tuple(o for o in SCHEMA if o.config)
_SPELLING = {o.name: o.spelled for o in (*COMPARE_OWN, *SCHEMA)}


def compare_options() -> list[Opt]:
    """The options of ``lossctl compare NAME``, in the order of its ``--help``."""
    return [o for o in SCHEMA if o.name in COMPARE_SHARED] + list(COMPARE_OWN)


def flag_of(name: str) -> str:
    """How the command line spells the option (or loss parameter) the core names ``name``."""
    return _SPELLING.get(name) or "--" + name.replace("_", "-")


# ---------------------------------------------------------------------------
# Options: what a run is given, validated
# ---------------------------------------------------------------------------


@dataclass
class Options:
    reduction: str = "mean"
    id_col: str | None = None
    on_missing: str = "error"
    nan: str = "error"
    chunk_rows: int | None = None
    input_format: str | None = None
    per_sample: str | None = None
    per_sample_format: str = "csv"
    grad: str | None = None
    grad_norm: bool = False
    group_by: str | None = None
    max_groups: int | None = DEFAULT_MAX_GROUPS  # distinct --group-by values allowed (None: no limit)
    ci: float | None = None
    ci_n: int = 1000
    seed: int = DEFAULT_SEED
    hist: bool = False
    collect: bool = False  # keep (row, id, loss, num, den) of every used row (for compare)
    save_state: str | None = None
    row_offset: int = 0  # added to row numbers (shards of one dataset: global rows for bootstrap weights)
    top: int = 5
    prob_atol: float | None = None
    header: bool = True
    delimiter: str | None = None
    csv_safe: bool = False  # CSV/TSV outputs: text cells a spreadsheet would run get a leading '
    progress: Callable[[int, int | None], None] | None = None
    strict: bool = False  # warnings (lossctl.kinds) are errors: exit 1, nothing written
    per_sample_echo: bool = False  # also write the per-sample rows to stdout (--reduction none with a file)
    per_token: str | None = None  # one row per scored token (token-level losses)
    counts: str | None = None  # COL or PATH:COL: words / bytes / tokens per sequence (--normalize-by)
    normalize_by: str | None = None  # tokens, bytes or words: the derived perplexities per unit
    engine: str = "local"  # where the run executes: this process, or a Dask cluster
    scheduler: str | None = None  # --engine dask: a running scheduler's address
    workers: int | None = None  # --engine dask: a local cluster of this many processes


_FIELDS = None


def _seed(given) -> int:
    """The bootstrap seed: given (--seed, a config's seed), else env LOSSCTL_SEED, else 12345."""
    if given is None:
        env = os.environ.get("LOSSCTL_SEED", "").strip()
        if not env:
            return DEFAULT_SEED
        try:
            value = int(env)
        except ValueError:
            value = -1
        if not 0 <= value <= SEED_MAX:
            raise OptionError("seed", f"LOSSCTL_SEED must be an integer from 0 to 2**64 - 1; got {env[:40]!r}.")
        return value
    if isinstance(given, bool) or not isinstance(given, int):
        raise BY_NAME["seed"]._bad(given)
    return BY_NAME["seed"].check(given)


def build_options(raw: dict[str, Any] | None = None, **extra) -> Options:
    """Validated run :class:`Options` from option values by name (``chunk_size``, or the
    hyphenated config key ``chunk-size``); None or absent means not given. Options the schema
    does not declare (``progress``, ``per_sample_format`` ...) pass through as fields.

    Every value is checked against its contract in :data:`SCHEMA` before any file is opened;
    a bad one raises :class:`OptionError` naming the option with ``errors.opt``.
    """
    global _FIELDS
    if _FIELDS is None:
        _FIELDS = {f.name for f in fields(Options)}
    given = {k.replace("-", "_"): v for k, v in (raw or {}).items()}
    given.update(extra)
    out: dict[str, Any] = {}
    for name, value in given.items():
        o = BY_NAME.get(name)
        if o is None or not o.run:
            if name in _FIELDS:  # a field the schema does not declare (progress, hist, ...)
                out[name] = value
            continue
        if name == "seed":
            continue
        if value is None:
            continue
        value = o.check(value)
        out[o.dest] = (not value) if o.invert else value
    out["seed"] = _seed(given.get("seed"))
    return Options(**out)


__all__ = [
    "CHUNK_BYTES",
    "CONFIG_OPTIONS",
    "DEFAULT_MAX_GROUPS",
    "MAX_ROW_OFFSET",
    "Opt",
    "OptionError",
    "Options",
    "RUN_OPTIONS",
    "SCHEMA",
    "SEED_MAX",
    "build_options",
    "compare_options",
    "flag_of",
]
