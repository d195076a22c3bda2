"""One run of one loss over files: read aligned chunks, compute, aggregate, report.

``run`` returns the report as a plain dict (the JSON object documented in the
README); rendering is ``lossctl.report``'s job. Memory: chunks are processed
one at a time; what stays is the running statistics (bounded, see
``lossctl.stats``) and, with ``--id-col``, the non-prediction inputs (read
whole to join on).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from lossctl import __version__
from lossctl.errors import DataError, InputError, LossctlError, ParamError, UsageError, short_reason
from lossctl.io.sinks import GradSink, RowSink, sink_format
from lossctl.losses import Result
from lossctl.ragged import Ragged
from lossctl.io.sources import (
    GROUP_KEY,
    ID_KEY,
    ReadOptions,
    Reader,
    Request,
    Source,
    cleanup_spooled,
    open_reader,
    parse_source,
)
from lossctl.kinds import KindWatch, error_hint
from lossctl.registry import LossSpec, Role
from lossctl.aggregate import Aggregate, RunState, add_segments, reliability_table
from lossctl.options import CHUNK_BYTES, DEFAULT_MAX_GROUPS, MAX_ROW_OFFSET, Options, build_options  # noqa: F401

SCHEMA_VERSION = 1

OK, IGNORED, NAN, DROPPED = 0, 1, 2, 3
STATUS = np.array(["ok", "ignored", "nan", "dropped"], dtype=object)


# Without --batch-size, a batched loss (InfoNCE) treats the whole input as one batch,
# up to this many rows; beyond it the batch size must be given.
DEFAULT_BATCH_CAP = 4096


@dataclass
class _Input:
    role: Role
    source: Source
    reader: Reader | None = None
    request: Request | None = None
    shape: tuple | None = None
    dtype: str | None = None

    @property
    def column_label(self) -> str | None:
        if self.request is None or self.request.names == ["<array>"]:
            return None
        return self.request.label

    @property
    def column_names(self) -> list[str] | None:
        """The columns this role read, in order (None: a plain array)."""
        if self.request is None or self.request.names == ["<array>"]:
            return None
        return list(self.request.names)

    def where(self) -> str:
        col = self.column_label
        return f"{self.source.display}, column {col!r}" if col else self.source.display


def run(spec: LossSpec, texts: list[str | None], params: dict[str, Any], opts: Options) -> dict:
    """Evaluate ``spec`` on the sources ``texts`` (one per input role, None = optional absent)."""
    return run_with_rows(spec, texts, params, opts)[0]


def run_on(
    engine: str, spec: LossSpec, texts, params, opts: Options, scheduler: str | None = None, workers: int | None = None
) -> dict:
    """``run`` on the chosen engine: ``local`` (this process) or ``dask`` (lossctl.cluster)."""
    if engine not in ("local", "dask"):
        raise UsageError(f"--engine must be local or dask; got {engine!r}.")
    if engine == "local":
        if scheduler or workers is not None:
            raise UsageError(
                "--scheduler and --workers choose the Dask cluster of --engine dask; give --engine dask too."
            )
        return run(spec, texts, params, opts)
    from lossctl import cluster

    if opts.per_token or opts.counts or opts.normalize_by:
        raise UsageError("--per-token, --counts and --normalize-by run on --engine local only.")
    return cluster.run(spec, texts, params, opts, scheduler=scheduler, workers=workers)


def run_with_rows(spec: LossSpec, texts, params, opts: Options) -> tuple[dict, dict[str, np.ndarray] | None]:
    """``run``, plus the per-row values of every used row when ``opts.collect`` is set."""
    try:
        r = _Run(spec, texts, params, opts)
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


def _accepted(fn: Callable) -> set[str]:
    return set(inspect.signature(fn).parameters)


class _Run:
    def __init__(self, spec: LossSpec, texts, params, opts: Options, sources: list[Source | None] | None = None):
        self.spec = spec
        self.params = dict(params)
        self.opts = opts
        self.kernel = spec.load_kernel()
        self.kernel_kwargs = dict(params)
        # --classes: label names are mapped to indices here, before the kernel (which never sees them)
        self.classes = self.kernel_kwargs.pop("classes", None)
        self._atol_pending = False
        if "prob_atol" in spec.kernel_options:
            self.kernel_kwargs["prob_atol"] = opts.prob_atol
            self._atol_pending = opts.prob_atol is None
        self.wants_extras = "extras" in spec.kernel_options and opts.per_sample is not None
        self.rel_fn = _load_hook(spec.reliability) if spec.reliability else None
        _headline_from_allowed(spec, opts.ci, opts.reduction, self.params)
        self.grad_fn = None
        self.grad_kwargs: dict[str, Any] = {}
        if opts.grad is not None or opts.grad_norm:
            self.grad_fn = spec.load_grad()
            # The gradient takes the loss parameters and prob_atol, never extras or batch_size
            # (the batch size is passed per call).
            self.grad_kwargs = {k: v for k, v in self.kernel_kwargs.items() if k != "extras"}
        self.token_fn = None
        if opts.per_token is not None:
            self.token_fn = _token_function(spec)
        _check_normalize(spec, opts)
        self.count_sums: list[float] = []  # per chunk: Σ --counts over the rows used
        self.counts_label: str | None = None
        self.token_sink: RowSink | None = None
        self.inputs: list[_Input] = []
        # ``sources``: already parsed (the parts of a dataset one dask task reads).
        for i, (role, text) in enumerate(zip(spec.inputs, texts)):
            if text is None:
                if not role.optional:
                    raise UsageError(f"{spec.name} needs {role.metavar} ({role.shape}).")
                continue
            src = sources[i] if sources is not None else parse_source(text, opts.input_format, role.name)
            self.inputs.append(_Input(role, src))
        self.pred_role = spec.inputs[spec.pred_index].name
        self.kinds = KindWatch(spec, self.params, opts.prob_atol)
        self.batch_size: int | None = None
        self.acc = RunState(top=opts.top, bootstrap=(opts.ci_n, opts.seed) if opts.ci else None)
        self.group_input: _Input | None = None
        self.sink: RowSink | None = None
        self.echo: RowSink | None = None
        self.grad_sink: GradSink | None = None
        self.collected: list[dict[str, Any]] = []
        self.prefetchers: list[_Prefetch] = []

    # -- set-up -----------------------------------------------------------------
    def _open(self) -> list[Reader]:
        readers: dict[str, Reader] = {}
        try:
            return self._open_into(readers)
        except BaseException:
            for r in readers.values():
                r.close()
            raise

    def _open_into(self, readers: dict[str, "Reader"]) -> list[Reader]:
        stdin_users = [i for i in self.inputs if i.source.is_stdin]
        ropts = ReadOptions(delimiter=self.opts.delimiter, header=self.opts.header)
        for inp in self.inputs:
            key = inp.source.path
            if key not in readers:
                readers[key] = open_reader(inp.source, ropts)
            inp.reader = readers[key]
            inp.request = Request(
                inp.role.name,
                inp.source.column,
                matrix=2 in inp.role.ndim or inp.role.dtype == "label",
                ragged=inp.role.ragged,
                dtype=inp.role.dtype,
                keylike=self._names_as_labels(inp.role),
            )
            inp.reader.add(inp.request)
        if len({i.source.fmt for i in stdin_users}) > 1:
            raise UsageError("Several inputs read stdin ('-') with different formats; stdin can be read once.")
        if self.opts.id_col:
            for reader in readers.values():
                reader.add(Request(ID_KEY, self.opts.id_col, matrix=False, keylike=True))
        if self.opts.group_by:
            self._add_group(readers, ropts)
        if self.opts.counts:
            self._add_counts(readers, ropts)
        for reader in readers.values():
            reader.resolve()
        return list(readers.values())

    def _side_source(self, readers: dict[str, Reader], ropts: ReadOptions, text: str, role: str) -> Source:
        """A side file named by --group-by or --counts (PATH:COL): opened once, joined by --id-col."""
        src = parse_source(text, self.opts.input_format, role)
        if src.path not in readers:
            readers[src.path] = open_reader(src, ropts)
            if self.opts.id_col:
                readers[src.path].add(Request(ID_KEY, self.opts.id_col, matrix=False, keylike=True))
        return src

    def _add_group(self, readers: dict[str, Reader], ropts: ReadOptions) -> None:
        """--group-by COL (a column of an input) or PATH:COL (a side file, aligned or joined by id)."""
        text = self.opts.group_by
        head, _, col = text.rpartition(":")
        if head and (os.path.exists(head) or head.startswith("<memory:")):  # (memory: the Python API's group_by=array)
            src = self._side_source(readers, ropts, text, "group-by")
            readers[src.path].add(Request(GROUP_KEY, src.column, matrix=False, keylike=True))
            self.group_label = f"{src.display}:{src.column}"
            return
        for reader in readers.values():
            if text in reader.available():
                reader.add(Request(GROUP_KEY, text, matrix=False, keylike=True))
                self.group_label = text
                return
        listing = "; ".join(f"{r.display}: {', '.join(r.available()) or 'no named columns'}" for r in readers.values())
        raise DataError(
            f"--group-by {text!r}: no input has a column of that name ({listing}). "
            "Name a column of an input, or a side file as PATH:COLUMN."
        )

    def _add_counts(self, readers: dict[str, Reader], ropts: ReadOptions) -> None:
        """--counts COL (a column of an input) or PATH:COL (a side file, aligned by row or id)."""
        text = self.opts.counts
        head = text.rpartition(":")[0]
        if (head and os.path.exists(head)) or os.path.isfile(text):
            src = self._side_source(readers, ropts, text, "counts")
            readers[src.path].add(Request(COUNTS_KEY, src.column, matrix=False))
            self.counts_label = f"{src.display}:{src.column}" if src.column else src.display
            return
        for reader in readers.values():
            if reader.can_select(text):
                reader.add(Request(COUNTS_KEY, text, matrix=False))
                self.counts_label = text
                return
        listing = "; ".join(f"{r.display}: {', '.join(r.available()) or 'no named columns'}" for r in readers.values())
        raise DataError(
            f"--counts {text!r}: no input has a column of that name ({listing}). "
            "Name a column of an input, or a side file as PATH:COLUMN (one count per sequence)."
        )

    def _chunk_rows(self, readers: list[Reader], total: int | None) -> int:
        if self.opts.chunk_rows:
            rows = max(1, int(self.opts.chunk_rows))
        else:
            widths = [r.row_bytes() for r in readers]
            width = sum(w for w in widths if w) or 64
            rows = int(min(1 << 20, max(1024, CHUNK_BYTES // width)))
        if not self.spec.batched:
            return rows
        # Batched losses: chunks hold whole batches, so per-sample values never depend on chunking.
        bs = self.params.get("batch_size")
        if bs is None:
            if total is not None and total > DEFAULT_BATCH_CAP:
                raise UsageError(
                    f"{self.spec.name}: the input has {total} rows; without --batch-size the whole input is "
                    f"one batch, which is allowed up to {DEFAULT_BATCH_CAP} rows. Give --batch-size "
                    "(the batch size the model was trained or evaluated with)."
                )
            return DEFAULT_BATCH_CAP + 1  # one chunk: the whole input (checked in _process)
        self.batch_size = int(bs)
        return self.batch_size * max(1, rows // self.batch_size)

    # -- main loop --------------------------------------------------------------
    def execute(self) -> dict:
        readers: list[Reader] = []
        try:
            readers = self._open()
            totals = {id(r): r.total_rows() for r in readers}
            for r in readers:
                if totals[id(r)] == 0:
                    raise DataError(f"{r.display} has no data rows. Expected one row per sample.")
            primary = self.inputs[0].reader
            total = totals[id(primary)]
            rows = self._chunk_rows(readers, total)
            if self.opts.per_sample is not None:
                fmt = sink_format(self.opts.per_sample, "--per-sample", self.opts.per_sample_format)
                self.sink = RowSink(self.opts.per_sample, fmt, csv_safe=self.opts.csv_safe)
                if self.opts.per_sample_echo and self.opts.per_sample != "-":
                    self.echo = RowSink("-", self.opts.per_sample_format, csv_safe=self.opts.csv_safe)
            if self.opts.grad is not None:
                self.grad_sink = GradSink(self.opts.grad, csv_safe=self.opts.csv_safe)
            if self.opts.per_token is not None:
                fmt = sink_format(self.opts.per_token, "--per-token", self.opts.per_sample_format)
                self.token_sink = RowSink(self.opts.per_token, fmt, "--per-token", csv_safe=self.opts.csv_safe)
            if self.opts.id_col and len(readers) > 1:
                chunks = _joined(self, readers, rows)
            else:
                if len(readers) > 1:
                    known = {r.display: totals[id(r)] for r in readers if totals[id(r)] is not None}
                    if len(known) == len(readers) and len(set(known.values())) > 1:
                        raise DataError(self._count_mismatch(known))
                chunks = _positional(self, readers, rows)
            for chunk in chunks:
                self._process(*chunk)
                if self.opts.progress:
                    self.opts.progress(self.acc.rows_seen, total)
            if self.acc.rows_seen == 0:
                raise DataError(f"{primary.display} has no data rows. Expected one row per sample.")
            report = self._report(readers)
            for sink in (self.sink, self.grad_sink, self.echo, self.token_sink):
                if sink is not None:
                    sink.commit()
            self.sink = self.grad_sink = self.echo = self.token_sink = None
            return report
        finally:
            for it in self.prefetchers:
                it.close()
            for it in self.prefetchers:
                it._thread.join(timeout=5)
            for sink in (self.sink, self.grad_sink, self.echo, self.token_sink):
                if sink is not None:
                    sink.abort()
            for r in readers:
                r.close()

    def _count_mismatch(self, counts: dict[str, int]) -> str:
        listing = ", ".join(f"{name} has {n} rows" for name, n in counts.items())
        return (
            f"Row counts differ: {listing}. Rows are paired by position, so every input needs the same "
            "number of rows; to pair rows by a key column instead, use --id-col NAME."
        )

    # -- one chunk --------------------------------------------------------------
    def _process(
        self,
        arrays: dict[str, np.ndarray],
        role_rows: dict[str, np.ndarray],
        prim_rows: np.ndarray,
        kept: np.ndarray | None,
        ids: np.ndarray | None,
    ) -> None:
        acc = self.acc
        n_all = len(prim_rows)
        groups = arrays.pop(GROUP_KEY, None)
        counts = arrays.pop(COUNTS_KEY, None)
        role_rows.pop(COUNTS_KEY, None)
        nan_masks = {k[len(NAN_PREFIX) :]: arrays.pop(k) for k in [k for k in arrays if k.startswith(NAN_PREFIX)]}
        if self.spec.batched and self.batch_size is None:
            if acc.rows_seen or n_all > DEFAULT_BATCH_CAP:
                raise UsageError(
                    f"{self.spec.name}: the input has more than {DEFAULT_BATCH_CAP} rows; without "
                    "--batch-size the whole input is one batch, which is allowed up to that size. "
                    "Give --batch-size."
                )
            self.batch_size = n_all
        acc.rows_seen += n_all
        kept_idx = np.arange(n_all) if kept is None else kept
        for inp in self.inputs:
            if self._names_as_labels(inp.role):
                arrays[inp.role.name] = self._class_names(inp, arrays[inp.role.name], role_rows[inp.role.name])
            arrays[inp.role.name] = self._conform(inp, arrays[inp.role.name], role_rows[inp.role.name])
        if self.classes is not None:
            self._classes_fit(arrays)

        # NaN policy: rows with a NaN in any input.
        n_k = len(kept_idx)
        nan_rows = np.zeros(n_k, dtype=bool)
        first_nan: tuple[_Input, int] | None = None
        counted = _counted_tokens(arrays)
        for inp in self.inputs:
            m = nan_masks.get(inp.role.name)
            by_mask = counted if inp.role.name != TOKEN_MASK_ROLE else None
            if m is None or (by_mask is not None and m.any()):
                m = _nan_rows(arrays[inp.role.name], by_mask)
            if m is not None and m.any():
                i = int(np.flatnonzero(m)[0])
                if first_nan is None or i < first_nan[1]:  # the earliest row over all inputs
                    first_nan = (inp, i)
                nan_rows |= m
        if first_nan is not None and self.opts.nan == "error":
            inp, i = first_nan
            rows = role_rows[inp.role.name]
            where = inp.where()
            names = inp.request.names if inp.request else []
            a = arrays[inp.role.name]
            if len(names) > 1 and isinstance(a, np.ndarray) and a.ndim == 2:
                k = int(np.flatnonzero(np.isnan(a[i]))[0])
                where = f"{inp.source.display}, column {names[k]!r}"
            raise DataError(
                f"{where}, row {int(rows[i])}: NaN or missing value in {inp.role.metavar} (the first such row). "
                "Expected numbers; use --nan omit to leave such rows out (they are counted), "
                "or --nan propagate to let NaN flow into the result."
            )
        all_use = first_nan is None
        use = ~nan_rows
        sub = arrays if all_use else {k: v[use] for k, v in arrays.items()}
        sub_rows = role_rows if all_use else {k: v[use] for k, v in role_rows.items()}
        batch_of = None
        if self.spec.batched:
            batch_of = (prim_rows[kept_idx] // self.batch_size)[use]

        if self._atol_pending:
            self._set_default_prob_atol(arrays)
        self.kinds.update(sub)
        result = self._call(sub, sub_rows, batch_of)
        if self.rel_fn is not None:
            rel = self._guarded(self.rel_fn, self._args(sub), dict(self.kernel_kwargs), sub_rows)
            result.components.update(rel)
        n_u = len(result.loss)
        ign_u = result.ignored if result.ignored is not None else np.zeros(n_u, dtype=bool)
        n_ign = int(ign_u.sum())
        # The common case (every row read is used and none is ignored) takes no row selections.
        plain = all_use and n_ign == 0
        ok_u = ~ign_u
        raw_num = result.num if result.num is not None else result.loss
        if plain:
            vals = result.loss
            num = raw_num
            den = result.den
            comps = {k: np.asarray(v, dtype=np.float64) for k, v in result.components.items()}
            ok_prim = (prim_rows if kept is None else prim_rows[kept_idx]) + self.opts.row_offset
            ok_rows_k = None
        else:
            vals = result.loss[ok_u]
            num = raw_num[ok_u]
            den = None if result.den is None else result.den[ok_u]
            comps = {k: np.asarray(v, dtype=np.float64)[ok_u] for k, v in result.components.items()}
            ok_rows_k = np.flatnonzero(use)[ok_u]
            ok_prim = prim_rows[kept_idx[ok_rows_k]] + self.opts.row_offset
        n_used = len(vals)
        n_nan = int(nan_rows.sum())
        propagate = self.opts.nan == "propagate" and n_nan > 0
        loss_used = vals
        if propagate:
            nan_fill = np.full(n_nan, np.nan)
            nan_prim = prim_rows[kept_idx[nan_rows]] + self.opts.row_offset
            vals = np.concatenate([vals, nan_fill])
            num = np.concatenate([num, nan_fill])
            if den is not None:
                den = np.concatenate([den, nan_fill])
            comps = {k: np.concatenate([v, nan_fill]) for k, v in comps.items()}
        if counts is not None:
            self._add_counts_of(counts, prim_rows, kept_idx, use, ok_u, plain)
        if self.token_sink is not None:
            self._write_tokens(sub, sub_rows, prim_rows[kept_idx[np.flatnonzero(use)]], ids, kept_idx[np.flatnonzero(use)])
        agg = acc.all
        agg.add(vals, num, den, comps)
        agg.used += n_used
        agg.ignored += n_ign
        if propagate:
            agg.nan_propagated += n_nan
        else:
            agg.nan_omitted += n_nan
        acc.dropped_pred += n_all - n_k
        if acc.bootstrap is not None:
            boot_rows = np.concatenate([ok_prim, nan_prim]) if propagate else ok_prim
            acc.bootstrap.update(num, den, boot_rows)
            if self.spec.headline_from and "rel/bin" in comps:  # ece: resample the bin sums too
                acc.bootstrap.update_bins(
                    comps["rel/bin"], comps["rel/conf"], comps["rel/hit"], boot_rows, int(self.params["bins"])
                )
        if groups is not None:
            self._update_groups(groups, use, ok_u, ign_u, nan_rows, vals, num, den, comps, propagate)

        if self.opts.collect:
            self.collected.append(
                {
                    "row": ok_prim,
                    "id": None if ids is None else np.asarray(ids)[kept_idx if plain else kept_idx[ok_rows_k]],
                    "loss": loss_used,
                    "num": raw_num if plain else raw_num[ok_u],
                    "den": np.ones(n_used) if result.den is None else (result.den if plain else result.den[ok_u]),
                    "group": None if groups is None else (np.asarray(groups) if plain else np.asarray(groups)[use][ok_u]),
                }
            )
        before = set(acc.top.rows.tolist()) if ids is not None else None
        acc.top.update(loss_used, ok_prim)
        if before is not None:
            # Ids of the rows that just entered the top K (a handful), not a map of the chunk.
            new = [r for r in acc.top.rows.tolist() if r not in before]
            if new:
                rows_all = prim_rows + self.opts.row_offset
                for i in np.flatnonzero(np.isin(rows_all, new)).tolist():
                    acc.top_ids[int(rows_all[i])] = _py(ids[i])

        grad = None
        if self.grad_fn is not None:
            grad = self._grad(sub, sub_rows, batch_of)
        if self.grad_sink is not None:
            self.grad_sink.write(grad, kept_idx[np.flatnonzero(use)], prim_rows + self.opts.row_offset, ids)
        if self.sink is not None:
            # Per-row status and loss in input order (rows dropped by the id join, NaN rows and
            # ignored rows included, with their status).
            code = np.full(n_all, OK, dtype=np.int8)
            if kept is not None:
                code[:] = DROPPED
            loss_k = np.full(n_k, np.nan)
            loss_k[use] = result.loss
            code_k = np.where(nan_rows, NAN, OK).astype(np.int8)
            code_k[use] = np.where(ign_u, IGNORED, OK).astype(np.int8)
            loss_k[np.flatnonzero(use)[ign_u]] = np.nan
            code[kept_idx] = code_k
            loss_all = np.full(n_all, np.nan)
            loss_all[kept_idx] = loss_k + 0.0  # + 0.0 turns -0.0 into 0.0
            cols: dict[str, np.ndarray] = {"row": prim_rows.astype(np.int64) + self.opts.row_offset}
            if ids is not None:
                cols["id"] = ids
            cols["loss"] = loss_all
            cols["status"] = STATUS[code]
            for name, values in result.columns.items():
                cols[name] = _scatter(values, kept_idx, np.flatnonzero(use), n_all)
            if self.opts.grad_norm:
                norms = _row_norms(grad)
                cols["grad_norm"] = _scatter(norms, kept_idx, np.flatnonzero(use), n_all)
            self.sink.write(cols)
            if self.echo is not None:
                self.echo.write(cols)

    def _add_counts_of(self, counts, prim_rows, kept_idx, use, ok_u, plain) -> None:
        """Σ --counts over the rows used (the rows whose losses the headline adds up)."""
        c = np.asarray(counts)
        if c.dtype.kind not in "biuf" or c.ndim != 1:
            raise DataError(f"--counts {self.counts_label}: expected one number per sequence; got {c.dtype} {c.shape}.")
        c = c.astype(np.float64)  # one per row kept (rows of an id join without a match are not)
        bad = ~np.isfinite(c) | (c < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            row = int(prim_rows[kept_idx[i]]) + self.opts.row_offset
            raise DataError(
                f"--counts {self.counts_label}, row {row}: {float(c[i])!r} is not a count. Expected a whole number "
                "of bytes, words or tokens (0 or more) for every sequence."
            )
        used = c[use][ok_u] if not plain else c
        self.count_sums.append(math.fsum(used.tolist()))

    def _write_tokens(self, arrays, role_rows, seq_rows, ids, idx) -> None:
        """--per-token: one row per scored token of the sequences used in this chunk."""
        kwargs = {k: v for k, v in self.kernel_kwargs.items() if k in _accepted(self.token_fn)}
        try:
            with np.errstate(all="ignore"):
                t = self.token_fn(*self._args(arrays), **kwargs)
        except InputError as err:
            raise DataError(self._input_error(err, role_rows)) from None
        local = np.asarray(t["row"], dtype=np.int64)
        cols: dict[str, np.ndarray] = {"row": seq_rows.astype(np.int64)[local] + self.opts.row_offset}
        if ids is not None:
            cols["id"] = np.asarray(ids)[idx][local]
        cols["position"] = np.asarray(t["position"], dtype=np.int64)
        cols["token"] = np.asarray(t["token"], dtype=np.int64)
        cols["loss"] = np.asarray(t["loss"], dtype=np.float64) + 0.0
        self.token_sink.write(cols)

    def _set_default_prob_atol(self, arrays: dict) -> None:
        """The default |Σp - 1| tolerance follows the inputs as stored (float16 rounds coarsely),
        not the float64 the kernels compute in."""
        from lossctl.losses._common import default_prob_atol

        atol = None
        for a in arrays.values():
            if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.ndim >= 2:
                t = default_prob_atol(a.dtype, a.shape[-1])
                atol = t if atol is None else max(atol, t)
        if atol is not None and atol > 1e-4:
            self.kernel_kwargs["prob_atol"] = atol
            self.grad_kwargs = {**self.grad_kwargs, **({"prob_atol": atol} if "prob_atol" in self.grad_kwargs else {})}
        self._atol_pending = False

    def _update_groups(self, groups, use, ok_u, ign_u, nan_rows, vals, num, den, comps, propagate) -> None:
        """Per-group aggregates: the same numbers as the overall ones, split by the group key."""
        g_use = np.asarray(groups)[use]
        keys_ok = g_use[ok_u]
        keys_nan = np.asarray(groups)[nan_rows]
        keys_vals = np.concatenate([keys_ok, keys_nan]) if propagate else keys_ok
        uniq, inv = _factorize(keys_vals)
        counted = [(_factorize(g_use[ign_u]), "ignored")]
        if not propagate:
            counted.append((_factorize(keys_nan), "nan_omitted"))
        self._room_for_groups([uniq, *(u for (u, _), _ in counted)])
        # Rows of each group in input order: one stable sort, then contiguous slices, all
        # groups' updates at once (lossctl.aggregate.add_segments).
        order = np.argsort(inv, kind="stable")
        counts = np.bincount(inv, minlength=len(uniq))
        starts = np.cumsum(counts) - counts
        aggs = [self.acc.group(key) for key in uniq]
        vs = vals[order]
        add_segments(
            aggs,
            starts,
            counts,
            vs,
            vs if num is vals else num[order],
            None if den is None else den[order],
            {k: v[order] for k, v in comps.items()},
        )
        n_ok = len(keys_ok)
        ok_counts = np.bincount(inv[:n_ok], minlength=len(uniq)).tolist()
        for agg, ok_here, n_here in zip(aggs, ok_counts, counts.tolist()):
            agg.used += ok_here
            if propagate:
                agg.nan_propagated += n_here - ok_here
        for (keys, idx), attr in counted:
            for key, n_here in zip(keys, np.bincount(idx, minlength=len(keys)).tolist()):
                agg = self.acc.group(key)
                setattr(agg, attr, getattr(agg, attr) + n_here)
        self.acc.bound_kept()

    def _room_for_groups(self, key_lists) -> None:
        """--max-groups: refuse a chunk that would take the distinct --group-by values past the
        limit, before any state of its groups is made (memory stays proportional to the limit)."""
        limit = self.opts.max_groups
        have = self.acc.groups
        if limit is None or len(have) + sum(len(k) for k in key_lists) <= limit:
            return  # even if every key of the chunk were new, the limit holds
        new = {k for keys in key_lists for k in keys if k not in have}
        if len(have) + len(new) > limit:
            raise DataError(
                f"--group-by {getattr(self, 'group_label', self.opts.group_by)}: more than {limit} distinct "
                f"values ({len(have) + len(new)} in the first {self.acc.rows_seen} rows); per-group results "
                f"are kept for at most --max-groups {limit} groups. Group by a column with fewer values, "
                "or raise --max-groups N (memory and the report grow with it)."
            )

    def _exact_in_float64(self, inp: _Input, a: np.ndarray, rows: np.ndarray) -> None:
        """Integer values are computed in float64: one it cannot hold exactly is an error, not a
        silently rounded number (int64 2**53 + 1 would become 2**53)."""
        from lossctl.losses._common import inexact_in_float64

        bad = inexact_in_float64(a)
        if bad is None:
            return
        flat = bad.reshape(len(a), -1)
        i = int(np.flatnonzero(flat.any(axis=1))[0])
        v = int(a.reshape(len(a), -1)[i][flat[i]][0])
        raise DataError(
            f"{inp.where()}, row {int(rows[i])}: the integer {v} has more than 53 significant bits, so "
            f"float64 cannot hold it and {inp.role.metavar} would be rounded ({int(flat.any(axis=1).sum())} "
            f"such row(s) in this block). Expected integers of magnitude up to 2**53 = {1 << 53}; "
            "subtract an offset, or store the column as float64 to accept the rounding."
        )

    def _names_as_labels(self, role: Role) -> bool:
        return self.classes is not None and role.dtype == "label"

    def _class_names(self, inp: _Input, a, rows: np.ndarray) -> np.ndarray:
        """--classes: one class name per row -> its index in the list (logit order)."""
        from lossctl.literal import visible
        from lossctl.losses._common import class_name_indices

        a = np.asarray(a)
        if a.ndim != 1:
            raise DataError(
                f"{inp.where()} gives {inp.role.metavar} as {_shape(a.shape)}, but --classes maps one class "
                "name per row. Expected a single column of class names (soft targets need no --classes)."
            )
        idx, unknown = class_name_indices(a, self.classes)
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            shown = ", ".join(visible(c) for c in self.classes[:10]) + (", ..." if len(self.classes) > 10 else "")
            raise DataError(
                f"{inp.where()}, row {int(rows[i])}: the label '{visible(a[i])}' is not one of the "
                f"{len(self.classes)} names of --classes ({shown}); {int(unknown.sum())} row(s) of this block have "
                "such labels. Expected every label to be a name from --classes (the same spelling and case), "
                "given in logit order."
            )
        return idx

    def _classes_fit(self, arrays) -> None:
        """--classes names every column of the prediction, in order: the counts must agree."""
        pred = next(i for i in self.inputs if i.role.name == self.pred_role)
        c = np.shape(arrays[pred.role.name])[1:]
        if len(c) == 1 and c[0] != len(self.classes):
            raise DataError(
                f"{pred.where()} has {c[0]} class columns but --classes names {len(self.classes)} classes. "
                "Expected one name per prediction column, in logit order."
            )

    def _conform(self, inp: _Input, a, rows: np.ndarray):
        """Check an input's dimensions and numeric type; record its shape."""
        role = inp.role
        if role.ragged and isinstance(a, np.ndarray) and a.ndim == 2:
            n, t = a.shape
            a = Ragged(a.reshape(-1), np.arange(0, n * t + 1, max(t, 1)) if t else np.zeros(n + 1, np.int64))
        if getattr(a, "is_ragged", False):
            if not role.ragged:
                raise DataError(
                    f"{inp.where()} gives {role.metavar} as lists of different lengths, but "
                    f"{self.spec.name} expects {role.metavar} of shape {role.shape}: {role.help}"
                )
            if a.values.dtype.kind not in "biuf":
                raise DataError(f"{inp.where()}: values of type {a.values.dtype}; expected numbers.")
            if role.dtype == "float" and a.values.dtype.kind in "biu":
                self._exact_in_float64(inp, a.values, rows[a.row_ids()])
                a = a.astype(np.float64)
            if inp.shape is None:
                inp.dtype = str(a.values.dtype)
            inp.shape = ("N", "ragged")  # (also after blocks whose sequences happened to be of equal length)
            return a
        if a.ndim not in role.ndim:
            got = "a single column" if a.ndim == 1 else f"shape {_shape(a.shape)}"
            raise DataError(
                f"{inp.where()} gives {role.metavar} as {got}, but {self.spec.name} expects "
                f"{role.metavar} of shape {role.shape}: {role.help}"
                + (
                    " Select several columns with NAME_* or A,B,C, or use a list column."
                    if 2 in role.ndim and a.ndim == 1
                    else ""
                )
            )
        if a.dtype.kind not in "biuf":
            raise DataError(f"{inp.where()}: values of type {a.dtype}; expected numbers.")
        if role.dtype == "float" and a.dtype.kind in "biu":
            self._exact_in_float64(inp, a, rows)
            a = a.astype(np.float64)
        if inp.shape is None:
            inp.shape = ("N",) + tuple(a.shape[1:])
            inp.dtype = str(a.dtype)
        elif role.ragged and a.ndim >= 3 and (inp.shape[1:] == ("ragged",) or inp.shape[2:] == a.shape[2:]):
            inp.shape = ("N", "ragged")  # blocks of sequences of equal length, differing between blocks
        elif inp.shape[1:] != tuple(a.shape[1:]) and inp.shape[1:] != ("ragged",):
            raise DataError(
                f"{inp.where()}, row {int(rows[0])}: shape changes from {_shape(inp.shape)} to {_shape(a.shape)}."
            )
        return a

    def _args(self, arrays: dict[str, Any]) -> list:
        return [arrays.get(role.name) for role in self.spec.inputs]

    def _call(self, arrays, role_rows, batch_of: np.ndarray | None):
        kwargs = dict(self.kernel_kwargs)
        if self.wants_extras:
            kwargs["extras"] = True
        if batch_of is None:
            return self._guarded(self.kernel, self._args(arrays), kwargs, role_rows)
        return self._by_batch(self.kernel, arrays, role_rows, kwargs, batch_of)

    def _grad(self, arrays, role_rows, batch_of):
        kwargs = dict(self.grad_kwargs)
        if batch_of is None:
            return self._guarded(self.grad_fn, self._args(arrays), kwargs, role_rows)
        return self._by_batch(self.grad_fn, arrays, role_rows, kwargs, batch_of)

    def _by_batch(self, fn, arrays, role_rows, kwargs, batch_of):
        """Call a batched kernel so that batches are the input's (row // batch size) groups."""
        n = len(batch_of)
        starts = np.flatnonzero(np.r_[True, batch_of[1:] != batch_of[:-1]]) if n else np.zeros(0, int)
        sizes = np.diff(np.r_[starts, n])
        # Fast path: every batch complete except possibly the last, as the kernel would split.
        if n == 0 or (sizes[:-1] == self.batch_size).all():
            return self._guarded(fn, self._args(arrays), {**kwargs, "batch_size": self.batch_size}, role_rows)
        parts = []
        for st, sz in zip(starts.tolist(), sizes.tolist()):
            sl = slice(st, st + sz)
            sub = {k: v[sl] for k, v in arrays.items()}
            rows = {k: v[sl] for k, v in role_rows.items()}
            parts.append(self._guarded(fn, self._args(sub), {**kwargs, "batch_size": sz}, rows))
        if isinstance(parts[0], Result):
            return _concat_results(parts)
        return np.concatenate(parts)

    def _guarded(self, fn, args, kwargs, role_rows):
        try:
            # Floating-point exceptions are not reported as Python RuntimeWarnings on stderr: the
            # kernels compute inf where a true value overflows, and a NaN from inputs that hold
            # none (an intermediate overflowing, inf - inf) is refused below, naming the row.
            with np.errstate(all="ignore"):
                out = fn(*args, **kwargs)
        except InputError as err:
            raise DataError(self._input_error(err, role_rows)) from None
        except ParamError as err:
            raise UsageError(f"{self.spec.name}: {err.message}.") from None
        self._no_nan_from_numbers(out, role_rows)
        return out

    def _no_nan_from_numbers(self, out, role_rows) -> None:
        """The kernels only see rows without NaN (NaN rows are set aside by the --nan policy), so
        a NaN result is float64 failing on extreme values: an error, never a silent NaN."""
        if isinstance(out, Result):
            vals = out.loss
            bad = np.isnan(vals)
            if out.ignored is not None:
                bad &= ~out.ignored
            what = "value"
        else:
            vals = out.values if isinstance(out, Ragged) else np.asarray(out)
            if vals.dtype.kind != "f":
                return
            bad = np.isnan(vals)
            if isinstance(out, Ragged):
                bad = bad.reshape(len(bad), -1).any(axis=1)  # (ragged logits: one vector per element)
                flat = np.zeros(len(out), dtype=bool)
                flat[out.row_ids()[bad]] = True
                bad = flat
            else:
                bad = bad.reshape(len(vals), -1).any(axis=1) if vals.ndim > 1 else bad
            what = "gradient"
        if not bad.any():
            return
        i = int(np.flatnonzero(bad)[0])
        inp = self.inputs[0]
        rows = role_rows.get(inp.role.name)
        row = f", row {int(rows[i])}" if rows is not None and i < len(rows) else ""
        raise DataError(
            f"{inp.where()}{row}: the {self.spec.name} {what} is not a number although every input is one: "
            "float64 overflows on values this extreme (near ±1e308, or a tiny --temperature / --eps) "
            f"in {int(bad.sum())} row(s) of this block. Expected inputs of moderate magnitude; rescale them."
        )

    def _input_error(self, err: InputError, role_rows: dict[str, np.ndarray]) -> str:
        inp = next((i for i in self.inputs if i.role.name == err.role), self.inputs[0])
        rows = role_rows.get(inp.role.name)
        where = inp.where()
        if err.rows and rows is not None:
            abs_rows = [int(rows[r]) for r in err.rows]
            text = f"{where}, row {abs_rows[0]}: {err.message}."
            if len(abs_rows) > 1:
                text += f" Also rows {', '.join(map(str, abs_rows[1:]))}" + (
                    " and possibly more." if len(abs_rows) >= 5 else "."
                )
        else:
            text = f"{where}: {err.message}."
        if err.expected:
            text += f" Expected {err.expected}."
        hint = error_hint(self.spec, self.params, err.role, getattr(err, "declared", None))
        if hint:
            text += f" {hint}."
        return text

    # -- report -------------------------------------------------------------------
    def _report(self, readers: list[Reader]) -> dict:
        meta = self.meta()
        report = report_from_state(self.spec, meta, self.acc, ci_level=self.opts.ci, hist=self.opts.hist)
        report["warnings"] = self.kinds.warnings({i.role.name: i.where() for i in self.inputs})
        if self.opts.strict and report["warnings"]:
            raise DataError("--strict: " + " ".join(report["warnings"]) + " Nothing was written.")
        if self.opts.save_state:
            save_state(self.opts.save_state, self.spec, meta, self.acc, self.opts.ci)
            report["state"] = {"path": self.opts.save_state}
        if self.sink is not None:
            report["per_sample"] = {"path": self.opts.per_sample, "rows": self.sink.rows}
        if self.grad_sink is not None:
            report["grad"] = {"path": self.opts.grad, "rows": self.grad_sink.rows, "wrt": self.pred_role}
        if self.token_sink is not None:
            report["per_token"] = {"path": self.opts.per_token, "rows": self.token_sink.rows}
        if self.opts.normalize_by:
            self._normalized(report)
        return report

    def _normalized(self, report: dict) -> None:
        """--normalize-by: perplexity per token / word / byte and bits per byte, as
        lm-evaluation-harness defines them: totals over the corpus (Σ NLL / Σ units), never
        averages of per-sequence values."""
        by = self.opts.normalize_by
        nll = self.acc.all.num.value  # Σ over the sequences used of their summed token NLL (nats)
        units = math.fsum(self.count_sums) if self.opts.counts else self.acc.all.den.value
        report["normalize"] = {
            "by": by,
            "counts": self.counts_label if self.opts.counts else "tokens scored",
            "nll_sum": nll,
            "units": units,
        }
        derived = report.setdefault("derived", {})
        if by != "tokens":
            # Per word / byte only: the rows may hold whole documents' log-likelihoods (the harness
            # logs one per document), and exp of their mean is no perplexity of anything.
            derived.pop("perplexity", None)
        if not units > 0:
            raise DataError(
                f"--normalize-by {by}: the {by} of the sequences used add up to {units!r} "
                f"({report['normalize']['counts']}), so there is no per-{by[:-1]} value. Expected counts above 0."
            )
        rate = nll / units

        def ppl(x):
            return float("nan") if x != x else (math.exp(x) if x < 709.0 else float("inf"))

        if by == "tokens":
            derived["perplexity"] = ppl(rate)
        elif by == "words":
            derived["word_perplexity"] = ppl(rate)
        else:
            derived["byte_perplexity"] = ppl(rate)
            derived["bits_per_byte"] = rate / math.log(2)

    def meta(self) -> dict:
        """Everything about the run except the accumulated numbers (JSON-safe)."""
        params = dict(self.params)
        if self.spec.batched:
            params["batch_size"] = self.batch_size
        return {
            "loss": self.spec.name,
            "params": {p.name: _jsonable(params.get(p.dest)) for p in self.spec.params},
            "reduction": self.opts.reduction,
            "rows_read": {i.role.name: i.reader.rows_read for i in self.inputs},
            "inputs": [
                {
                    "role": i.role.name,
                    "source": i.source.text,
                    "path": i.source.display,
                    "column": i.column_label,
                    "columns": i.column_names,
                    "format": i.source.fmt,
                    "shape": list(i.shape) if i.shape else None,
                    "dtype": i.dtype,
                    "rows": i.reader.rows_read,
                }
                for i in self.inputs
            ],
            "id_col": self.opts.id_col,
            "nan_policy": self.opts.nan,
            "group_by": getattr(self, "group_label", None) if self.opts.group_by else None,
            "batch_size": self.batch_size if self.spec.batched else None,
            "row_offset": self.opts.row_offset,
            **({"plugin": self.spec.plugin} if self.spec.plugin else {}),
        }


