"""Stage 3 of a run: accumulate each computed chunk into mergeable state.

``Accumulator`` adds a chunk's per-row values to the ``RunState`` (overall aggregate, bootstrap,
top rows and their ids, per-group aggregates), sums the ``counts`` column over the rows used,
and keeps every used row when ``collect`` is set (for ``compare``). The state is what
``save_state`` writes and ``merge_states`` combines (``lossctl.stages.state``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossctl.aggregate import RunState, add_segments
from lossctl.errors import DataError, opt
from lossctl.registry import LossSpec
from lossctl.stages.align import Chunk
from lossctl.stages.chunks import py
from lossctl.stages.compute import Computed


@dataclass
class Used:
    """The values of a chunk's used rows (not ignored; NaN rows appended under propagate)."""

    vals: np.ndarray
    num: np.ndarray
    den: np.ndarray | None
    comps: dict[str, np.ndarray]
    ok_prim: np.ndarray  # global row numbers of the used, non-ignored rows
    ok_rows_k: np.ndarray | None  # their indices among the kept rows (None: all)
    plain: bool  # every row kept and used, none ignored
    loss_used: np.ndarray
    n_used: int
    n_nan: int
    propagate: bool
    nan_prim: np.ndarray | None


class Accumulator:
    """The accumulate stage of one run (see the module docstring)."""

    def __init__(self, spec: LossSpec, params: dict, opts):
        self.spec = spec
        self.params = params
        self.opts = opts
        self.acc = RunState(top=opts.top, bootstrap=(opts.ci_n, opts.seed) if opts.ci else None)
        self.count_sums: list[float] = []  # per chunk: Σ counts over the rows used
        self.collected: list[dict[str, Any]] = []
        self.group_label: str | None = None
        self.counts_label: str | None = None

    def used(self, chunk: Chunk, comp: Computed) -> Used:
        """Select the used rows' values (the common case, every row used, takes no selections)."""
        result, kept_idx, off = comp.result, chunk.kept_idx, self.opts.row_offset
        ign_u = comp.ignored
        plain = comp.all_use and not ign_u.any()
        raw_num = result.num if result.num is not None else result.loss
        if plain:
            ok_u = None
            vals, num, den = result.loss, raw_num, result.den
            comps = {k: np.asarray(v, dtype=np.float64) for k, v in result.components.items()}
            ok_prim = (chunk.prim_rows if chunk.kept is None else chunk.prim_rows[kept_idx]) + off
            ok_rows_k = None
        else:
            ok_u = ~ign_u
            vals, num = result.loss[ok_u], raw_num[ok_u]
            den = None if result.den is None else result.den[ok_u]
            comps = {k: np.asarray(v, dtype=np.float64)[ok_u] for k, v in result.components.items()}
            ok_rows_k = np.flatnonzero(comp.use)[ok_u]
            ok_prim = chunk.prim_rows[kept_idx[ok_rows_k]] + off
        n_nan = int(comp.nan_rows.sum())
        propagate = self.opts.nan == "propagate" and n_nan > 0
        u = Used(vals, num, den, comps, ok_prim, ok_rows_k, plain, vals, len(vals), n_nan, propagate, None)
        if propagate:
            nan_fill = np.full(n_nan, np.nan)
            u.nan_prim = chunk.prim_rows[kept_idx[comp.nan_rows]] + off
            u.vals = np.concatenate([vals, nan_fill])
            u.num = np.concatenate([num, nan_fill])
            if den is not None:
                u.den = np.concatenate([den, nan_fill])
            u.comps = {k: np.concatenate([v, nan_fill]) for k, v in comps.items()}
        return u

    def add_counts(self, chunk: Chunk, comp: Computed, u: Used) -> None:
        """Σ counts over the rows used (the rows whose losses the headline adds up)."""
        if chunk.counts is None:
            return
        c = np.asarray(chunk.counts)
        if c.dtype.kind not in "biuf" or c.ndim != 1:
            raise DataError(
                f"{opt('counts')} {self.counts_label}: expected one number per sequence; got {c.dtype} {c.shape}."
            )
        c = c.astype(np.float64)  # one per row kept (rows of an id join without a match are not)
        bad = ~np.isfinite(c) | (c < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            row = int(chunk.prim_rows[chunk.kept_idx[i]]) + self.opts.row_offset
            raise DataError(
                f"{opt('counts')} {self.counts_label}, row {row}: {float(c[i])!r} is not a count. Expected a whole "
                "number of bytes, words or tokens (0 or more) for every sequence."
            )
        used = c if u.plain else c[comp.use][~comp.ignored]
        self.count_sums.append(math.fsum(used.tolist()))

    def add(self, chunk: Chunk, comp: Computed, u: Used) -> None:
        """The chunk's used rows into the overall aggregate, bootstrap, groups and top rows."""
        acc = self.acc
        agg = acc.all
        agg.add(u.vals, u.num, u.den, u.comps)
        agg.used += u.n_used
        agg.ignored += int(comp.ignored.sum())
        if u.propagate:
            agg.nan_propagated += u.n_nan
        else:
            agg.nan_omitted += u.n_nan
        acc.dropped_pred += chunk.n_all - len(chunk.kept_idx)
        if acc.bootstrap is not None:
            boot_rows = np.concatenate([u.ok_prim, u.nan_prim]) if u.propagate else u.ok_prim
            acc.bootstrap.update(u.num, u.den, boot_rows)
            if self.spec.headline_from and "rel/bin" in u.comps:  # ece: resample the bin sums too
                acc.bootstrap.update_bins(
                    u.comps["rel/bin"], u.comps["rel/conf"], u.comps["rel/hit"], boot_rows, int(self.params["bins"])
                )
        if chunk.groups is not None:
            self._update_groups(chunk.groups, comp, u)
        if self.opts.collect:
            self._collect(chunk, comp, u)
        self._top(chunk, u)

    def _collect(self, chunk: Chunk, comp: Computed, u: Used) -> None:
        r = comp.result
        raw_num = r.num if r.num is not None else r.loss
        ok_u = ~comp.ignored
        groups, kept = chunk.groups, chunk.kept_idx
        g = None if groups is None else np.asarray(groups)
        self.collected.append(
            {
                "row": u.ok_prim,
                "id": None if chunk.ids is None else np.asarray(chunk.ids)[kept if u.plain else kept[u.ok_rows_k]],
                "loss": u.loss_used,
                "num": raw_num if u.plain else raw_num[ok_u],
                "den": np.ones(u.n_used) if r.den is None else (r.den if u.plain else r.den[ok_u]),
                "group": None if groups is None else (g if u.plain else g[comp.use][ok_u]),
            }
        )

    def _top(self, chunk: Chunk, u: Used) -> None:
        acc, ids = self.acc, chunk.ids
        before = set(acc.top.rows.tolist()) if ids is not None else None
        acc.top.update(u.loss_used, u.ok_prim)
        if before is not None:
            # Ids of the rows that just entered the top K (a handful), not a map of the chunk.
            new = [r for r in acc.top.rows.tolist() if r not in before]
            if new:
                rows_all = chunk.prim_rows + self.opts.row_offset
                for i in np.flatnonzero(np.isin(rows_all, new)).tolist():
                    acc.top_ids[int(rows_all[i])] = py(ids[i])

    def _update_groups(self, groups, comp: Computed, u: Used) -> None:
        """Per-group aggregates: the same numbers as the overall ones, split by the group key."""
        use, ign_u, propagate = comp.use, comp.ignored, u.propagate
        ok_u = ~ign_u
        g_use = np.asarray(groups)[use]
        keys_ok = g_use[ok_u]
        keys_nan = np.asarray(groups)[comp.nan_rows]
        keys_vals = np.concatenate([keys_ok, keys_nan]) if propagate else keys_ok
        uniq, inv = factorize(keys_vals)
        counted = [(factorize(g_use[ign_u]), "ignored")]
        if not propagate:
            counted.append((factorize(keys_nan), "nan_omitted"))
        self._room_for_groups([uniq, *(k for (k, _), _ in counted)])
        # Rows of each group in input order: one stable sort, then contiguous slices, all
        # groups' updates at once (lossctl.aggregate.add_segments).
        order = np.argsort(inv, kind="stable")
        counts = np.bincount(inv, minlength=len(uniq))
        starts = np.cumsum(counts) - counts
        aggs = [self.acc.group(key) for key in uniq]
        vs = u.vals[order]
        den = u.den
        add_segments(
            aggs,
            starts,
            counts,
            vs,
            vs if u.num is u.vals else u.num[order],
            None if den is None else den[order],
            {k: v[order] for k, v in u.comps.items()},
        )
        ok_counts = np.bincount(inv[: len(keys_ok)], minlength=len(uniq)).tolist()
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
        """max_groups: refuse a chunk that would take the distinct group_by values past the
        limit, before any state of its groups is made (memory stays proportional to the limit)."""
        limit = self.opts.max_groups
        have = self.acc.groups
        if limit is None or len(have) + sum(len(k) for k in key_lists) <= limit:
            return  # even if every key of the chunk were new, the limit holds
        new = {k for keys in key_lists for k in keys if k not in have}
        if len(have) + len(new) > limit:
            raise DataError(
                f"{opt('group_by')} {self.group_label or self.opts.group_by}: more than {limit} distinct "
                f"values ({len(have) + len(new)} in the first {self.acc.rows_seen} rows); per-group results "
                f"are kept for at most {opt('max_groups')} {limit} groups. Group by a column with fewer values, "
                f"or raise {opt('max_groups')} N (memory and the report grow with it)."
            )


def factorize(keys: np.ndarray) -> tuple[list, np.ndarray]:
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
