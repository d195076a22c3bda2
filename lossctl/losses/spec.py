"""The catalogue's vocabulary: what a loss declares about itself.

A loss is declared once, next to its kernel in ``lossctl/losses/<family>.py``, with the
:func:`loss` decorator::

    @loss(name="focal", family="classification", summary=..., inputs=(Role(...), ...),
          params=(Param(...), ...), formula=..., reference=..., paper=..., example=(...))
    def focal(pred, target, *, alpha=0.25, gamma=2.0) -> Result: ...
    def focal_grad(pred, target, *, alpha=0.25, gamma=2.0): ...

The decorator builds the :class:`LossSpec` (kernel ``module:focal``, gradient
``module:focal_grad`` unless named), attaches it as ``focal.__loss__`` and writes the
function's docstring from the same text ``lossctl explain`` shows. ``lossctl.registry``
collects the declarations. This module imports nothing heavy (no NumPy).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

from lossctl.errors import UsageError, opt, spell, spelling

# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A loss parameter, exposed as ``--NAME`` on the loss's subcommand.

    ``type`` is one of ``float``, ``int``, ``bool``, ``choice``, ``floats``
    (a comma-separated list of numbers, or a file holding them) or
    ``float-or-floats`` (a scalar, or one number per output column).
    """

    name: str
    type: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the bound itself is excluded
    high_open: bool = False
    allow: tuple[Any, ...] = ()  # extra values allowed outside [low, high] (e.g. alpha=-1)
    exclude: tuple[Any, ...] = ()  # values refused inside [low, high] (e.g. base 1)
    # At least the smallest normal float64 (a temperature: scores are divided by it, and dividing
    # by a subnormal overflows). Shown in errors, not in the range.
    normal: bool = False

    def __getattribute__(self, name: str) -> Any:
        return _spelled(object.__getattribute__(self, name), name, ("help",))

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    def describe_range(self) -> str:
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        if self.low is None and self.high is None and not (self.low_open or self.high_open):
            return ""
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        lv = "-inf" if self.low is None else _fmt(self.low)
        hv = "inf" if self.high is None else _fmt(self.high)
        extra = "".join(f" or {_fmt(a)}" for a in self.allow)
        return f"in {lo}{lv}, {hv}{hi}{extra}"

    def expectation(self) -> str:
        """What a valid value is, in words: the whole declared contract (range, exclusions)."""
        text = self.describe_range()
        if self.exclude:
            text += " other than " + " or ".join(_fmt(x) for x in self.exclude)
        if self.normal:
            text += f" and at least {_TINY_NORMAL!r} (the smallest normal float64: dividing by less overflows)"
        return text

    def error(self, loss: str, got: str) -> UsageError:
        """The one wording of a parameter outside its contract."""
        return UsageError(f"{opt(self.name)} of {loss} must be {self.expectation()}; got {got}.", param=self.dest)

    def parse(self, raw: Any, loss: str) -> Any:
        """Turn a command-line value (or a Python value as text) into a Python value checked
        against the whole declared contract; raises UsageError (``.param``) in one wording."""
        if raw is None:
            return None
        where = f"{opt(self.name)} of {loss}"
        if self.type == "bool":
            return bool(raw)
        if self.type == "choice":
            value = str(raw)
            if value not in self.choices:
                raise self.error(loss, repr(value))
            return value
        try:
            if self.type == "names":
                return parse_name_list(str(raw), where)
            if self.type in ("floats", "float-or-floats"):
                values = parse_number_list(str(raw), where)
        except UsageError as exc:
            exc.param = exc.param or self.dest
            raise
        if self.type in ("floats", "float-or-floats"):
            for v in values:
                self.check(v, loss)
            if self.type == "float-or-floats" and len(values) == 1:
                return values[0]
            return values
        if self.type == "int":
            try:
                value = int(str(raw))
            except ValueError:
                raise UsageError(f"{where} expects an integer; got {raw!r}.", param=self.dest) from None
        elif self.type == "float":
            try:
                value = float(str(raw))
            except ValueError:
                raise UsageError(f"{where} expects a number; got {raw!r}.", param=self.dest) from None
            if math.isnan(value):
                raise UsageError(f"{where} expects a number; got NaN.", param=self.dest)
        else:
            value = raw
        return self.check(value, loss)

    def check(self, v: Any, loss: str) -> Any:
        """``v`` if it is inside the declared range and not excluded, else the one error."""
        if v in self.allow:
            return v
        if self.ok(v):
            return v
        raise self.error(loss, _fmt(v))

    def ok(self, v: float) -> bool:
        if v != v or v in self.exclude:
            return False
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        if self.low is None and self.low_open and v == -math.inf:
            return False
        if self.high is not None and (v > self.high or (self.high_open and v == self.high)):
            return False
        if self.high is None and self.high_open and v == math.inf:
            return False
        if self.normal and abs(v) < _TINY_NORMAL:
            return False
        return True