# What --reduction sum adds up: PyTorch's reduction="sum" (element-wise losses on (N, D)
# inputs report the row mean per sample and add all N·D elements here).
SUM_RULE = (
    "PyTorch's reduction='sum' (for (N, D) element-wise losses: all N·D elements, "
    "D × the sum of the per-sample row means)"
)


def report_from_state(
    spec: LossSpec, meta: dict, acc: RunState, ci_level: float | None = None, hist: bool = False
) -> dict:
    """The report of a run (or of merged runs) from its metadata and accumulated state."""
    reduction = meta["reduction"]
    agg = acc.all
    summary = agg.stats.summary()
    value = agg.value(reduction)
    _no_overflowed_headline(spec, agg, value, reduction)
    reliability = _reliability(spec, meta, agg)
    if spec.headline_from:
        value = _value_from_bins(spec, meta, agg, reliability)
    top = []
    for v, r in zip(acc.top.values.tolist(), acc.top.rows.tolist()):
        item = {"row": int(r), "loss": v}
        if r in acc.top_ids:
            item["id"] = acc.top_ids[r]
        top.append(item)
    report = {
        "schema_version": SCHEMA_VERSION,
        "lossctl_version": __version__,
        "loss": spec.name,
        **({"plugin": meta["plugin"]} if meta.get("plugin") else {}),
        "params": meta["params"],
        "reduction": reduction,
        "value": value,
        "value_rule": spec.headline if reduction == "mean" else SUM_RULE,
        "count": agg.used,
        "rows": {
            "read": meta["rows_read"],
            "used": agg.used,
            "ignored": agg.ignored,
            "dropped": acc.dropped_pred + acc.dropped_target,
            "dropped_detail": {"no_target": acc.dropped_pred, "no_prediction": acc.dropped_target},
            "nan_omitted": agg.nan_omitted,
            "nan_propagated": agg.nan_propagated,
        },
        "stats": summary,
        "components": agg.component_means(),
        "derived": _derived(spec, value, reduction, agg.component_means()),
        "top": top,
        "inputs": meta["inputs"],
        "id_col": meta["id_col"],
        "nan_policy": meta["nan_policy"],
        "warnings": [],
    }
    if meta.get("shards"):
        report["shards"] = meta["shards"]
    if spec.batched:
        report["batch_size"] = meta["batch_size"]
    report["headline_differs_from_mean"] = _differs(value, summary["mean"], reduction)
    if acc.bootstrap is not None and ci_level:
        if spec.headline_from:
            hook, params = _load_hook(spec.headline_from), meta.get("params") or {}
            est = acc.bootstrap.bin_estimates(lambda bins, total: hook(bins, total, params))
            est = est[np.isfinite(est)]
            lo, hi = (
                (float("nan"), float("nan"))
                if not len(est) or (math.isnan(value) if isinstance(value, float) else False)
                else tuple(float(q) for q in np.quantile(est, [(1 - ci_level) / 2, (1 + ci_level) / 2]))
            )
        else:
            lo, hi = acc.bootstrap.interval(ci_level, reduction)
        report["ci"] = {
            "level": ci_level,
            "low": lo,
            "high": hi,
            "method": "percentile, streaming Poisson bootstrap over rows",
            "resamples": acc.bootstrap.n,
            "seed": acc.bootstrap.seed,
        }
    if meta.get("group_by"):
        report["group_by"] = meta["group_by"]
        report["groups"] = [
            _group_report(spec, key, g, reduction, meta)
            for key, g in sorted(acc.groups.items(), key=lambda kv: _sort_key(kv[0]))
        ]
    if hist:
        report["hist"] = agg.histogram()
    if reliability is not None:
        report["reliability"] = reliability
    report["signature"] = signature(report)
    return report


