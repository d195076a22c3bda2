"""The row outputs of a run: per-sample rows (status and loss of every row read, in input
order), gradients and per-token rows. Each is staged and committed only when the whole run
succeeded (``commit``); a failed run removes them (``abort``)."""

from __future__ import annotations

import numpy as np

from lossctl.errors import opt
from lossctl.io.sinks import GradSink, RowSink, sink_format
from lossctl.stages.align import Chunk
from lossctl.stages.compute import Computed, row_norms

OK, IGNORED, NAN, DROPPED = 0, 1, 2, 3
STATUS = np.array(["ok", "ignored", "nan", "dropped"], dtype=object)


def scatter(values: np.ndarray, kept_idx: np.ndarray, use_idx: np.ndarray, n_all: int) -> np.ndarray:
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


class Outputs:
    """The sinks of one run (none opened when no output is asked for)."""

    def __init__(self, opts):
        self.opts = opts
        self.sink: RowSink | None = None
        self.echo: RowSink | None = None
        self.grad_sink: GradSink | None = None
        self.token_sink: RowSink | None = None

    def open(self) -> None:
        o = self.opts
        if o.per_sample is not None:
            fmt = sink_format(o.per_sample, opt("per_sample"), o.per_sample_format)
            self.sink = RowSink(o.per_sample, fmt, opt("per_sample"), csv_safe=o.csv_safe)
            if o.per_sample_echo and o.per_sample != "-":
                self.echo = RowSink("-", o.per_sample_format, opt("per_sample"), csv_safe=o.csv_safe)
        if o.grad is not None:
            self.grad_sink = GradSink(o.grad, csv_safe=o.csv_safe)
        if o.per_token is not None:
            fmt = sink_format(o.per_token, opt("per_token"), o.per_sample_format)
            self.token_sink = RowSink(o.per_token, fmt, opt("per_token"), csv_safe=o.csv_safe)

    def _all(self):
        return [s for s in (self.sink, self.grad_sink, self.echo, self.token_sink) if s is not None]

    def commit(self) -> None:
        for sink in self._all():
            sink.commit()
        self.sink = self.grad_sink = self.echo = self.token_sink = None

    def abort(self) -> None:
        for sink in self._all():
            sink.abort()

    def tokens(self, chunk: Chunk, comp: Computed, t: dict) -> None:
        """token rows: one row per scored token of the sequences used in this chunk."""
        idx = chunk.kept_idx[np.flatnonzero(comp.use)]
        seq_rows = chunk.prim_rows[idx]
        local = np.asarray(t["row"], dtype=np.int64)
        cols: dict[str, np.ndarray] = {"row": seq_rows.astype(np.int64)[local] + self.opts.row_offset}
        if chunk.ids is not None:
            cols["id"] = np.asarray(chunk.ids)[idx][local]
        cols["position"] = np.asarray(t["position"], dtype=np.int64)
        cols["token"] = np.asarray(t["token"], dtype=np.int64)
        cols["loss"] = np.asarray(t["loss"], dtype=np.float64) + 0.0
        self.token_sink.write(cols)

    def rows(self, chunk: Chunk, comp: Computed, grad) -> None:
        """The gradient rows and the per-sample rows of a chunk."""
        use_idx = np.flatnonzero(comp.use)
        if self.grad_sink is not None:
            self.grad_sink.write(grad, chunk.kept_idx[use_idx], chunk.prim_rows + self.opts.row_offset, chunk.ids)
        if self.sink is None:
            return
        cols = self._sample_cols(chunk, comp, use_idx)
        for name, values in comp.result.columns.items():
            cols[name] = scatter(values, chunk.kept_idx, use_idx, chunk.n_all)
        if self.opts.grad_norm:
            cols["grad_norm"] = scatter(row_norms(grad), chunk.kept_idx, use_idx, chunk.n_all)
        self.sink.write(cols)
        if self.echo is not None:
            self.echo.write(cols)

    def _sample_cols(self, chunk: Chunk, comp: Computed, use_idx: np.ndarray) -> dict[str, np.ndarray]:
        """Per-row status and loss in input order (rows dropped by the id join, NaN rows and
        ignored rows included, with their status)."""
        n_all, kept_idx, ign_u = chunk.n_all, chunk.kept_idx, comp.ignored
        code = np.full(n_all, OK, dtype=np.int8)
        if chunk.kept is not None:
            code[:] = DROPPED
        loss_k = np.full(len(kept_idx), np.nan)
        loss_k[comp.use] = comp.result.loss
        code_k = np.where(comp.nan_rows, NAN, OK).astype(np.int8)
        code_k[comp.use] = np.where(ign_u, IGNORED, OK).astype(np.int8)
        loss_k[use_idx[ign_u]] = np.nan
        code[kept_idx] = code_k
        loss_all = np.full(n_all, np.nan)
        loss_all[kept_idx] = loss_k + 0.0  # + 0.0 turns -0.0 into 0.0
        cols: dict[str, np.ndarray] = {"row": chunk.prim_rows.astype(np.int64) + self.opts.row_offset}
        if chunk.ids is not None:
            cols["id"] = chunk.ids
        cols["loss"] = loss_all
        cols["status"] = STATUS[code]
        return cols