_TINY_NORMAL = sys.float_info.min


# Declaration text may name options through errors.opt (the core never spells a flag): it is
# spelled when read, by the face reading it (--flag in the CLI, python_name in the API and docs).
_SPEC_TEXT = (
    "summary", "reference", "formula", "gradient", "properties", "used_for", "activation", "paper",
)


def _spelled(value: Any, name: str, fields: tuple[str, ...]) -> Any:
    if name not in fields:
        return value
    if isinstance(value, str):
        return spell(value)
    if isinstance(value, tuple):
        return tuple(spell(v) if isinstance(v, str) else v for v in value)
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _as_text(value: Any) -> Any:
    """A Python value as the text ``Param.parse`` reads (lists as comma lists, floats exactly)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(repr(float(v)) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _fmt(v: float) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v)) if abs(v) >= 1 or v == 0 else repr(v)
    return repr(v)


def parse_number_list(raw: str, where: str) -> list[float]:
    """Parse ``1,2,3`` (commas or whitespace), or read numbers from a file.

    Files: ``.npy`` (1-D), ``.json`` (a list), anything else as text with
    numbers separated by commas, whitespace or newlines.
    """
    text = raw.strip()
    try:
        return _numbers_from_text(text)
    except ValueError:
        pass
    import os

    if not os.path.exists(text):
        raise UsageError(
            f"{where} expects comma-separated numbers (e.g. 1,2.5,3) or a file holding them; "
            f"got {raw!r}, which is neither a list of numbers nor an existing file."
        )
    try:
        if text.lower().endswith(".npy"):
            import numpy as np

            arr = np.load(text, allow_pickle=False)
            values = [float(v) for v in np.asarray(arr, dtype=float).ravel()]
        elif text.lower().endswith(".json"):
            import json

            with open(text) as fh:
                data = json.load(fh)
            values = [float(v) for v in data]
        else:
            with open(text) as fh:
                values = _numbers_from_text(fh.read())
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - turned into one clear message
        raise UsageError(f"{where}: could not read numbers from {text}: {exc}.") from None
    if not values:
        raise UsageError(f"{where}: {text} holds no numbers.")
    return values


def parse_name_list(raw: str, where: str) -> tuple[str, ...]:
    """Class names in logit order: ``cat,dog,bird``, or a file with one name per line
    (a file of one line is split at commas). Names are stripped; duplicates are refused."""
    import os

    text = raw.strip()
    if os.path.isfile(text):
        try:
            with open(text, encoding="utf-8") as fh:
                lines = [ln.strip() for ln in fh.read().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{where}: could not read class names from {text}: {exc}.") from None
        names = [n.strip() for n in lines[0].split(",")] if len(lines) == 1 else lines
        origin = f"the file {text}"
    else:
        names = [n.strip() for n in text.split(",")]
        origin = "the list"
    if not names or any(not n for n in names):
        raise UsageError(
            f"{where}: {origin} holds an empty class name. Expected class names in logit order, "
            "as a comma list (cat,dog,bird) or a file with one name per line."
        )
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise UsageError(f"{where}: the class name {n!r} appears twice in {origin}; each class needs one name.")
        seen.add(n)
    return tuple(names)


def _numbers_from_text(text: str) -> list[float]:
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise ValueError("empty")
    values = [float(p) for p in parts]
    for v in values:
        if math.isnan(v):
            raise ValueError("nan")
    return values


# The one calling convention of the catalogue, stated in `compute --help`, `list` and the README.
INPUT_ORDER_RULE = (
    "Inputs are positional, in one order for every loss: the model's outputs first (prediction, "
    "student, policy, new log-probs), then the references (target, teacher, reference policy, "
    "old log-probs, advantages); extra model outputs a loss needs beyond its prediction come last, "
    "as in PyTorch (gaussian-nll's var, vae's mu and logvar)."
)


# ---------------------------------------------------------------------------
# Input roles
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Role:
    """One positional input of a loss (``pred``, ``target``, ``var`` ...).

    ``ndim`` lists the accepted numbers of dimensions of the array (rows first).
    ``dtype``: ``float`` (real values), ``label`` (integer class indices or, when
    2-D, a probability row), ``int`` (integer labels such as ±1).
    """

    name: str
    shape: str
    help: str
    ndim: tuple[int, ...] = (1, 2)
    dtype: str = "float"
    optional: bool = False
    # May come as variable-length list columns: the kernel then receives a
    # lossctl.ragged.Ragged (2-D arrays are given to it as Ragged rows of equal length).
    ragged: bool = False
    # An optional input given as ``--NAME SOURCE`` rather than positionally (e.g. a --mask).
    option: bool = False

    def __getattribute__(self, name: str) -> Any:
        return _spelled(object.__getattribute__(self, name), name, ("help", "shape"))

    @property
    def metavar(self) -> str:
        return self.name.upper().replace("-", "_")


# ---------------------------------------------------------------------------
# Loss entries
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LossSpec:
    name: str
    family: str
    summary: str
    inputs: tuple[Role, ...]
    params: tuple[Param, ...]
    kernel: str  # "module:function" returning lossctl.losses.Result
    grad: str  # "module:function" returning d loss_n / d pred_n
    reference: str
    formula: str
    headline: str  # how the headline (reference-compatible mean) is formed
    gradient: str
    properties: tuple[str, ...]
    used_for: str
    activation: str
    paper: str
    example: tuple[str, ...]  # arguments after `lossctl compute NAME`, using sample_data/
    aliases: tuple[str, ...] = ()
    # The kernel contract: which optional keywords the kernel (and the gradient, where it takes
    # them) accepts: "prob_atol" (|Σp - 1| tolerance), "extras" (per-sample columns such as
    # p_true / pred_class, asked for only when an output needs them), "batch_size" (batched).
    kernel_options: tuple[str, ...] = ()
    # The gradient is taken with respect to inputs[pred_index] (the model's output).
    pred_index: int = 0
    # Rows interact within batches of --batch-size rows (InfoNCE): the engine hands the
    # kernel whole batches and the resolved batch size; results never depend on chunking.
    batched: bool = False
    # Quantities derived from the headline value and reported with it: "perplexity" = exp(value).
    derived: tuple[str, ...] = ()
    # "module:function" giving per-row reliability components ("rel/bin", "rel/conf", "rel/hit"):
    # the report gains a reliability table (classification losses).
    reliability: str = ""
    # "module:function(bins, total, params) -> float": the headline is a function of the
    # reliability bins' sums rather than Σ num / Σ den (ece); --ci and --reduction sum are refused.
    headline_from: str = ""
    # A loss from a plugin (lossctl.plugins): "DISTRIBUTION VERSION", named in its reports' signature.
    plugin: str | None = None
    # "module:function" giving one row per token of a token-level loss (``--per-token``), or "".
    tokens: str = ""

    def __getattribute__(self, name: str) -> Any:
        if name == "example":  # a command line: always spelled as one
            return tuple(spell(a, _flag) for a in object.__getattribute__(self, name))
        if name == "headline":  # the report's value_rule: the same report from every face
            return spell(object.__getattribute__(self, name), _flag)
        return _spelled(object.__getattribute__(self, name), name, _SPEC_TEXT)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name or p.dest == name:
                return p
        raise KeyError(name)

    def load_kernel(self) -> Callable:
        return _load(self.kernel)

    def load_grad(self) -> Callable:
        return _load(self.grad)

    def load_tokens(self) -> Callable | None:
        """The per-token function (``tokens``), or None for a loss without tokens."""
        return _load(self.tokens) if self.tokens else None

    def defaults(self) -> dict[str, Any]:
        return {p.dest: p.default for p in self.params}

    def validate(self, given: dict[str, Any]) -> dict[str, Any]:
        """Every parameter of the loss, checked against its declaration before any data is
        read: ``given`` maps names (``label_smoothing`` or ``label-smoothing``) to command-line
        text or Python values; missing ones take their defaults. Raises UsageError (``.param``)."""
        known = {p.dest: p for p in self.params}
        for key in given:
            if key.replace("-", "_") not in known:
                raise UsageError(
                    f"{self.name} has no parameter {key!r}; its parameters: {', '.join(known) or 'none'}.",
                    param=key.replace("-", "_"),
                )
        out: dict[str, Any] = {}
        for p in self.params:
            raw = given.get(p.dest, given.get(p.name))
            if raw is None:
                out[p.dest] = p.default
            elif p.type == "bool":
                if not isinstance(raw, bool):
                    raise UsageError(f"{opt(p.name)} of {self.name} must be True or False; got {raw!r}.", param=p.dest)
                out[p.dest] = raw
            else:
                out[p.dest] = p.parse(_as_text(raw), self.name)
        return out


def _load(path: str) -> Callable:
    import importlib

    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


# Headline wording shared by the element-wise losses (regression, binary cross-entropy, focal).
HEADLINE_ELEM_SUM = (
    f"for (N, D) inputs each per-sample value is the row mean over D, and {opt('reduction')} sum is "
    "PyTorch's element sum (D × the sum of the per-sample values)"
)
HEADLINE_MEAN = "the mean over samples (= PyTorch's element-wise mean); " + HEADLINE_ELEM_SUM


# ---------------------------------------------------------------------------
# The declaration
# ---------------------------------------------------------------------------

_PATHS = ("grad", "reliability", "headline_from", "tokens")


def loss(**fields: Any) -> Callable[[Callable], Callable]:
    """Declare the loss the decorated kernel computes (every :class:`LossSpec` field but
    ``kernel``). ``grad`` defaults to the kernel's name + ``_grad``; ``grad``, ``reliability``,
    ``headline_from`` and ``tokens`` may name a function of the same module by its bare name."""

    def declare(fn: Callable) -> Callable:
        module = fn.__module__
        values = {"grad": fn.__name__ + "_grad", **fields}
        for key in _PATHS:
            value = values.get(key)
            if value and ":" not in value:
                values[key] = f"{module}:{value}"
        spec = LossSpec(kernel=f"{module}:{fn.__name__}", **values)
        fn.__loss__ = spec
        fn.__doc__ = docstring(spec, fn.__doc__)
        return fn

    return declare


def docstring(spec: LossSpec, own: str | None = None) -> str:
    """The kernel's docstring: the declaration's text (what ``lossctl explain`` shows), then
    the kernel's own notes on its implementation."""
    with spelling(lambda name: name):  # Python names in Python documentation
        return _docstring(spec, own)


