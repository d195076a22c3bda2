"""Run one loss over files: choose the engine, and the run options.

The local engine is a pipeline of stages, each its own module under ``lossctl.stages``:
open and align the sources (``align``, ``join``, ``chunks``) → compute a chunk with the
kernel (``compute``) → accumulate into mergeable state (``accumulate``, ``state``) → build
the report model (``model``); ``runner.Run`` wires them and ``outputs`` writes the row
outputs. ``run`` returns the report as a plain dict (the JSON object documented in the
README); rendering is ``lossctl.report``'s job. ``run_on`` selects the local engine or the
Dask one (``lossctl.cluster``, which drives the same stages per task): this module sits
above both, and neither imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from lossctl.errors import UsageError, opt
from lossctl.io.sources import cleanup_spooled
from lossctl.registry import LossSpec

# The stages' public interfaces, under the names other modules have always imported from here.
from lossctl.stages.align import CHUNK_BYTES  # noqa: F401
from lossctl.stages.compute import shape_text as _shape  # noqa: F401
from lossctl.stages.model import SCHEMA_VERSION, SUM_RULE, report_from_state, signature  # noqa: F401
from lossctl.stages.outputs import DROPPED, IGNORED, NAN, OK, STATUS  # noqa: F401
from lossctl.stages.runner import Run
from lossctl.stages.state import (  # noqa: F401
    STATE_VERSION,
    input_fingerprint,
    load_state,
    merge_states,
    save_state,
    state_checksum,
)

_Run = Run  # (the name benchmarks/peers.py instruments)


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
    max_groups: int | None = 10_000  # distinct --group-by values allowed (None: no limit)
    ci: float | None = None
    ci_n: int = 1000
    seed: int = 12345
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


DEFAULT_MAX_GROUPS = 10_000

# Without --batch-size, a batched loss (InfoNCE) treats the whole input as one batch,
# up to this many rows; beyond it the batch size must be given.
DEFAULT_BATCH_CAP = 4096

# Row numbers are int64; an offset up to 2**62 leaves room for 2**62 rows after it.
MAX_ROW_OFFSET = 2**62


def run(spec: LossSpec, texts: list[str | None], params: dict[str, Any], opts: Options) -> dict:
    """Evaluate ``spec`` on the sources ``texts`` (one per input role, None = optional absent)."""
    return run_with_rows(spec, texts, params, opts)[0]


def run_on(
    engine: str, spec: LossSpec, texts, params, opts: Options, scheduler: str | None = None, workers: int | None = None
) -> dict:
    """``run`` on the chosen engine: ``local`` (this process) or ``dask`` (lossctl.cluster)."""
    if engine not in ("local", "dask"):
        raise UsageError(f"{opt('engine')} must be local or dask; got {engine!r}.")
    if engine == "local":
        if scheduler or workers is not None:
            raise UsageError(
                f"{opt('scheduler')} and {opt('workers')} choose the Dask cluster of {opt('engine')} dask; "
                f"give {opt('engine')} dask too."
            )
        return run(spec, texts, params, opts)
    from lossctl import cluster

    if opts.per_token or opts.counts or opts.normalize_by:
        raise UsageError(
            f"{opt('per_token')}, {opt('counts')} and {opt('normalize_by')} run on {opt('engine')} local only."
        )
    return cluster.run(spec, texts, params, opts, scheduler=scheduler, workers=workers)


def run_with_rows(spec: LossSpec, texts, params, opts: Options) -> tuple[dict, dict[str, np.ndarray] | None]:
    """``run``, plus the per-row values of every used row when ``opts.collect`` is set."""
    try:
        r = Run(spec, texts, params, opts)
        report = r.execute()
        rows = None
        if opts.collect:
            parts = r.collected
            keys = ("row", "id", "loss", "num", "den", "group")
            rows = {
                k: (np.concatenate([p[k] for p in parts]) if parts and parts[0][k] is not None else None) for k in keys
            }
            if rows["row"] is None:
                rows = {k: np.empty(0) for k in keys}
        return report, rows
    finally:
        cleanup_spooled()


# ---------------------------------------------------------------------------
# Options from the command line or a check config (one validation for both)
# ---------------------------------------------------------------------------

_CHOICES = {
    "reduction": ("mean", "sum", "none"),
    "on-missing": ("error", "drop"),
    "nan": ("error", "omit", "propagate"),
}


def _seed(given) -> int:
    """The bootstrap seed: given (--seed, a config's seed), else env LOSSCTL_SEED, else 12345."""
    from lossctl.checks import SEED_MAX

    if given is None:
        env = os.environ.get("LOSSCTL_SEED", "").strip()
        if not env:
            return 12345
        try:
            value = int(env)
        except ValueError:
            value = -1
        if not 0 <= value <= SEED_MAX:
            raise UsageError(f"LOSSCTL_SEED must be an integer from 0 to 2**64 - 1; got {env[:40]!r}.")
        return value
    if isinstance(given, bool) or not isinstance(given, int) or not 0 <= given <= SEED_MAX:
        raise UsageError(f"--seed must be an integer from 0 to 2**64 - 1; got {given!r}.")
    return given


def build_options(raw: dict[str, Any], **extra) -> Options:
    """Validated run Options from hyphenated keys (``id-col``, ``ci-n`` ...)."""

    def get(key, default=None):
        v = raw.get(key)
        return default if v is None else v

    for key, allowed in _CHOICES.items():
        v = get(key, allowed[0])
        if v not in allowed:
            raise UsageError(f"--{key} must be one of {', '.join(allowed)}; got {v!r}.")
    chunk = get("chunk-size")
    if chunk is not None and int(chunk) < 1:
        raise UsageError(f"--chunk-size must be at least 1; got {chunk}.")
    atol = get("prob-atol")
    if atol is not None and not float(atol) > 0:
        raise UsageError(f"--prob-atol must be above 0; got {atol}.")
    delim = get("delimiter")
    if delim is not None and len(delim) != 1:
        raise UsageError(f"--delimiter must be one character; got {delim!r}.")
    ci = get("ci")
    if ci is not None and not 0 < float(ci) < 1:
        raise UsageError(f"--ci is a confidence level in (0, 1), e.g. 0.95; got {ci}.")
    ci_n = int(get("ci-n", 1000))
    if ci_n < 10:
        raise UsageError(f"--ci-n must be at least 10 resamples; got {ci_n}.")
    seed = _seed(get("seed"))
    max_groups = get("max-groups", DEFAULT_MAX_GROUPS)
    if isinstance(max_groups, bool) or not isinstance(max_groups, int) or max_groups < 1:
        raise UsageError(f"--max-groups (max-groups) must be a whole number of at least 1; got {max_groups!r}.")
    offset = int(get("row-offset", 0))
    if not 0 <= offset <= MAX_ROW_OFFSET:  # row numbers are int64: leave room for the rows themselves
        raise UsageError(f"--row-offset must be between 0 and 2**62 ({MAX_ROW_OFFSET}); got {offset}.")
    return Options(
        row_offset=offset,
        reduction=get("reduction", "mean"),
        id_col=get("id-col"),
        on_missing=get("on-missing", "error"),
        nan=get("nan", "error"),
        chunk_rows=None if chunk is None else int(chunk),
        input_format=get("input-format"),
        group_by=get("group-by"),
        max_groups=max_groups,
        ci=None if ci is None else float(ci),
        ci_n=ci_n,
        seed=seed,
        prob_atol=None if atol is None else float(atol),
        header=not bool(get("no-header", False)),
        delimiter=delim,
        strict=_strict(raw.get("strict")),
        **extra,
    )


def _strict(v) -> bool:
    if v is None:
        return False
    if not isinstance(v, bool):
        raise UsageError(f"strict must be true or false; got {v!r}.")
    return v
