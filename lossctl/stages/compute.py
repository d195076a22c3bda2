"""Stage 2 of a run: compute one chunk with the loss's kernel.

``Kernel`` turns a ``Chunk`` into a ``Computed``: it checks each input's dimensions and type
(``conform``: class names to indices, integers exact in float64), applies the NaN policy,
calls the kernel (whole batches for a batched loss), the reliability hook and, when asked, the
gradient and the per-token function. What the kernel accepts is the loss's declared contract
(``spec.kernel_options``: ``prob_atol``, ``extras``, ``batch_size``); nothing is sniffed.
Kernel errors (``InputError``, ``ParamError``) become one-paragraph errors naming the file,
column and rows.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from lossctl.errors import DataError, InputError, ParamError, UsageError, opt
from lossctl.kinds import KindWatch, error_hint
from lossctl.losses import Result
from lossctl.ragged import Ragged
from lossctl.registry import LossSpec, Role
from lossctl.stages.align import DEFAULT_BATCH_CAP, Chunk, Input
from lossctl.stages.chunks import nan_rows

TOKEN_MASK_ROLE = "mask"


@dataclass
class Computed:
    """A chunk's kernel result and which of its kept rows were used (not NaN under ``nan``)."""

    result: Result
    nan_rows: np.ndarray  # over the kept rows
    use: np.ndarray  # ~nan_rows
    all_use: bool
    sub: dict[str, Any]  # the inputs of the rows used
    sub_rows: dict[str, np.ndarray]
    batch_of: np.ndarray | None

    @property
    def ignored(self) -> np.ndarray:
        r = self.result
        return r.ignored if r.ignored is not None else np.zeros(len(r.loss), dtype=bool)