def _docstring(spec: LossSpec, own: str | None) -> str:
    ind = "    "

    def block(text: str) -> str:
        return "\n".join(ind + line for line in text.splitlines())

    parts = [spec.summary, "", f"Loss ``{spec.name}`` ({spec.family}); ``lossctl explain {spec.name}``.", ""]
    parts += ["Inputs (positional, rows first)::", ""]
    parts += [f"{ind}{r.name.replace('-', '_')} {r.shape}: {r.help}" for r in spec.inputs]
    if spec.params:
        parts += ["", "Parameters (keywords)::", ""]
        for p in spec.params:
            rng = p.describe_range()
            parts.append(f"{ind}{p.dest} = {p.default!r}: {p.help}" + (f" ({rng})" if rng else ""))
    parts += ["", "Formula::", "", block(spec.formula), "", "Headline: " + spell(object.__getattribute__(spec, "headline"))]
    parts += ["", "Gradient: " + spec.gradient, "", "Reference: " + spec.reference, "", "Paper: " + spec.paper]
    parts += ["", "Example::", "", ind + "lossctl compute " + " ".join((spec.name, *spec.example))]
    if own:
        import inspect

        parts += ["", "Implementation notes:", "", inspect.cleandoc(own)]
    return "\n".join(parts) + "\n"