def _no_overflowed_headline(spec: LossSpec, agg: Aggregate, value: float, reduction: str, group=None) -> None:
    """A headline that is NaN only because a float64 sum overflowed (inf/inf, inf - inf) is refused:
    the true value may well be finite (huge class weights cancel in Σ w·l / Σ w)."""
    if not math.isnan(value) or agg.nan_propagated:
        return
    if math.isfinite(agg.num.value) and math.isfinite(agg.den.value):
        return
    where = "" if group is None else f" of group {group!r}"
    raise DataError(
        f"the {reduction} of {spec.name}{where} cannot be computed in float64: the sums over rows overflow "
        f"(Σ = {agg.num.value!r} over {agg.den.value!r}), so the result would be NaN. Expected per-sample values "
        "and weights whose sums stay below 1.8e308; scale the weights (the weighted mean does not change) "
        "or the inputs down."
    )


def _derived(spec: LossSpec, value: float, reduction: str, comps: dict | None = None) -> dict:
    derived = {}
    if "perplexity" in spec.derived and reduction == "mean":
        if value != value:
            derived["perplexity"] = float("nan")
        else:
            derived["perplexity"] = math.exp(value) if value < 709.0 else float("inf")
    if "clipfrac" in spec.derived and comps and comps.get("tokens"):
        # Fractions of all counted tokens (ratios of the components' sums): TRL's clipfrac
        # (the clipped term is the one taken) and Stable-Baselines3's clip_fraction (|r - 1| > ε).
        derived["clipfrac_trl"] = comps["clipped"] / comps["tokens"]
        derived["clipfrac_sb3"] = comps["clipped_sb3"] / comps["tokens"]
    return derived


