"""The loss registry: one declarative entry per loss.

Everything a user sees about a loss comes from its entry here: the
``lossctl compute NAME`` subcommand with its arguments, options and ``--help``,
``lossctl list`` and ``lossctl explain``. Kernels are referenced by dotted path
and imported only when a loss runs, so this module imports nothing heavy.

Adding a loss touches one kernel (``lossctl/losses/<family>.py``) and one
``LossSpec`` below.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from lossctl.errors import UsageError

FAMILIES = (
    "classification",
    "divergence",
    "distillation-rl",
    "regression",
    "contrastive",
    "detection",
    "generative",
)


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

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    def describe_range(self) -> str:
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        if self.low is None and self.high is None:
            return ""
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        lv = "-inf" if self.low is None else _fmt(self.low)
        hv = "inf" if self.high is None else _fmt(self.high)
        extra = "".join(f" or {_fmt(a)}" for a in self.allow)
        return f"in {lo}{lv}, {hv}{hi}{extra}"

    def parse(self, raw: Any, loss: str) -> Any:
        """Turn a command-line value into a Python value, validated; raises UsageError."""
        if raw is None:
            return None
        where = f"--{self.name} of {loss}"
        if self.type == "bool":
            return bool(raw)
        if self.type == "choice":
            value = str(raw)
            if value not in self.choices:
                raise UsageError(
                    f"{where} must be one of {', '.join(self.choices)}; got {value!r}."
                )
            return value
        if self.type in ("floats", "float-or-floats"):
            values = parse_number_list(str(raw), where)
            for v in values:
                self._check_range(v, where)
            if self.type == "float-or-floats" and len(values) == 1:
                return values[0]
            return values
        if self.type == "int":
            try:
                value = int(str(raw))
            except ValueError:
                raise UsageError(f"{where} expects an integer; got {raw!r}.") from None
        elif self.type == "float":
            try:
                value = float(str(raw))
            except ValueError:
                raise UsageError(f"{where} expects a number; got {raw!r}.") from None
            if math.isnan(value):
                raise UsageError(f"{where} expects a number; got NaN.")
        else:
            value = raw
        self._check_range(value, where)
        return value

    def _check_range(self, v: float, where: str) -> None:
        if v in self.allow:
            return
        bad = False
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            bad = True
        if self.high is not None and (v > self.high or (self.high_open and v == self.high)):
            bad = True
        if bad:
            raise UsageError(f"{where} must be {self.describe_range()}; got {_fmt(v)}.")


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


def _numbers_from_text(text: str) -> list[float]:
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise ValueError("empty")
    values = [float(p) for p in parts]
    for v in values:
        if math.isnan(v):
            raise ValueError("nan")
    return values


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
    classification: bool = False  # per-sample output has p_true / pred_class
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The gradient is taken with respect to inputs[pred_index] (the model's output).
    pred_index: int = 0
    # Rows interact within batches of --batch-size rows (InfoNCE): the engine hands the
    # kernel whole batches and the resolved batch size; results never depend on chunking.
    batched: bool = False
    # Quantities derived from the headline value and reported with it: "perplexity" = exp(value).
    derived: tuple[str, ...] = ()

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name or p.dest == name:
                return p
        raise KeyError(name)

    def load_kernel(self) -> Callable:
        return _load(self.kernel)

    def load_grad(self) -> Callable:
        return _load(self.grad)

    def defaults(self) -> dict[str, Any]:
        return {p.dest: p.default for p in self.params}


def _load(path: str) -> Callable:
    import importlib

    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


# Parameters shared by several losses -------------------------------------------------

PRED_KIND = Param(
    "pred-kind",
    "choice",
    "logits",
    "What the prediction columns hold: raw logits, probabilities, or log-probabilities. "
    "Never guessed from the values.",
    choices=("logits", "probs", "log-probs"),
)
TARGET_KIND = Param(
    "target-kind",
    "choice",
    "probs",
    "For soft (N, C) targets: probabilities or log-probabilities.",
    choices=("probs", "log-probs"),
)
CLASS_WEIGHT = Param(
    "weight",
    "floats",
    None,
    "Class weights: C comma-separated numbers, or a file holding them (.npy, .json, text).",
    low=0.0,
)
IGNORE_INDEX = Param(
    "ignore-index",
    "int",
    -100,
    "Target value whose rows are ignored: excluded from every statistic and counted.",
)

_CLS = "lossctl.losses.classification"
_REG = "lossctl.losses.regression"

PRED_CN = Role("pred", "(N, C)", "Class scores: one row per sample, one column per class.", ndim=(2,))
TARGET_CE = Role(
    "target",
    "(N,) or (N, C)",
    "Class indices (N,), or a probability row per sample (N, C) (soft targets).",
    dtype="label",
)

REGRESSION_PRED = Role("pred", "(N,) or (N, D)", "Predicted values ŷ.")
REGRESSION_TARGET = Role("target", "(N,) or (N, D)", "True values y, the prediction's shape.")

REGRESSION_PROPS_COMMON = "Multi-output (N, D): the per-sample value is the mean over D, so the overall mean equals PyTorch's element-wise mean."

LOSSES: tuple[LossSpec, ...] = (
    LossSpec(
        name="cross-entropy",
        aliases=("ce",),
        family="classification",
        summary="Softmax cross-entropy between class scores and class indices or soft targets.",
        inputs=(PRED_CN, TARGET_CE),
        params=(
            PRED_KIND,
            CLASS_WEIGHT,
            IGNORE_INDEX,
            Param(
                "label-smoothing",
                "float",
                0.0,
                "Mix (1-ε) of the target with ε of the uniform distribution over C classes.",
                low=0.0,
                high=1.0,
            ),
            TARGET_KIND,
        ),
        kernel=f"{_CLS}:cross_entropy",
        grad=f"{_CLS}:cross_entropy_grad",
        reference="torch.nn.functional.cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)",
        formula=(
            "indices: l_n = -w[y_n] · log softmax(x_n)[y_n]\n"
            "soft:    l_n = -Σ_c w_c · y_nc · log softmax(x_n)_c\n"
            "smoothing ε: (1-ε) · l_n + ε/C · (-Σ_c w_c · log softmax(x_n)_c)"
        ),
        headline=(
            "index targets: Σ_n l_n / Σ_n w[y_n] over rows not equal to ignore-index "
            "(PyTorch's weighted mean; the plain mean when unweighted); soft targets: Σ_n l_n / N"
        ),
        gradient="∂l_n/∂x_n = softmax(x_n) · Σ_c t_c - t, with t the weighted (smoothed) target row",
        properties=(
            "Non-negative for probability targets; zero only when the prediction puts all mass on the target.",
            "Equals H(p) + KL(p ‖ q) for a soft target p and prediction q: only the KL part depends on the model.",
            "Unbounded: a confident wrong prediction costs arbitrarily much (log of a tiny probability).",
            "Computed in log space with log-sum-exp: logits of ±1e4 give finite, exact results.",
        ),
        used_for="Multi-class classification; language modelling (per token).",
        activation="softmax over the class axis (applied inside the loss to logits)",
        paper="Standard maximum-likelihood loss; label smoothing: Szegedy et al. 2016.",
        example=("sample_data/classifier.parquet:logits", "sample_data/classifier.parquet:label"),
        classification=True,
    ),
    LossSpec(
        name="binary-cross-entropy",
        aliases=("bce",),
        family="classification",
        summary="Binary (or multi-label) cross-entropy from logits or probabilities.",
        inputs=(
            Role("pred", "(N,) or (N, K)", "One score per sample, or K independent labels per sample."),
            Role("target", "(N,) or (N, K)", "Targets in [0, 1], the prediction's shape."),
        ),
        params=(
            Param(
                "pred-kind",
                "choice",
                "logits",
                "What the prediction holds: logits (sigmoid applied inside) or probabilities.",
                choices=("logits", "probs"),
            ),
            Param(
                "pos-weight",
                "float-or-floats",
                1.0,
                "Weight of the positive term: one number, or K numbers (one per label).",
                low=0.0,
            ),
            Param(
                "weight",
                "float-or-floats",
                None,
                "Weight of each element: one number, or K numbers (one per label).",
                low=0.0,
            ),
        ),
        kernel=f"{_CLS}:binary_cross_entropy",
        grad=f"{_CLS}:binary_cross_entropy_grad",
        reference=(
            "torch.nn.functional.binary_cross_entropy_with_logits(input, target, weight, pos_weight) "
            "(logits); torch.nn.functional.binary_cross_entropy(input, target, weight) (probs)"
        ),
        formula=(
            "logits: l = w · (pw · y · softplus(-x) + (1-y) · softplus(x))\n"
            "probs:  l = -w · (pw · y · max(log p, -100) + (1-y) · max(log(1-p), -100))\n"
            "(N, K): the per-sample value is the mean over the K labels"
        ),
        headline="the mean over samples (= PyTorch's element-wise mean)",
        gradient="logits: ∂l/∂x = w · ((1-y) · σ(x) - pw · y · σ(-x)); probs: w · ((1-y)/(1-p) - pw · y/p)",
        properties=(
            "From logits it is computed with softplus, so it is finite and exact for any finite logit.",
            "From probabilities each log is clamped at -100, as PyTorch does: one element costs at most 100 · w.",
        ),
        used_for="Binary and multi-label classification.",
        activation="sigmoid per output (applied inside the loss to logits)",
        paper="Standard Bernoulli log-likelihood.",
        example=("sample_data/binary.csv:logit", "sample_data/binary.csv:label"),
        classification=True,
    ),
    LossSpec(
        name="mse",
        aliases=("l2",),
        family="regression",
        summary="Mean squared error.",
        inputs=(REGRESSION_PRED, REGRESSION_TARGET),
        params=(),
        kernel=f"{_REG}:mse",
        grad=f"{_REG}:mse_grad",
        reference="torch.nn.functional.mse_loss(input, target)",
        formula="l = r², r = y - ŷ (mean over D for (N, D))",
        headline="the mean over samples (= PyTorch's element-wise mean)",
        gradient="∂l/∂ŷ = -2r (divided by D for (N, D))",
        properties=(
            "Sensitive to outliers: the penalty grows with the square of the residual.",
            "Minimised by the conditional mean.",
            REGRESSION_PROPS_COMMON,
        ),
        used_for="Regression.",
        activation="none (identity output)",
        paper="Gauss / Legendre, least squares.",
        example=("sample_data/regression.csv:pred", "sample_data/regression.csv:target"),
    ),
    LossSpec(
        name="mae",
        aliases=("l1",),
        family="regression",
        summary="Mean absolute error.",
        inputs=(REGRESSION_PRED, REGRESSION_TARGET),
        params=(),
        kernel=f"{_REG}:mae",
        grad=f"{_REG}:mae_grad",
        reference="torch.nn.functional.l1_loss(input, target)",
        formula="l = |r|, r = y - ŷ (mean over D for (N, D))",
        headline="the mean over samples (= PyTorch's element-wise mean)",
        gradient="∂l/∂ŷ = -sign(r) (0 at r = 0; divided by D for (N, D))",
        properties=(
            "Robust to outliers: the penalty grows linearly with the residual.",
            "Minimised by the conditional median; not differentiable at r = 0.",
            REGRESSION_PROPS_COMMON,
        ),
        used_for="Regression, box coordinates in detection (L1 term).",
        activation="none (identity output)",
        paper="Laplace; least absolute deviations.",
        example=("sample_data/regression.csv:pred", "sample_data/regression.csv:target"),
    ),
)


# ---------------------------------------------------------------------------
# Lookup
# ---------------------------------------------------------------------------


def _index() -> dict[str, LossSpec]:
    table: dict[str, LossSpec] = {}
    for spec in LOSSES:
        for key in (spec.name, *spec.aliases):
            if key in table:
                raise RuntimeError(f"duplicate loss name or alias {key!r}")
            table[key] = spec
    return table


BY_NAME = _index()


def names() -> list[str]:
    return sorted(BY_NAME)


def suggest(name: str) -> list[str]:
    return difflib.get_close_matches(name, names(), n=3, cutoff=0.5)


def get(name: str) -> LossSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        pass
    close = suggest(name)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UsageError(
        f"Unknown loss {name!r}.{hint} Run `lossctl list` to see every loss."
    )


def describe(spec: LossSpec) -> dict[str, Any]:
    """A JSON-serialisable description of a loss (used by ``list --format json``)."""
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "family": spec.family,
        "summary": spec.summary,
        "inputs": [
            {"role": r.name, "shape": r.shape, "help": r.help, "optional": r.optional}
            for r in spec.inputs
        ],
        "params": [
            {
                "name": p.name,
                "type": p.type,
                "default": p.default,
                "choices": list(p.choices) or None,
                "range": p.describe_range() or None,
                "help": p.help,
            }
            for p in spec.params
        ],
        "reference": spec.reference,
        "formula": spec.formula,
        "headline": spec.headline,
        "gradient": spec.gradient,
        "properties": list(spec.properties),
        "used_for": spec.used_for,
        "activation": spec.activation,
        "paper": spec.paper,
        "example": "lossctl compute " + " ".join((spec.name, *spec.example)),
    }