def shape_text(shape) -> str:
    parts = [str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def load_hook(path: str) -> Callable:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def token_function(spec: LossSpec):
    """A token-level loss's per-token function, as its declaration names it (``spec.tokens``)."""
    fn = spec.load_tokens()
    if fn is None:
        raise UsageError(
            f"{opt('per_token')} writes one row per token of a token-level loss; {spec.name} has no tokens. "
            f"Use {opt('per_sample')} PATH for one row per input row."
        )
    return fn


class Kernel:
    """The compute stage of one run (see the module docstring)."""

    def __init__(self, spec: LossSpec, params: dict, opts, inputs: list[Input]):
        self.spec = spec
        self.params = dict(params)
        self.opts = opts
        self.inputs = inputs
        self.kernel = spec.load_kernel()
        self.kernel_kwargs = dict(params)
        # classes: label names are mapped to indices here, before the kernel (which never sees them)
        self.classes = self.kernel_kwargs.pop("classes", None)
        # The loss's own parameters: what the per-token function takes.
        self.param_kwargs = dict(self.kernel_kwargs)
        self.atol_pending = False
        if "prob_atol" in spec.kernel_options:
            self.kernel_kwargs["prob_atol"] = opts.prob_atol
            self.atol_pending = opts.prob_atol is None
        self.wants_extras = "extras" in spec.kernel_options and opts.per_sample is not None
        self.rel_fn = load_hook(spec.reliability) if spec.reliability else None
        self.grad_fn = None
        self.grad_kwargs: dict[str, Any] = {}
        if opts.grad is not None or opts.grad_norm:
            self.grad_fn = spec.load_grad()
            # The gradient takes the loss parameters and prob_atol, never extras or batch_size
            # (the batch size is passed per call).
            self.grad_kwargs = {k: v for k, v in self.kernel_kwargs.items() if k != "extras"}
        self.token_fn = token_function(spec) if opts.per_token is not None else None
        self.pred_role = spec.inputs[spec.pred_index].name
        self.kinds = KindWatch(spec, self.params, opts.prob_atol)
        self.batch_size: int | None = None
        if spec.batched and self.params.get("batch_size") is not None:
            self.batch_size = int(self.params["batch_size"])

    @property
    def keylike_roles(self) -> set[str]:
        """Roles read as text: labels given as class names (classes)."""
        return {r.name for r in self.spec.inputs if self._names_as_labels(r)}

    def _names_as_labels(self, role: Role) -> bool:
        return self.classes is not None and role.dtype == "label"

    # -- one chunk ------------------------------------------------------------------
    def compute(self, chunk: Chunk, rows_before: int) -> Computed:
        """The kernel's result on the chunk's rows (``rows_before``: rows of earlier chunks)."""
        if self.spec.batched and self.batch_size is None:
            if rows_before or chunk.n_all > DEFAULT_BATCH_CAP:
                raise UsageError(
                    f"{self.spec.name}: the input has more than {DEFAULT_BATCH_CAP} rows; without "
                    f"{opt('batch_size')} the whole input is one batch, which is allowed up to that size. "
                    f"Give {opt('batch_size')}."
                )
            self.batch_size = chunk.n_all
        arrays, role_rows = chunk.arrays, chunk.role_rows
        for inp in self.inputs:
            name = inp.role.name
            if self._names_as_labels(inp.role):
                arrays[name] = self._class_names(inp, arrays[name], role_rows[name])
            arrays[name] = self._conform(inp, arrays[name], role_rows[name])
        if self.classes is not None:
            self._classes_fit(arrays)
        bad = self._nan_rows(chunk)
        all_use = not bad.any()
        use = ~bad
        sub = arrays if all_use else {k: v[use] for k, v in arrays.items()}
        sub_rows = role_rows if all_use else {k: v[use] for k, v in role_rows.items()}
        batch_of = None
        if self.spec.batched:
            batch_of = (chunk.prim_rows[chunk.kept_idx] // self.batch_size)[use]
        if self.atol_pending:
            self._set_default_prob_atol(arrays)
        self.kinds.update(sub)
        result = self._call(self.kernel, sub, sub_rows, self._kernel_kwargs(), batch_of)
        if self.rel_fn is not None:
            rel = self._guarded(self.rel_fn, self._args(sub), dict(self.kernel_kwargs), sub_rows)
            result.components.update(rel)
        return Computed(result, bad, use, all_use, sub, sub_rows, batch_of)

    def _kernel_kwargs(self) -> dict:
        kwargs = dict(self.kernel_kwargs)
        if self.wants_extras:
            kwargs["extras"] = True
        return kwargs

    def grad(self, comp: Computed):
        """The gradient on the rows used (None when no output asks for it)."""
        if self.grad_fn is None:
            return None
        return self._call(self.grad_fn, comp.sub, comp.sub_rows, dict(self.grad_kwargs), comp.batch_of)

    def tokens(self, comp: Computed) -> dict:
        """The per-token function on the rows used: row (index among them), position, token, loss."""
        try:
            with np.errstate(all="ignore"):
                return self.token_fn(*self._args(comp.sub), **self.param_kwargs)
        except InputError as err:
            raise DataError(self._input_error(err, comp.sub_rows)) from None

    # -- the NaN policy ---------------------------------------------------------------
    def _nan_rows(self, chunk: Chunk) -> np.ndarray:
        """Kept rows with a NaN in any input; under ``nan error`` the first one is an error."""
        arrays = chunk.arrays
        out = np.zeros(len(chunk.kept_idx), dtype=bool)
        first: tuple[Input, int] | None = None
        counted = _counted_tokens(arrays)
        masks = chunk.nan_masks or {}
        for inp in self.inputs:
            m = masks.get(inp.role.name)
            by_mask = counted if inp.role.name != TOKEN_MASK_ROLE else None
            if m is None or (by_mask is not None and m.any()):
                m = nan_rows(arrays[inp.role.name], by_mask)
            if m is not None and m.any():
                i = int(np.flatnonzero(m)[0])
                if first is None or i < first[1]:  # the earliest row over all inputs
                    first = (inp, i)
                out |= m
        if first is not None and self.opts.nan == "error":
            self._nan_error(chunk, *first)
        return out

    def _nan_error(self, chunk: Chunk, inp: Input, i: int) -> None:
        rows = chunk.role_rows[inp.role.name]
        where = inp.where()
        names = inp.request.names if inp.request else []
        a = chunk.arrays[inp.role.name]
        if len(names) > 1 and isinstance(a, np.ndarray) and a.ndim == 2:
            k = int(np.flatnonzero(np.isnan(a[i]))[0])
            where = f"{inp.source.display}, column {names[k]!r}"
        raise DataError(
            f"{where}, row {int(rows[i])}: NaN or missing value in {inp.role.metavar} (the first such row). "
            f"Expected numbers; use {opt('nan')} omit to leave such rows out (they are counted), "
            f"or {opt('nan')} propagate to let NaN flow into the result."
        )

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
        self.atol_pending = False

    # -- inputs ---------------------------------------------------------------------------
    def _exact_in_float64(self, inp: Input, a: np.ndarray, rows: np.ndarray) -> None:
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

    def _class_names(self, inp: Input, a, rows: np.ndarray) -> np.ndarray:
        """classes: one class name per row -> its index in the list (logit order)."""
        from lossctl.literal import visible
        from lossctl.losses._common import class_name_indices

        a = np.asarray(a)
        if a.ndim != 1:
            raise DataError(
                f"{inp.where()} gives {inp.role.metavar} as {shape_text(a.shape)}, but {opt('classes')} maps one "
                "class name per row. Expected a single column of class names (soft targets need no "
                f"{opt('classes')})."
            )
        idx, unknown = class_name_indices(a, self.classes)
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            shown = ", ".join(visible(c) for c in self.classes[:10]) + (", ..." if len(self.classes) > 10 else "")
            raise DataError(
                f"{inp.where()}, row {int(rows[i])}: the label '{visible(a[i])}' is not one of the "
                f"{len(self.classes)} names of {opt('classes')} ({shown}); {int(unknown.sum())} row(s) of this "
                f"block have such labels. Expected every label to be a name from {opt('classes')} (the same "
                "spelling and case), given in logit order."
            )
        return idx

    def _classes_fit(self, arrays) -> None:
        """classes names every column of the prediction, in order: the counts must agree."""
        pred = next(i for i in self.inputs if i.role.name == self.pred_role)
        c = np.shape(arrays[pred.role.name])[1:]
        if len(c) == 1 and c[0] != len(self.classes):
            raise DataError(
                f"{pred.where()} has {c[0]} class columns but {opt('classes')} names {len(self.classes)} classes. "
                "Expected one name per prediction column, in logit order."
            )

    def _conform(self, inp: Input, a, rows: np.ndarray):
        """Check an input's dimensions and numeric type; record its shape."""
        role = inp.role
        if role.ragged and isinstance(a, np.ndarray) and a.ndim == 2:
            n, t = a.shape
            a = Ragged(a.reshape(-1), np.arange(0, n * t + 1, max(t, 1)) if t else np.zeros(n + 1, np.int64))
        if getattr(a, "is_ragged", False):
            return self._conform_ragged(inp, a, rows)
        if a.ndim not in role.ndim:
            got = "a single column" if a.ndim == 1 else f"shape {shape_text(a.shape)}"
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
                f"{inp.where()}, row {int(rows[0])}: shape changes from {shape_text(inp.shape)} to "
                f"{shape_text(a.shape)}."
            )
        return a

    def _conform_ragged(self, inp: Input, a, rows: np.ndarray):
        role = inp.role
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

    # -- calling the kernel -------------------------------------------------------------
    def _args(self, arrays: dict[str, Any]) -> list:
        return [arrays.get(role.name) for role in self.spec.inputs]

    def _call(self, fn, arrays, role_rows, kwargs: dict, batch_of: np.ndarray | None):
        if batch_of is None:
            return self._guarded(fn, self._args(arrays), kwargs, role_rows)
        return self._by_batch(fn, arrays, role_rows, kwargs, batch_of)

    def _with_batch(self, kwargs: dict, size: int) -> dict:
        return {**kwargs, "batch_size": size} if "batch_size" in self.spec.kernel_options else kwargs

    def _by_batch(self, fn, arrays, role_rows, kwargs, batch_of):
        """Call a batched kernel so that batches are the input's (row // batch size) groups."""
        n = len(batch_of)
        starts = np.flatnonzero(np.r_[True, batch_of[1:] != batch_of[:-1]]) if n else np.zeros(0, int)
        sizes = np.diff(np.r_[starts, n])
        # Fast path: every batch complete except possibly the last, as the kernel would split.
        if n == 0 or (sizes[:-1] == self.batch_size).all():
            return self._guarded(fn, self._args(arrays), self._with_batch(kwargs, self.batch_size), role_rows)
        parts = []
        for st, sz in zip(starts.tolist(), sizes.tolist()):
            sl = slice(st, st + sz)
            sub = {k: v[sl] for k, v in arrays.items()}
            rows = {k: v[sl] for k, v in role_rows.items()}
            parts.append(self._guarded(fn, self._args(sub), self._with_batch(kwargs, sz), rows))
        if isinstance(parts[0], Result):
            return concat_results(parts)
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
        """The kernels only see rows without NaN (NaN rows are set aside by the NaN policy), so
        a NaN result is float64 failing on extreme values: an error, never a silent NaN."""
        bad, what = _nan_outputs(out)
        if bad is None or not bad.any():
            return
        i = int(np.flatnonzero(bad)[0])
        inp = self.inputs[0]
        rows = role_rows.get(inp.role.name)
        row = f", row {int(rows[i])}" if rows is not None and i < len(rows) else ""
        raise DataError(
            f"{inp.where()}{row}: the {self.spec.name} {what} is not a number although every input is one: "
            f"float64 overflows on values this extreme (near ±1e308, or a tiny {opt('temperature')} / "
            f"{opt('eps')}) in {int(bad.sum())} row(s) of this block. Expected inputs of moderate magnitude; "
            "rescale them."
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


def _nan_outputs(out) -> tuple[np.ndarray | None, str]:
    """Rows of a kernel result (or gradient) that are NaN, and what the output is."""
    if isinstance(out, Result):
        bad = np.isnan(out.loss)
        if out.ignored is not None:
            bad &= ~out.ignored
        return bad, "value"
    vals = out.values if isinstance(out, Ragged) else np.asarray(out)
    if vals.dtype.kind != "f":
        return None, "gradient"
    bad = np.isnan(vals)
    if isinstance(out, Ragged):
        bad = bad.reshape(len(bad), -1).any(axis=1)  # (ragged logits: one vector per element)
        flat = np.zeros(len(out), dtype=bool)
        flat[out.row_ids()[bad]] = True
        return flat, "gradient"
    return (bad.reshape(len(vals), -1).any(axis=1) if vals.ndim > 1 else bad), "gradient"


def _counted_tokens(arrays) -> Ragged | None:
    """The tokens a mask counts (a Ragged of bools), when a loss has one: NaN padding at the
    other positions is no missing value (it is neither validated nor used)."""
    m = arrays.get(TOKEN_MASK_ROLE)
    if not isinstance(m, Ragged) or m.values.dtype.kind not in "biuf":
        return None
    return m.with_values(m.values != 0)


def concat_results(parts: list[Result]) -> Result:
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


def row_norms(grad) -> np.ndarray:
    """Each row's gradient L2 norm, without overflow in the squares."""
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