def _group_report(spec: LossSpec, key, g: Aggregate, reduction: str, meta: dict | None = None) -> dict:
    summary = g.stats.summary()
    value = g.value(reduction)
    _no_overflowed_headline(spec, g, value, reduction, _py(key))
    reliability = _reliability(spec, meta or {}, g)
    if spec.headline_from:
        value = _value_from_bins(spec, meta or {}, g, reliability)
    out = {
        "group": _py(key),
        "value": value,
        "count": g.used,
        "rows": {
            "used": g.used,
            "ignored": g.ignored,
            "nan_omitted": g.nan_omitted,
            "nan_propagated": g.nan_propagated,
        },
        "stats": summary,
        "components": g.component_means(),
        "derived": _derived(spec, value, reduction, g.component_means()),
    }
    if reliability is not None:
        out["reliability"] = reliability
    return out


def _load_hook(path: str) -> Callable:
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _headline_from_allowed(spec: LossSpec, ci, reduction: str, params: dict | None = None) -> None:
    """A headline computed from per-bin sums (ece): the streaming bootstrap resamples those sums
    (per resample and bin), so --ci works with uniform bins; quantile bins are formed after the
    pass from a fine grid, per resample they would differ, so --ci is refused there. It is not a
    sum over rows: --reduction sum is refused rather than answered wrongly."""
    if not spec.headline_from:
        return
    if ci and (params or {}).get("binning") == "quantile":
        raise UsageError(
            f"--ci is not available for {spec.name} with --binning quantile: the bins are formed from "
            "the data after the pass, so each resample would need its own; use --binning uniform."
        )
    if reduction == "sum":
        raise UsageError(
            f"--reduction sum is not defined for {spec.name} (its value is not a sum over rows); use mean."
        )


