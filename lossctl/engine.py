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

from typing import Any

import numpy as np

from lossctl.errors import UsageError, opt
from lossctl.io.sources import cleanup_spooled
from lossctl.registry import LossSpec

# The stages' public interfaces, under the names other modules have always imported from here.
from lossctl.options import CHUNK_BYTES, DEFAULT_MAX_GROUPS, MAX_ROW_OFFSET, Options, build_options  # noqa: F401
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


