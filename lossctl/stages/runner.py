"""One local run of one loss over files: the four stages wired together.

``Run(spec, texts, params, opts).execute()`` opens and aligns the sources
(``stages.align``), computes each chunk with the kernel (``stages.compute``), accumulates it
into mergeable state (``stages.accumulate``) and writes its row outputs (``stages.outputs``),
then builds the report (``stages.model``) and commits the outputs. Memory: chunks are
processed one at a time; what stays is the running statistics (bounded, see
``lossctl.stats``) and, with an id join, the non-prediction inputs (read whole to join on).
The Dask engine (``lossctl.cluster``) runs the same object on each task's rows and reads its
public ``inputs``, ``acc``, ``meta()`` and ``open()``.
"""

from __future__ import annotations

import math
from typing import Any

from lossctl.errors import DataError, opt
from lossctl.io.sources import Reader, Source
from lossctl.registry import LossSpec
from lossctl.stages.accumulate import Accumulator
from lossctl.stages.align import Chunk, Sources, inputs_of
from lossctl.stages.compute import Kernel
from lossctl.stages.model import check_normalize, headline_from_allowed, normalized, report_from_state, run_meta
from lossctl.stages.outputs import Outputs
from lossctl.stages.state import save_state


class Run:
    def __init__(self, spec: LossSpec, texts, params, opts, sources: list[Source | None] | None = None):
        self.spec = spec
        self.params = dict(params)
        self.opts = opts
        headline_from_allowed(spec, opts.ci, opts.reduction, self.params)
        self.kernel = Kernel(spec, self.params, opts, [])
        check_normalize(spec, opts)
        self.inputs = inputs_of(spec, texts, opts, sources)
        self.kernel.inputs = self.inputs
        self.sources = Sources(spec, self.inputs, opts, self.kernel.keylike_roles)
        self.accumulator = Accumulator(spec, self.params, opts)
        self.outputs = Outputs(opts)

    @property
    def acc(self):
        """The accumulated state (``lossctl.aggregate.RunState``)."""
        return self.accumulator.acc

    @property
    def collected(self) -> list[dict[str, Any]]:
        return self.accumulator.collected

    def open(self) -> list[Reader]:
        """Open the sources (every column requested and resolved); the caller closes the readers."""
        readers = self.sources.open()
        self.accumulator.group_label = self.sources.group_label
        self.accumulator.counts_label = self.sources.counts_label
        return readers

    def execute(self) -> dict:
        readers: list[Reader] = []
        try:
            readers = self.open()
            totals = {id(r): r.total_rows() for r in readers}
            for r in readers:
                if totals[id(r)] == 0:
                    raise DataError(f"{r.display} has no data rows. Expected one row per sample.")
            primary = self.inputs[0].reader
            total = totals[id(primary)]
            rows = self.sources.chunk_rows(readers, total, self.kernel.batch_size)
            self.outputs.open()
            for chunk in self.sources.chunks(readers, totals, rows):
                self.process(chunk)
                if self.opts.progress:
                    self.opts.progress(self.acc.rows_seen, total)
            self.acc.dropped_target += self.sources.dropped_target
            if self.acc.rows_seen == 0:
                raise DataError(f"{primary.display} has no data rows. Expected one row per sample.")
            report = self.report()
            self.outputs.commit()
            return report
        finally:
            self.sources.close()
            self.outputs.abort()
            for r in readers:
                r.close()

    def process(self, chunk: Chunk) -> None:
        """One chunk through the stages: compute, accumulate, write."""
        comp = self.kernel.compute(chunk, self.acc.rows_seen)
        self.acc.rows_seen += chunk.n_all
        used = self.accumulator.used(chunk, comp)
        self.accumulator.add_counts(chunk, comp, used)
        if self.outputs.token_sink is not None:
            self.outputs.tokens(chunk, comp, self.kernel.tokens(comp))
        self.accumulator.add(chunk, comp, used)
        grad = self.kernel.grad(comp)
        self.outputs.rows(chunk, comp, grad)

    def report(self) -> dict:
        meta = self.meta()
        opts, out = self.opts, self.outputs
        report = report_from_state(self.spec, meta, self.acc, ci_level=opts.ci, hist=opts.hist)
        report["warnings"] = self.kernel.kinds.warnings({i.role.name: i.where() for i in self.inputs})
        if opts.strict and report["warnings"]:
            raise DataError(f"{opt('strict')}: " + " ".join(report["warnings"]) + " Nothing was written.")
        if opts.save_state:
            save_state(opts.save_state, self.spec, meta, self.acc, opts.ci)
            report["state"] = {"path": opts.save_state}
        if out.sink is not None:
            report["per_sample"] = {"path": opts.per_sample, "rows": out.sink.rows}
        if out.grad_sink is not None:
            report["grad"] = {"path": opts.grad, "rows": out.grad_sink.rows, "wrt": self.kernel.pred_role}
        if out.token_sink is not None:
            report["per_token"] = {"path": opts.per_token, "rows": out.token_sink.rows}
        if opts.normalize_by:
            acc = self.accumulator
            units = math.fsum(acc.count_sums) if opts.counts else self.acc.all.den.value
            label = self.sources.counts_label if opts.counts else "tokens scored"
            normalized(report, opts.normalize_by, self.acc.all.num.value, units, label)
        return report

    def meta(self) -> dict:
        """Everything about the run except the accumulated numbers (JSON-safe)."""
        return run_meta(
            self.spec, self.params, self.opts, self.inputs, self.kernel.batch_size, self.sources.group_label
        )