def _reliability(spec: LossSpec, meta: dict, agg: Aggregate) -> dict | None:
    if not (spec.reliability or spec.headline_from):
        return None
    from lossctl.losses.classification import QUANTILE_FINE_BINS, RELIABILITY_BINS

    params = meta.get("params") or {}
    n_bins = int(params.get("bins") or RELIABILITY_BINS)
    binning = params.get("binning") or "uniform"
    return reliability_table(agg, n_bins, binning, fine=QUANTILE_FINE_BINS)


def _value_from_bins(spec: LossSpec, meta: dict, agg: Aggregate, reliability: dict | None) -> float:
    if agg.rel_nan():
        return float("nan")  # --nan propagate: a NaN row makes the value NaN, as for every loss
    bins = reliability["bins"] if reliability else []
    return float(_load_hook(spec.headline_from)(bins, agg.used, meta.get("params") or {}))


# ---------------------------------------------------------------------------
# Saved states (--save-state) and their merge (lossctl merge)
# ---------------------------------------------------------------------------

STATE_VERSION = 2  # 2: row range, input fingerprint and sha256 checksum (format 1 states are refused)


def save_state(path: str, spec: LossSpec, meta: dict, acc: RunState, ci_level: float | None) -> None:
    import hashlib
    import json

    from lossctl.io.sinks import AtomicFile

    first = int(meta.get("row_offset") or 0)
    doc = {
        "lossctl_state": STATE_VERSION,
        "lossctl_version": __version__,
        "loss": spec.name,
        "meta": meta,
        "ci_level": ci_level,
        "state": acc.to_dict(),
        "source": {"rows": [first, first + acc.rows_seen], "fingerprint": input_fingerprint(meta["inputs"])},
    }
    # The canonical body once, its checksum appended as the last key (load_state checks these
    # bytes directly, and the parsed document by state_checksum when they were re-laid out).
    body = _canonical(doc)
    text = body[:-1] + ',"checksum":' + json.dumps("sha256:" + hashlib.sha256(body.encode()).hexdigest()) + "}"
    f = AtomicFile(path, "--save-state")
    try:
        f.write(text.encode())
    except BaseException:
        f.abort()
        raise
    f.commit()


def state_checksum(doc: dict) -> str:
    """``sha256:`` + the SHA-256 of the state's canonical JSON without its ``checksum`` key
    (keys sorted, no spaces, ASCII): any edit to a saved state changes it."""
    import hashlib

    return "sha256:" + hashlib.sha256(_canonical(doc).encode()).hexdigest()


def _canonical(doc: dict) -> str:
    import json

    body = {k: v for k, v in doc.items() if k != "checksum"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _signed_bytes_match(raw: bytes, checksum) -> bool:
    """Whether the file is a canonical body with ``"checksum"`` appended as lossctl writes it,
    and that body hashes to ``checksum`` (the fast check: no re-serialisation)."""
    import hashlib

    if not isinstance(checksum, str):
        return False
    tail = (',"checksum":"' + checksum + '"}').encode()
    if not raw.endswith(tail):
        return False
    return "sha256:" + hashlib.sha256(raw[: -len(tail)] + b"}").hexdigest() == checksum


def input_fingerprint(inputs: list[dict]) -> str | None:
    """The identity of a run's inputs: role, column and each file's real path, size and
    modification time (every file of a directory); URIs by their text. None for stdin
    (a stream has no identity to compare)."""
    import glob
    import hashlib
    import json

    from lossctl.io.remote import is_uri

    parts = []
    for i in inputs:
        where = str(i.get("path"))
        src = str(i.get("source"))
        if src == "-" or src.startswith("-:") or where == "<stdin>":
            return None
        ident: list = []
        if is_uri(where):
            ident = [where]
        else:
            paths = [where] if os.path.exists(where) else sorted(glob.glob(where))
            for p in paths:
                files = [p]
                if os.path.isdir(p):
                    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs)
                for fp in files:
                    try:
                        st = os.stat(fp)
                        ident.append([os.path.realpath(fp), st.st_size, st.st_mtime_ns])
                    except OSError:
                        ident.append([os.path.realpath(fp)])
            ident = ident or [where]
        parts.append([i.get("role"), i.get("column"), ident])
    return "sha256:" + hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _state_rules():
    from lossctl import untrusted as u
    from lossctl.aggregate import STATE_SCHEMA

    rows = u.integer(0, 2**63 - 1)
    inp = u.table_of(
        {
            "role": u.text,
            "source": u.text,
            "path": u.text,
            "column": u.maybe(u.text),
            "format": u.maybe(u.text),
            "shape": u.maybe(u.list_of(u.scalar)),
            "dtype": u.maybe(u.text),
            "rows": rows,
        },
        ("role", "source", "path", "column", "format", "shape", "dtype", "rows"),
        closed=False,
    )
    meta = u.table_of(
        {
            "loss": u.text,
            "params": u.table_of({}, closed=False),
            "reduction": u.one_of("mean", "sum", "none"),
            "rows_read": u.dict_of(rows, u.text),
            "inputs": u.list_of(inp, min_len=1),
            "id_col": u.maybe(u.text),
            "nan_policy": u.one_of("error", "omit", "propagate"),
            "group_by": u.maybe(u.text),
            "batch_size": u.maybe(u.integer(1)),
            "row_offset": rows,
            "plugin": u.text,
        },
        ("loss", "params", "reduction", "rows_read", "inputs", "nan_policy", "row_offset"),
        closed=False,
    )
    schema = {
        "lossctl_state": u.integer(),
        "lossctl_version": u.text,
        "loss": u.text,
        "meta": meta,
        "ci_level": u.maybe(u.number(0, 1, low_open=True, high_open=True)),
        "state": STATE_SCHEMA,
        "source": u.table_of({"rows": u.pair(rows, rows), "fingerprint": u.maybe(u.text)}, ("rows", "fingerprint")),
        "checksum": u.text,
    }
    return schema


def load_state(path: str) -> dict:
    """A state written by --save-state, verified: format and lossctl version, structure, types
    and ranges of every field, its checksum, and what must hold between its numbers."""
    from lossctl import registry
    from lossctl import untrusted as u
    from lossctl.aggregate import check_state

    redo = "recompute it with lossctl compute --save-state"
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        doc = u.parse_json(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; expected a state written by --save-state.") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable lossctl state ({short_reason(exc)}).") from None
    if not isinstance(doc, dict) or "lossctl_state" not in doc:
        raise DataError(f"{path}: not a lossctl state (version {STATE_VERSION}) written by --save-state.")
    version = doc["lossctl_state"]
    if version != STATE_VERSION or isinstance(version, bool):
        raise DataError(
            f"{path}: a lossctl state of format {u.shown(version)}; this lossctl reads format {STATE_VERSION} only "
            f"(format 1 has no row range or checksum to verify); {redo}."
        )
    if doc.get("lossctl_version") != __version__:
        ver = doc.get("lossctl_version")
        ver = ver if isinstance(ver, str) and ver.isprintable() and len(ver) < 40 else u.shown(ver)
        raise DataError(
            f"{path}: written by lossctl {ver}, but this is lossctl {__version__}; "
            f"states merge only within one lossctl version (another version may compute other numbers); {redo}."
        )
    try:
        u.validate(doc, _state_rules(), required=tuple(_state_rules()))
        for key in doc:
            if key not in _state_rules():
                raise u.Bad("no such key", path=key, show_value=False)
    except u.Bad as bad:
        raise DataError(f"{path}, key {bad.path!r}: {bad.describe()}; not a valid lossctl state ({redo}).") from None
    if not _signed_bytes_match(raw, doc["checksum"]) and doc["checksum"] != state_checksum(doc):
        raise DataError(
            f"{path}: changed after lossctl wrote it (its sha256 checksum does not match its contents); "
            f"states are not edited by hand: {redo}."
        )
    try:
        try:
            check_state(doc["state"])
        except u.Bad as bad:
            raise bad.at("state") from None
        meta = doc["meta"]
        if meta["loss"] != doc["loss"]:
            raise u.Bad(f"the loss of its metadata ({meta['loss']!r})", doc["loss"], "loss")
        try:
            spec = registry.get(doc["loss"])
        except LossctlError:
            raise u.Bad("the name of a loss of this lossctl", doc["loss"], "loss") from None
        if spec.name != doc["loss"] or set(meta["params"]) != {p.name for p in spec.params}:
            raise u.Bad(f"the parameters of {spec.name}", sorted(meta["params"]), "meta.params")
        a, b = doc["source"]["rows"]
        if a != meta["row_offset"] or b - a != doc["state"]["rows_seen"]:
            raise u.Bad(
                f"[row_offset, row_offset + rows_seen) = [{meta['row_offset']}, "
                f"{meta['row_offset'] + doc['state']['rows_seen']})",
                [a, b],
                "source.rows",
            )
    except u.Bad as bad:
        raise DataError(f"{path}, key {bad.path!r}: {bad.describe()}; not a valid lossctl state ({redo}).") from None
    return doc


def merge_states(paths: list[str]) -> tuple[LossSpec, dict, RunState, float | None]:
    """Combine saved states into the metadata and state of one run over all their rows.

    Refused: the same state twice (equal checksums), two states of the same inputs
    (equal fingerprints), and states whose global row ranges overlap (their rows would count
    twice, or share bootstrap weights).
    """
    from lossctl import registry

    if not paths:
        raise UsageError("merge needs at least one state file.")
    docs = [load_state(p) for p in paths]
    first = docs[0]
    spec = registry.get(first["loss"])
    keys = ("params", "reduction", "nan_policy", "id_col", "group_by", "batch_size", "plugin")
    for path, doc in zip(paths[1:], docs[1:]):
        if doc["loss"] != first["loss"]:
            raise DataError(
                f"{path} is a {doc['loss']} state but {paths[0]} is {first['loss']}; states of different losses do not merge."
            )
        for k in keys:
            if doc["meta"].get(k) != first["meta"].get(k):
                raise DataError(
                    f"{path} was computed with {k} {doc['meta'].get(k)!r} but {paths[0]} with {first['meta'].get(k)!r}; "
                    "states merge only when loss and parameters are identical."
                )
        if (doc["state"]["bootstrap"] is None) != (first["state"]["bootstrap"] is None) or (
            doc["state"]["bootstrap"]
            and (doc["state"]["bootstrap"]["n"], doc["state"]["bootstrap"]["seed"])
            != (first["state"]["bootstrap"]["n"], first["state"]["bootstrap"]["seed"])
        ):
            raise DataError(f"{path} has different bootstrap settings (--ci-n, --seed) from {paths[0]}.")
    _refuse_overlaps(paths, docs)
    try:
        state = RunState.from_dict(first["state"])
        for doc in docs[1:]:
            state.merge(RunState.from_dict(doc["state"]))
    except ValueError as exc:  # e.g. sketches of different accuracy
        raise DataError(f"{', '.join(paths)}: these states do not merge ({short_reason(exc)}).") from None
    meta = dict(first["meta"])
    rows_read: dict[str, int] = {}
    inputs = []
    for doc in docs:
        for role, n in doc["meta"]["rows_read"].items():
            rows_read[role] = rows_read.get(role, 0) + int(n)
        inputs.extend(doc["meta"]["inputs"])
    meta.update(rows_read=rows_read, inputs=inputs, shards=len(docs))
    return spec, meta, state, first.get("ci_level")


def _refuse_overlaps(paths: list[str], docs: list[dict]) -> None:
    """Each row once: no state twice, no input twice, no global row twice."""
    seen_sum: dict[str, str] = {}
    seen_fp: dict[str, str] = {}
    for path, doc in zip(paths, docs):
        if doc["checksum"] in seen_sum:
            raise DataError(
                f"{path} and {seen_sum[doc['checksum']]} are the same state (equal checksums); "
                "merging it twice would count its rows twice."
            )
        seen_sum[doc["checksum"]] = path
        fp = doc["source"]["fingerprint"]
        if fp is not None and fp in seen_fp:
            raise DataError(
                f"{path} and {seen_fp[fp]} were computed from the same input files (same paths, sizes and "
                "modification times); merging them would count those rows twice."
            )
        if fp is not None:
            seen_fp[fp] = path
    spans = sorted(
        (doc["source"]["rows"][0], doc["source"]["rows"][1], path)
        for path, doc in zip(paths, docs)
        if doc["source"]["rows"][1] > doc["source"]["rows"][0]
    )
    for (a0, a1, pa), (b0, b1, pb) in zip(spans, spans[1:]):
        if b0 < a1:
            raise DataError(
                f"{pa} covers rows {a0} to {a1 - 1} and {pb} rows {b0} to {b1 - 1}: the row ranges overlap, so rows "
                "would count twice or share bootstrap weights. Give each shard --row-offset, its first global row."
            )


def _differs(value: float, plain_mean: float, reduction: str) -> bool:
    return (
        reduction == "mean"
        and math.isfinite(value)
        and math.isfinite(plain_mean)
        and abs(value - plain_mean) > 1e-12 * max(1.0, abs(value))
    )


def _sort_key(key):
    return (0, key, "") if isinstance(key, (int, float)) else (1, 0, str(key))


def _concat_results(parts: list[Result]) -> Result:
    def cat(get, default):
        vals = [get(p) for p in parts]
        if all(v is None for v in vals):
            return None
        return np.concatenate([v if v is not None else default(p) for v, p in zip(vals, parts)])

    out = Result(loss=np.concatenate([p.loss for p in parts]))
    out.num = cat(lambda p: p.num, lambda p: p.loss)  # a missing num is the loss itself
    out.den = cat(lambda p: p.den, lambda p: np.ones(len(p.loss)))
    ign = [p.ignored if p.ignored is not None else np.zeros(len(p.loss), bool) for p in parts]
    out.ignored = np.concatenate(ign) if any(p.ignored is not None for p in parts) else None
    out.columns = {k: np.concatenate([p.columns[k] for p in parts]) for k in parts[0].columns}
    out.components = {k: np.concatenate([p.components[k] for p in parts]) for k in parts[0].components}
    return out


def _row_norms(grad) -> np.ndarray:
    if grad is None:
        return np.empty(0)
    with np.errstate(over="ignore", invalid="ignore"):
        if getattr(grad, "is_ragged", False):
            sq = np.square(grad.values)
            norms = np.sqrt(grad.sum_rows(sq.reshape(len(sq), -1).sum(axis=1)))
            off = grad.offsets
            for i in np.flatnonzero(~np.isfinite(norms)).tolist():
                norms[i] = _scaled_norm(grad.values[off[i] : off[i + 1]])
            return norms
        g = np.asarray(grad, dtype=np.float64).reshape(len(grad), -1)
        norms = np.sqrt(np.square(g).sum(axis=1))
        big = ~np.isfinite(norms)
        if big.any():  # a square overflowed: ‖g‖ = s·‖g/s‖ with s the row's largest |g|
            norms[big] = [_scaled_norm(r) for r in g[big]]
    return norms


def _scaled_norm(row) -> float:
    """‖row‖₂ without overflow in the squares (inf only when the norm itself exceeds 1.8e308)."""
    r = np.asarray(row, dtype=np.float64)
    s = float(np.max(np.abs(r))) if r.size else 0.0
    if s == 0.0 or not math.isfinite(s):
        return s
    with np.errstate(over="ignore"):
        return float(s * np.sqrt(np.sum(np.square(r / s))))


# ---------------------------------------------------------------------------
# Alignment of chunks
# ---------------------------------------------------------------------------


class _Prefetch:
    """Iterate ``it`` on a background thread, ``depth`` items ahead, so reading overlaps computing.

    pyarrow and NumPy release the GIL while they read and decode, so one reader thread
    keeps the next chunk ready while the main thread computes. Exceptions (a DataError on a
    corrupt row group, say) are re-raised in the main thread, in order; closing the
    iterator stops the thread.
    """

    _DONE = object()

    def __init__(self, it, depth: int = 2):
        import queue
        import threading

        self._q: "queue.Queue" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._it = it
        self._thread = threading.Thread(target=self._run, name="lossctl-reader", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._it:
                if not self._put(("item", item)):
                    return
            self._put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(("error", exc))

    def __iter__(self):
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        kind, value = self._q.get()
        if kind == "item":
            return value
        self._finished = True
        self._stop.set()
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        self._stop.set()


NAN_PREFIX = "__nan__:"


def _with_nan_masks(batch: dict) -> dict:
    """Add each value column's NaN-row mask (computed where the batch is read, off the main thread)."""
    for key, arr in list(batch.items()):
        if key not in (ID_KEY, GROUP_KEY):
            m = _nan_rows(arr)
            batch[NAN_PREFIX + key] = np.zeros(len(arr), dtype=bool) if m is None else m
    return batch


def _batches(run: "_Run", reader: Reader, rows: int):
    """A reader's batches, read ahead on a thread (set LOSSCTL_THREADS=1 to read inline)."""
    raw = (_with_nan_masks(b) for b in reader.batches(rows))
    if os.environ.get("LOSSCTL_THREADS") == "1":
        return raw
    it = _Prefetch(raw)
    run.prefetchers.append(it)
    return it


class _Cursor:
    def __init__(self, run: "_Run", reader: Reader, rows: int):
        self.reader = reader
        self.it = _batches(run, reader, rows)
        self.buf: dict[str, np.ndarray] | None = None
        self.n = 0
        self.pos = 0
        self.done = False

    def take(self, k: int) -> dict[str, list[np.ndarray]]:
        pieces: dict[str, list[np.ndarray]] = {}
        need = k
        while need > 0 and not self.done:
            if self.buf is None or self.pos >= self.n:
                try:
                    self.buf = next(self.it)
                except StopIteration:
                    self.done = True
                    break
                self.n = len(next(iter(self.buf.values())))
                self.pos = 0
                continue
            step = min(need, self.n - self.pos)
            for key, arr in self.buf.items():
                pieces.setdefault(key, []).append(arr[self.pos : self.pos + step])
            self.pos += step
            need -= step
        return pieces

    def drain(self) -> int:
        rest = self.n - self.pos if self.buf is not None else 0
        for batch in self.it:
            rest += len(next(iter(batch.values())))
        self.done = True
        return rest


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    if any(getattr(p, "is_ragged", False) for p in parts):  # (blocks of equal lengths may be arrays)
        return Ragged.concatenate(parts)
    return np.concatenate(parts)


def _positional(run: _Run, readers: list[Reader], rows: int):
    cursors = [_Cursor(run, r, rows) for r in readers]
    start = readers[0].source.row_start  # 0, or a dask task's first global row
    while True:
        got = [c.take(rows) for c in cursors]
        sizes = [len(_cat(next(iter(g.values())))) if g else 0 for g in got]
        if all(s == 0 for s in sizes):
            return
        if len(set(sizes)) > 1:
            counts = {}
            for c, s in zip(cursors, sizes):
                counts[c.reader.display] = start + s + c.drain()
            raise DataError(run._count_mismatch(counts))
        n = sizes[0]
        arrays: dict[str, np.ndarray] = {}
        ids = None
        for g in got:
            for key, parts in g.items():
                if key == ID_KEY:
                    ids = _cat(parts)
                else:
                    arrays[key] = _cat(parts)
        prim = np.arange(start, start + n, dtype=np.int64)
        role_rows = {i.role.name: prim for i in run.inputs}
        yield arrays, role_rows, prim, None, ids
        start += n


def _norm_ids(ids: np.ndarray, as_text: bool) -> np.ndarray:
    if as_text:
        return (
            np.asarray([str(v) for v in ids.tolist()], dtype=str)
            if ids.dtype == object or ids.dtype.kind != "U"
            else ids
        )
    return ids.astype(np.int64)


def _joined(run: _Run, readers: list[Reader], rows: int):
    """Stream the prediction file; join every other file to it by --id-col."""
    primary = run.inputs[0].reader
    others = [r for r in readers if r is not primary]
    tables = []
    for r in others:
        cols: dict[str, list[np.ndarray]] = {}
        for batch in _batches(run, r, rows):
            for k, v in batch.items():
                cols.setdefault(k, []).append(v)
        if not cols:
            raise DataError(f"{r.display} has no data rows. Expected one row per sample.")
        tables.append((r, {k: _cat(v) for k, v in cols.items()}))
    prim_cursor = _Cursor(run, primary, rows)
    first = prim_cursor.take(rows)
    if not first:
        raise DataError(f"{primary.display} has no data rows. Expected one row per sample.")
    as_text = any(t[ID_KEY].dtype.kind not in "iu" for _, t in tables) or _cat(first[ID_KEY]).dtype.kind not in "iu"
    indexes = []
    for r, t in tables:
        keys = _norm_ids(t[ID_KEY], as_text)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        dup = np.flatnonzero(sk[1:] == sk[:-1])
        if len(dup):
            d = sk[dup[0]]
            rows_d = np.sort(order[(sk == d)])[:3]
            raise DataError(
                f"{r.display}, id column {run.opts.id_col!r}: id {_py(d)!r} appears more than once "
                f"(rows {', '.join(map(str, rows_d.tolist()))}). Expected each id once."
            )
        indexes.append((r, t, sk, order, np.zeros(len(keys), dtype=bool)))
    start = 0
    pending = first
    while pending:
        ids_raw = _cat(pending[ID_KEY])
        ids = _norm_ids(ids_raw, as_text)
        n = len(ids)
        prim = np.arange(start, start + n, dtype=np.int64)
        found = np.ones(n, dtype=bool)
        pos_by_reader = {}
        for r, t, sk, order, used in indexes:
            j = np.searchsorted(sk, ids)
            j = np.minimum(j, len(sk) - 1)
            hit = sk[j] == ids
            pos = np.where(hit, order[j], -1)
            found &= hit
            pos_by_reader[id(r)] = pos
        # Duplicate ids on the prediction side: a target row matched twice.
        for r, t, sk, order, used in indexes:
            pos = pos_by_reader[id(r)][found]
            if len(pos):
                uniq, counts = np.unique(pos, return_counts=True)
                again = used[pos]
                if again.any() or (counts > 1).any():
                    bad = pos[again][0] if again.any() else uniq[counts > 1][0]
                    raise DataError(
                        f"{primary.display}, id column {run.opts.id_col!r}: id {_py(t[ID_KEY][bad])!r} "
                        "appears more than once. Expected each id once."
                    )
                used[pos] = True
        missing = np.flatnonzero(~found)
        if len(missing) and run.opts.on_missing == "error":
            shown = ", ".join(f"{_py(ids_raw[i])!r} (row {start + int(i)})" for i in missing[:5])
            other = " / ".join(r.display for r, *_ in indexes)
            raise DataError(
                f"{primary.display}: {len(missing)} id(s) in this chunk have no row in {other}: {shown}. "
                "Expected every id on both sides; --on-missing drop leaves them out and counts them."
            )
        kept = np.flatnonzero(found)
        arrays: dict[str, np.ndarray] = {}
        role_rows: dict[str, np.ndarray] = {}
        for key, parts in pending.items():
            if key != ID_KEY:
                arrays[key] = _cat(parts)[kept]
        for r, t, *_ in indexes:
            pos = pos_by_reader[id(r)][kept]
            for key, values in t.items():
                if key != ID_KEY:
                    arrays[key] = values[pos]
            for inp in run.inputs:
                if inp.reader is r:
                    role_rows[inp.role.name] = pos
        for inp in run.inputs:
            if inp.reader is primary:
                role_rows[inp.role.name] = prim[kept]
        yield arrays, role_rows, prim, kept, ids_raw
        start += n
        pending = prim_cursor.take(rows)
    for r, t, sk, order, used in indexes:
        unmatched = np.flatnonzero(~used)
        if not len(unmatched):
            continue
        if run.opts.on_missing == "error":
            shown = ", ".join(f"{_py(t[ID_KEY][i])!r} (row {int(i)})" for i in unmatched[:5])
            raise DataError(
                f"{r.display}: {len(unmatched)} id(s) have no row in {primary.display}: {shown}. "
                "Expected every id on both sides; --on-missing drop leaves them out and counts them."
            )
        run.acc.dropped_target += len(unmatched)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _factorize(keys: np.ndarray) -> tuple[list, np.ndarray]:
    """(sorted distinct keys, each row's index among them); text keys hashed by pyarrow, not sorted
    as Python objects."""
    if not len(keys):
        return [], np.empty(0, dtype=np.intp)
    if keys.dtype == object:
        import pyarrow as pa

        try:
            enc = pa.array(keys, type=pa.string()).dictionary_encode()
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            enc = None
        if enc is not None:
            words = enc.dictionary.to_pylist()
            order = sorted(range(len(words)), key=words.__getitem__)
            rank = np.empty(len(words), dtype=np.intp)
            rank[order] = np.arange(len(words))
            return [words[i] for i in order], rank[enc.indices.to_numpy(zero_copy_only=False)]
    uniq, inv = np.unique(keys, return_inverse=True)
    return uniq.tolist(), inv.reshape(-1)


TOKEN_MASK_ROLE = "mask"


def _counted_tokens(arrays) -> Ragged | None:
    """The tokens a --mask counts (a Ragged of bools), when a loss has one: NaN padding at the
    other positions is no missing value (it is neither validated nor used)."""
    m = arrays.get(TOKEN_MASK_ROLE)
    if not isinstance(m, Ragged) or m.values.dtype.kind not in "biuf":
        return None
    return m.with_values(m.values != 0)


def _nan_rows(a, counted: Ragged | None = None) -> np.ndarray | None:
    if getattr(a, "is_ragged", False):
        if counted is not None and np.array_equal(a.offsets, counted.offsets) and a.values.dtype.kind == "f":
            return a.with_values(np.isnan(a.values) & counted.values).sum_rows() > 0
        return a.nan_rows()
    if a.dtype.kind != "f" or not len(a):
        return None
    flat = a.reshape(len(a), -1)
    with np.errstate(over="ignore", invalid="ignore"):
        # One pass over the chunk: its sum is NaN if any value is (or if +inf meets -inf);
        # only then look at rows.
        if not np.isnan(np.add.reduce(flat, axis=None)):
            return None
        s = np.einsum("ij->i", flat)
    cand = np.isnan(s)
    if not cand.any():
        return None
    out = np.zeros(len(a), dtype=bool)
    idx = np.flatnonzero(cand)
    out[idx] = np.isnan(flat[idx]).any(axis=1)
    return out


def _scatter(values: np.ndarray, kept_idx: np.ndarray, use_idx: np.ndarray, n_all: int) -> np.ndarray:
    """Per-row values back in input order; rows without a value are NaN (floats) or masked (ints)."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        out = np.full(n_all, np.nan)
        out[kept_idx[use_idx]] = values
        return out
    data = np.zeros(n_all, dtype=np.int64)
    mask = np.ones(n_all, dtype=bool)
    data[kept_idx[use_idx]] = values
    mask[kept_idx[use_idx]] = False
    return np.ma.MaskedArray(data, mask=mask) if mask.any() else data


def _shape(shape) -> str:
    parts = [str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def _jsonable(v):
    if isinstance(v, (list, tuple)):
        return [x if isinstance(x, str) else float(x) for x in v]
    return v


def _fmt_param(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        text = ",".join(x if isinstance(x, str) else f"{x:g}" for x in v)
        if len(v) > 8:
            text = f"{len(v)}:" + hashlib.sha256(text.encode()).hexdigest()[:8]
        return text
    if isinstance(v, float):
        return "e" if v == math.e else f"{v:g}"
    return str(v)


COUNTS_KEY = "__counts__"
NORMALIZE_UNITS = ("tokens", "bytes", "words")


def _token_function(spec: LossSpec):
    """A token-level loss's per-token function: its kernel's name + ``_tokens`` (by convention)."""
    module, _, name = spec.kernel.partition(":")
    import importlib

    fn = getattr(importlib.import_module(module), name + "_tokens", None)
    if fn is None:
        raise UsageError(
            f"--per-token writes one row per token of a token-level loss; {spec.name} has no tokens. "
            "Use --per-sample PATH for one row per input row."
        )
    return fn


def _check_normalize(spec: LossSpec, opts: Options) -> None:
    by = opts.normalize_by
    if by is None and opts.counts is None:
        return
    if "perplexity" not in spec.derived:
        raise UsageError(
            f"--normalize-by and --counts give perplexities of a language model's log-likelihood; "
            f"{spec.name} is not one (use token-cross-entropy)."
        )
    if by is None:
        raise UsageError(
            "--counts gives a count per sequence: say what it counts with --normalize-by bytes, words or tokens."
        )
    if by not in NORMALIZE_UNITS:
        raise UsageError(f"--normalize-by must be one of {', '.join(NORMALIZE_UNITS)}; got {by!r}.")
    if by in ("bytes", "words") and opts.counts is None:
        raise UsageError(
            f"--normalize-by {by} needs --counts COL or PATH:COL: the number of {by} of each sequence "
            "(lossctl sees only the log-probabilities, not the text)."
        )
    if opts.reduction != "mean":
        raise UsageError("--normalize-by applies to the mean (--reduction mean): it divides the total NLL by a total count.")


def signature(report: dict) -> str:
    """A sacreBLEU-style one-line reproducibility signature of a result."""
    parts = [report["loss"]]
    if report.get("plugin"):  # a plugin's loss: which plugin, which version ("DIST VERSION")
        parts.append("plugin:" + report["plugin"].replace(" ", "@"))
    for name, value in report["params"].items():
        parts.append(f"{name}:{_fmt_param(value)}")
    shapes = ",".join(
        f"{i['role']}{_shape(i['shape']).replace(' ', '')}{i['dtype']}" for i in report["inputs"] if i["shape"]
    )
    parts.append(f"inputs:{shapes}")
    parts.append(f"red:{report['reduction']}")
    rows = report["rows"]
    read = "/".join(str(v) for v in rows["read"].values())
    parts.append(f"rows:{read}->{rows['used']}")
    if rows["ignored"] or rows["dropped"] or rows["nan_omitted"]:
        parts.append(f"ign:{rows['ignored']},drop:{rows['dropped']},nan:{rows['nan_omitted']}")
    if report.get("batch_size"):
        parts.append(f"batch:{report['batch_size']}")
    if report.get("ci"):
        ci = report["ci"]
        parts.append(f"ci:{ci['level']:g},n:{ci['resamples']},seed:{ci['seed']},poisson-bootstrap")
    if report.get("group_by"):
        parts.append(f"group:{report['group_by']}")
    if report.get("id_col"):
        parts.append(f"join:{report['id_col']}")
    parts.append(f"nan:{report['nan_policy']}")
    parts.append(f"lossctl:{report['lossctl_version']}")
    return "|".join(parts)
