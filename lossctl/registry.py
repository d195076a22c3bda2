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
                raise UsageError(f"{where} must be one of {', '.join(self.choices)}; got {value!r}.")
            return value
        if self.type == "names":
            return parse_name_list(str(raw), where)
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
    classification: bool = False  # per-sample output has p_true / pred_class
    notes: tuple[str, ...] = field(default_factory=tuple)
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
    "What the prediction columns hold: raw logits, probabilities, or log-probabilities. Never guessed from the values.",
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

CLASSES = Param(
    "classes",
    "names",
    None,
    "Class names in logit order, for targets stored as names (cat, dog): a comma list (cat,dog,bird) or a "
    "file with one name per line. Name k is class index k; a name not in the list is an error naming the row.",
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

# Shared by the regression entries.
_ELEM_SUM = (
    "for (N, D) inputs each per-sample value is the row mean over D, and --reduction sum is "
    "PyTorch's element sum (D × the sum of the per-sample values)"
)
_MEAN = "the mean over samples (= PyTorch's element-wise mean); " + _ELEM_SUM

# Shared by the contrastive and ranking entries.
_CON = "lossctl.losses.contrastive"
_EMB_SHAPE = "(N, D)"


def _emb(name: str, help: str) -> Role:
    return Role(name, _EMB_SHAPE, help + " One embedding per row; a single column is taken as D = 1.")


LABEL_01 = Role(
    "label",
    "(N,)",
    "1 for a similar pair, 0 for a dissimilar pair (other values are an error).",
    ndim=(1, 2),
    dtype="int",
)
LABEL_PM1_PAIR = Role(
    "label",
    "(N,)",
    "1 for a similar pair, -1 for a dissimilar pair (other values are an error).",
    ndim=(1, 2),
    dtype="int",
)
LABEL_PM1_RANK = Role(
    "label",
    "(N,)",
    "1 where x1 should rank higher than x2, -1 where x2 should (other values are an error).",
    ndim=(1, 2),
    dtype="int",
)

# Shared by the detection (box) and generative entries.
_DET = "lossctl.losses.detection"
_GEN = "lossctl.losses.generative"
BOX_EPS = Param(
    "eps",
    "float",
    1e-7,
    "Added to the denominators (union, enclosing area, squared diagonal), as torchvision does.",
    low=0.0,
)
CIOU_EPS = Param(
    "eps",
    "float",
    1e-7,
    "Added to the denominator of α = v / (1 - IoU + v + eps) only: as in torchvision, the DIoU part always uses 1e-7.",
    low=0.0,
)
BOX_FORMAT = Param(
    "box-format",
    "choice",
    "xyxy",
    "What the four box columns hold: xyxy (x1, y1, x2, y2), xywh (x1, y1, w, h) or "
    "cxcywh (centre x, centre y, w, h). Boxes are converted to xyxy first.",
    choices=("xyxy", "xywh", "cxcywh"),
)
PRED_BOXES = Role(
    "pred",
    "(N, 4)",
    "Predicted boxes, one per row (four columns, e.g. CSV columns x1,y1,x2,y2 or a list column of length 4).",
    ndim=(2,),
)
TARGET_BOXES = Role(
    "target",
    "(N, 4)",
    "Ground-truth boxes, paired with the prediction row by row (not all pairs).",
    ndim=(2,),
)
_BOX_COMMON_PROPS = (
    "Scale- and translation-invariant (up to eps): moving or scaling both boxes together leaves the value unchanged; "
    "for ciou the DIoU part always adds 1e-7, so very small boxes (areas near 1e-7) are not.",
    "Symmetric in the two boxes, except that the gradient is taken w.r.t. the predicted box.",
    "Inverted boxes (x1 > x2 or y1 > y2; negative w/h) are an error naming the row "
    "(torchvision does not check them and returns a number).",
    "eps keeps identical boxes at ~1e-7 rather than 0 (torchvision float32 prints 1.19e-7; float64 gives 1.0e-7).",
)
_BOX_GRAD_TIES = (
    "Piecewise: the intersection and enclosing-box edges switch between the two boxes where edges cross; "
    "at coincident edges each max/min splits the derivative in half (PyTorch's convention), "
    "and the intersection contributes nothing unless it has positive width and height."
)
_BOX_EXAMPLE = ("sample_data/detection_boxes.csv:pred_*", "sample_data/detection_boxes.csv:true_*")

# Shared by the divergence, distillation and RL entries.
_DIV = "lossctl.losses.divergence"
_RL = "lossctl.losses.rl"
_Q_KIND = Param(
    "pred-kind",
    "choice",
    "logits",
    "What the prediction Q holds: raw logits (log-softmax applied inside), probabilities, "
    "or log-probabilities. Never guessed from the values.",
    choices=("logits", "probs", "log-probs"),
)
_P_KIND = Param(
    "target-kind",
    "choice",
    "probs",
    "What the target P holds: probabilities (default), log-probabilities, or raw logits (log-softmax applied inside).",
    choices=("probs", "log-probs", "logits"),
)
_BASE = Param(
    "base",
    "float",
    math.e,
    "Logarithm base: e gives nats (default), 2 gives bits; 1 is not allowed.",
    low=0.0,
    low_open=True,
)
_DIRECTION_KL = Param(
    "direction",
    "choice",
    "forward",
    "forward = KL(P ‖ Q) (P the target, Q the prediction; mean-seeking; what F.kl_div computes); reverse = KL(Q ‖ P) (mode-seeking).",
    choices=("forward", "reverse"),
)
_P = Role(
    "target",
    "(N, C)",
    "P, the target (reference) distribution: one row per sample, one column per class (kind: --target-kind).",
    ndim=(2,),
)
_Q = Role(
    "pred",
    "(N, C)",
    "Q, the model's predicted distribution, P's shape (kind: --pred-kind).",
    ndim=(2,),
)

TOKEN_MASK = Role(
    "mask",
    "(N, T) or ragged lists",
    "Given as --mask SOURCE: 1 for a token that counts (a response token), 0 for padding or prompt, in "
    "the log-probabilities' layout. Masked positions are neither validated nor counted.",
    ndim=(1, 2),
    optional=True,
    ragged=True,
    option=True,
)

_DIV_TEMPERATURE = Param(
    "temperature",
    "float",
    1.0,
    "Softmax temperature T: logits (only logits; probabilities and log-probabilities are used as given) "
    "are divided by T before the softmax. The value is not multiplied by T² unless --scale-t2 is given.",
    low=0.0,
    low_open=True,
)
_DIV_SCALE_T2 = Param(
    "scale-t2",
    "bool",
    False,
    "Multiply the divergence by T² (Hinton et al. 2015: keeps gradient magnitudes independent of T, as in "
    "distillation). Off by default: the plain divergence between the softened distributions.",
)

LOSSES: tuple[LossSpec, ...] = (
    # --- classification --------------------------------------------------------
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
            CLASSES,
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
        kernel_options=("extras", "prob_atol"),
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
        reliability=f"{_CLS}:reliability_multiclass",
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
        kernel_options=("extras",),
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
        headline=_MEAN,
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
        reliability=f"{_CLS}:reliability_binary",
    ),
    LossSpec(
        name="nll",
        family="classification",
        summary="Negative log-likelihood of class indices under given log-probabilities.",
        inputs=(
            Role(
                "pred",
                "(N, C)",
                "Log-probabilities: one row per sample, one column per class (e.g. a log_softmax output).",
                ndim=(2,),
            ),
            Role(
                "target", "(N,)", "Class indices; rows equal to --ignore-index are ignored.", ndim=(1,), dtype="label"
            ),
        ),
        params=(CLASS_WEIGHT, IGNORE_INDEX, CLASSES),
        kernel=f"{_CLS}:nll",
        kernel_options=("extras", "prob_atol"),
        grad=f"{_CLS}:nll_grad",
        reference="torch.nn.functional.nll_loss(input, target, weight, ignore_index)",
        formula="l_n = -w[y_n] · logp_n[y_n]   (w ≡ 1 without --weight; 0 at ignored rows)",
        headline=(
            "Σ_n l_n / Σ_n w[y_n] over rows not equal to ignore-index "
            "(PyTorch's weighted mean; the plain mean when unweighted)"
        ),
        gradient="∂l_n/∂logp_n = -w[y_n] · onehot(y_n); 0 on ignored rows",
        properties=(
            "Non-negative and unbounded: a log-probability of -inf on the true class gives inf.",
            "Equals cross-entropy when the input is log_softmax of the logits.",
            "Unlike PyTorch, the input is validated: values must be <= 0 and their exps sum to 1 per row "
            "(within --prob-atol); PyTorch accepts any numbers (nll_loss([[1,2,3]],[2]) = -3).",
        ),
        used_for="Multi-class classification when the model already outputs log-probabilities.",
        activation="log_softmax over the class axis (applied by the model, not by the loss)",
        paper="Standard maximum-likelihood loss (negative log-likelihood).",
        example=(
            "sample_data/classification_logprobs.parquet:logprobs",
            "sample_data/classification_logprobs.parquet:label",
        ),
        classification=True,
        reliability=f"{_CLS}:reliability_log_probs",
    ),
    LossSpec(
        name="focal",
        family="classification",
        summary="Sigmoid focal loss: binary cross-entropy down-weighted on easy examples.",
        inputs=(
            Role("pred", "(N,) or (N, K)", "Logits: one per sample, or K independent labels per sample."),
            Role(
                "target", "(N,) or (N, K)", "Binary targets in [0, 1] (soft targets allowed), the prediction's shape."
            ),
        ),
        params=(
            Param(
                "alpha",
                "float",
                0.25,
                "Weight of the positive class (α_t = α·y + (1-α)(1-y)); -1 disables the weighting.",
                low=0.0,
                high=1.0,
                allow=(-1.0,),
            ),
            Param(
                "gamma",
                "float",
                2.0,
                "Focusing exponent γ on (1 - p_t); 0 gives (α-weighted) binary cross-entropy.",
                low=0.0,
            ),
        ),
        kernel=f"{_CLS}:focal",
        kernel_options=("extras",),
        grad=f"{_CLS}:focal_grad",
        reference="torchvision.ops.sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction='none')",
        formula=(
            "p = σ(x), ce = BCEWithLogits(x, y) = -(y·log σ(x) + (1-y)·log σ(-x))\n"
            "p_t = p·y + (1-p)(1-y),  α_t = α·y + (1-α)(1-y)\n"
            "l = α_t · (1 - p_t)^γ · ce   (α_t omitted when alpha = -1)\n"
            "(N, K): the per-sample value is the mean over the K labels"
        ),
        headline="the mean over samples (= the element-wise mean of torchvision's reduction='mean'); " + _ELEM_SUM,
        gradient=(
            "∂l/∂x = α_t · [(σ(x) - y)·(1-p_t)^γ + γ·ce·(1-2y)·σ(x)σ(-x)·(1-p_t)^(γ-1)] (divided by K for (N, K))"
        ),
        properties=(
            "Non-negative; with gamma = 0 and alpha = -1 it is exactly binary cross-entropy with logits.",
            "Down-weights well-classified examples ((1-p_t)^γ → 0 as p_t → 1), so rare hard examples dominate.",
            "(1 - p_t)^γ is computed in log space from log σ(±x): exact for extreme logits "
            "(x = 20, y = 1 gives 2.19e-27 in float64 where torchvision in float32 prints 0).",
            "Smooth for gamma >= 1; unbounded above (linear in |x| for confident mistakes).",
        ),
        used_for="Dense object detection (classification head), imbalanced binary and multi-label classification.",
        activation="sigmoid per output (applied inside the loss to logits)",
        paper="Lin, Goyal, Girshick, He, Dollár 2017, Focal Loss for Dense Object Detection (RetinaNet).",
        example=(
            "sample_data/classification_multilabel.csv:logit_*",
            "sample_data/classification_multilabel.csv:label_*",
        ),
        classification=True,
        reliability=f"{_CLS}:reliability_binary",
    ),
    LossSpec(
        name="ece",
        aliases=("calibration-error",),
        family="classification",
        summary="Expected calibration error (top-label, binned): ECE, RMS calibration error or MCE.",
        inputs=(
            Role("pred", "(N, C) or (N,)", "Class scores (N, C), or the positive class's score (N,) of a binary classifier."),
            Role("target", "(N,)", "Class indices (N, C scores), or 0/1 labels (N,) scores).", dtype="label"),
        ),
        params=(
            PRED_KIND,
            Param("bins", "int", 15, "Number of confidence bins.", low=1, high=1000),
            Param(
                "binning",
                "choice",
                "uniform",
                "uniform: equal-width bins over [0, 1]; quantile: bins of about equal counts (approximate in "
                "one streaming pass: edges on a 1000-bin grid; the report says so).",
                choices=("uniform", "quantile"),
            ),
            Param(
                "norm",
                "choice",
                "l1",
                "l1: expected calibration error; l2: RMS calibration error; max: maximum calibration error.",
                choices=("l1", "l2", "max"),
            ),
        ),
        kernel=f"{_CLS}:ece",
        kernel_options=("prob_atol",),
        grad=f"{_CLS}:ece_grad",
        reference="torchmetrics.functional.classification.multiclass_calibration_error / binary_calibration_error",
        formula=(
            "conf_n = max_c q_nc, correct_n = [argmax_c q_nc = y_n]  ((N,) scores: conf_n = p_n, correct_n = y_n)\n"
            "bin b: n_b rows, conf_b = mean conf, acc_b = mean correct (bins (low, high] as sklearn's calibration_curve)\n"
            "l1 = Σ_b n_b/N |acc_b - conf_b|;  l2 = sqrt(Σ_b n_b/N (acc_b - conf_b)²);  max = max_b |acc_b - conf_b|\n"
            "per-sample value: |conf_n - correct_n| (the headline is not its mean)"
        ),
        headline="a function of the per-bin sums (rows, Σ confidence, Σ correct) by --norm, not a mean of per-sample values",
        gradient=(
            "of the per-sample value |conf - correct| (not of the binned headline): "
            "sign(conf - correct) · conf · (e_top - q) for logits"
        ),
        properties=(
            "In [0, 1]; 0 when, in every bin, the accuracy equals the mean confidence.",
            "Depends on the binning: report --bins and --binning with the number.",
            "--ci is refused: the streaming bootstrap resamples Σ num / Σ den, which this value is not.",
        ),
        used_for="Checking that a classifier's confidence matches its accuracy.",
        activation="softmax over classes (logits), sigmoid for (N,) logits; probabilities are validated",
        paper="Naeini, Cooper, Hauskrecht 2015; Guo et al. 2017 (On Calibration of Modern Neural Networks).",
        example=("sample_data/classifier.parquet:logits", "sample_data/classifier.parquet:label"),
        classification=False,
        headline_from=f"{_CLS}:ece_headline",
    ),
    LossSpec(
        name="brier",
        aliases=("brier-score",),
        family="classification",
        summary="Brier score: squared error between predicted probabilities and the one-hot (or soft) target.",
        inputs=(
            Role("pred", "(N, C) or (N,)", "Class scores (N, C), or the positive class's score (N,) of a binary classifier."),
            Role(
                "target",
                "(N,) or (N, C)",
                "Class indices (N,) or probability rows (N, C) for (N, C) scores; labels in [0, 1] for (N,) scores.",
                dtype="label",
            ),
        ),
        params=(PRED_KIND, TARGET_KIND),
        kernel=f"{_CLS}:brier",
        kernel_options=("prob_atol",),
        grad=f"{_CLS}:brier_grad",
        reference="sklearn.metrics.brier_score_loss (binary); multi-class: Brier 1950, Σ_c (q_c - y_c)²",
        formula=(
            "(N, C): l_n = Σ_c (q_nc - y_nc)², q = softmax(x) (or the given probabilities), y one-hot or soft\n"
            "(N,):   l_n = (p_n - y_n)², p = σ(x) (or the given probability)"
        ),
        headline="the mean over rows",
        gradient="probs: 2(q - y); logits: 2 q ⊙ (d - Σ_c q_c d_c) with d = q - y",
        properties=(
            "In [0, 2] for (N, C) scores, [0, 1] for (N,); a strictly proper scoring rule.",
            "For (N,) binary scores it is scikit-learn's brier_score_loss; the two-column (N, 2) form is twice that.",
        ),
        used_for="Scoring probabilistic classifiers (accuracy and calibration together).",
        activation="softmax over classes (logits), sigmoid for (N,) logits; probabilities are validated",
        paper="Brier 1950, Verification of forecasts expressed in terms of probability.",
        example=("sample_data/classifier.parquet:logits", "sample_data/classifier.parquet:label"),
    ),
    LossSpec(
        name="softmax-focal",
        family="classification",
        summary="Multi-class focal loss: softmax cross-entropy scaled by (1 - p_y)^γ.",
        inputs=(
            Role("pred", "(N, C)", "Logits: one row per sample, one column per class.", ndim=(2,)),
            Role("target", "(N,)", "Class indices in [0, C).", ndim=(1,), dtype="label"),
        ),
        params=(
            Param(
                "alpha",
                "floats",
                None,
                "Optional class weights α: C comma-separated numbers (or a file); l is multiplied by α[y].",
                low=0.0,
            ),
            Param(
                "gamma",
                "float",
                2.0,
                "Focusing exponent γ on (1 - p_y); 0 gives (α-weighted) cross-entropy.",
                low=0.0,
            ),
            CLASSES,
        ),
        kernel=f"{_CLS}:softmax_focal",
        kernel_options=("extras",),
        grad=f"{_CLS}:softmax_focal_grad",
        reference=(
            "Lin et al. 2017 multi-class form; per sample equals "
            "alpha[y] * (1 - exp(-ce))**gamma * ce with ce = F.cross_entropy(x, y, reduction='none')"
        ),
        formula="p = softmax(x),  l_n = -α[y_n] · (1 - p_y)^γ · log p_y   (α ≡ 1 when not given)",
        headline="the mean over samples (α weights the samples but does not change the denominator)",
        gradient="∂l/∂x = A · (softmax(x) - onehot(y)),  A = α_y · (1-p_y)^γ · (1 + γ · p_y · (-log p_y) / (1 - p_y))",
        properties=(
            "Non-negative; with gamma = 0 (and no alpha) it equals cross-entropy.",
            "Down-weights well-classified samples, focusing training on hard ones.",
            "Computed with log-sum-exp and 1 - p_y = -expm1(log p_y): finite for logits of ±1e4, "
            "and a confident correct row keeps its tiny value instead of rounding to 0.",
            "No ignore-index: every row must have a valid class index.",
        ),
        used_for="Imbalanced multi-class classification; detection classification heads with a softmax.",
        activation="softmax over the class axis (applied inside the loss to logits)",
        paper="Lin, Goyal, Girshick, He, Dollár 2017, Focal Loss for Dense Object Detection.",
        example=("sample_data/classifier.parquet:logits", "sample_data/classifier.parquet:label"),
        classification=True,
    ),
    LossSpec(
        name="entropy",
        family="classification",
        summary="Shannon entropy of each predicted distribution (prediction uncertainty; no target).",
        inputs=(
            Role(
                "pred",
                "(N, C)",
                "A distribution per row: logits, probabilities or log-probabilities (--pred-kind).",
                ndim=(2,),
            ),
        ),
        params=(
            Param(
                "base",
                "float",
                math.e,
                "Logarithm base: e gives nats, 2 gives bits. Must be > 0 and not 1.",
                low=0.0,
                low_open=True,
            ),
            Param(
                "pred-kind",
                "choice",
                "logits",
                "What the prediction columns hold: raw logits (softmax applied inside), probabilities, "
                "or log-probabilities. Never guessed from the values.",
                choices=("logits", "probs", "log-probs"),
            ),
        ),
        kernel=f"{_CLS}:entropy",
        kernel_options=("prob_atol",),
        grad=f"{_CLS}:entropy_grad",
        reference=(
            "scipy.stats.entropy(p, base=base, axis=1) on probability rows "
            "(SciPy renormalises rows; lossctl validates that they sum to 1 instead)"
        ),
        formula="H(p_n) = -Σ_c p_nc · log p_nc / log(base),  0 · log 0 = 0,  p = softmax(x) for logits",
        headline="the mean entropy over samples",
        gradient=(
            "logits: ∂H/∂x_c = -p_c (log p_c + H); probs: -(log p_c + 1); "
            "log-probs: -p_c (log p_c + 1); all divided by log(base)"
        ),
        properties=(
            "Bounded: 0 <= H <= log(C) / log(base); 0 for a one-hot prediction, maximal for the uniform one.",
            "Needs no target: measures how uncertain the model is, not whether it is right.",
            "Concave in p; from logits it is computed with log-softmax, finite for any finite logits.",
            "Equals cross-entropy of the prediction with itself, CE(p, p).",
        ),
        used_for="Uncertainty estimation, entropy regularisation / minimisation, active learning, calibration checks.",
        activation="softmax over the class axis for logits; none for probabilities",
        paper="Shannon 1948, A Mathematical Theory of Communication.",
        example=("sample_data/classification_probs.csv:p_*", "--pred-kind", "probs", "--base", "2"),
    ),
    LossSpec(
        name="token-cross-entropy",
        aliases=("lm",),
        family="classification",
        summary="Language-model token cross-entropy per sequence, with the token-weighted mean and perplexity.",
        inputs=(
            Role(
                "pred",
                "(N, T, V) or (N, T) ragged",
                "Logits (N, T, V) with labels, ragged logits (one list of T_n logit vectors of length V per "
                "sequence) with ragged labels, or per-token log-probabilities log p(token) "
                "(N, T): one list per sequence, lengths may differ.",
                ndim=(2, 3),
                ragged=True,
            ),
            Role(
                "target",
                "(N, T) or (N, T) ragged",
                "Token ids (N, T), or one list of T_n ids per sequence with ragged logits; required with "
                "logits, absent with per-token log-probabilities. "
                "Tokens equal to --ignore-index (padding) are skipped.",
                ndim=(2,),
                dtype="label",
                optional=True,
                ragged=True,
            ),
        ),
        params=(
            Param(
                "ignore-index",
                "int",
                -100,
                "Label of tokens to skip (padding, prompt tokens); they count neither in the loss nor in the token count.",
            ),
            Param(
                "shift",
                "bool",
                False,
                "Labels are the input ids: position t predicts token t+1 (logits[:, :-1] against labels[:, 1:], "
                "as Hugging Face causal LMs compute their loss); each sequence's last position is not scored.",
            ),
        ),
        kernel=f"{_CLS}:token_cross_entropy",
        kernel_options=("extras",),
        grad=f"{_CLS}:token_cross_entropy_grad",
        reference=(
            "torch.nn.functional.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100) "
            "(the headline); perplexity = exp of it"
        ),
        formula=(
            "per token:    l_t = -log softmax(x_t)[y_t]   (logits), or -log p(token_t) (per-token log-probs)\n"
            "--shift:      l_t = -log softmax(x_t)[y_{t+1}], t < T_n - 1   (labels = input ids)\n"
            "per sequence: l_n = Σ_{t kept} l_t / n_tokens(n)\n"
            "headline:     Σ_n Σ_t l_t / Σ_n n_tokens(n);  perplexity = exp(headline)"
        ),
        headline=(
            "the token-weighted mean: total token loss / total non-ignored tokens "
            "(= F.cross_entropy over all tokens); sequences without tokens are ignored rows"
        ),
        gradient=(
            "logits: ∂l_n/∂x_t = (softmax(x_t) - onehot(y_t)) / n_tokens(n) at kept tokens, 0 elsewhere; "
            "per-token log-probs: ∂l_n/∂log p_t = -1 / T_n"
        ),
        properties=(
            "Non-negative and unbounded; exp(headline) is the perplexity (1 = perfect, V = uniform guessing).",
            "The headline weights sequences by their token counts; the per-sequence mean weights each sequence equally.",
            "Computed with log-sum-exp over the vocabulary: finite and exact for logits of ±1e4.",
            "Per-token log-probabilities must be <= 0 (log p of the observed token).",
        ),
        used_for="Language modelling (next-token prediction), sequence-to-sequence models, LM evaluation (perplexity).",
        activation="softmax over the vocabulary (applied inside the loss to logits)",
        paper="Standard maximum-likelihood language modelling; perplexity: Jelinek et al. 1977.",
        example=("sample_data/classification_tokens.parquet:logprobs",),
        derived=("perplexity",),
    ),
    # --- divergence ------------------------------------------------------------
    LossSpec(
        name="kl-divergence",
        aliases=("kl",),
        family="divergence",
        summary="Kullback-Leibler divergence between a predicted distribution Q and a target P, per row.",
        inputs=(_Q, _P),
        params=(_DIRECTION_KL, _BASE, _Q_KIND, _P_KIND, _DIV_TEMPERATURE, _DIV_SCALE_T2),
        kernel=f"{_DIV}:kl_divergence",
        kernel_options=("prob_atol",),
        grad=f"{_DIV}:kl_divergence_grad",
        reference=(
            'torch.nn.functional.kl_div(log Q, P, reduction="batchmean") (forward, nats); '
            "scipy.special.rel_entr(P, Q).sum(axis=1) per row"
        ),
        formula=(
            "forward: l_n = Σ_c P_nc (log P_nc - log Q_nc) / ln(base)\n"
            "reverse: l_n = Σ_c Q_nc (log Q_nc - log P_nc) / ln(base)\n"
            "a 0 in the first distribution contributes 0; mass where the second is 0 gives inf\n"
            "--temperature T: logits x become softmax(x / T); --scale-t2 multiplies l_n by T²"
        ),
        headline=(
            'the mean over rows of the per-row sums (= PyTorch\'s reduction="batchmean", not its element-wise "mean")'
        ),
        gradient=(
            "forward, w.r.t. Q: logits softmax(x)·Σ_c P_c - P; probs -P/Q; log-probs -P. "
            "reverse, with a = log Q - log P: logits Q·(a - KL); probs a + 1; log-probs Q·(a + 1). "
            "All divided by ln(base)"
        ),
        properties=(
            "Non-negative; zero only when P = Q (Gibbs' inequality).",
            "Asymmetric: KL(P ‖ Q) ≠ KL(Q ‖ P) in general; forward KL is mean-seeking (Q must cover "
            "all of P's mass), reverse KL is mode-seeking.",
            "Unbounded: infinite where P has mass and Q has none.",
            "Convex in the pair (P, Q); forward KL = cross-entropy H(P, Q) minus the entropy H(P), "
            "so minimising it over Q minimises cross-entropy.",
            "Computed in log space: logits of ±1e4 give finite, exact results.",
        ),
        used_for="Distillation and soft-target classification, VAEs, variational inference, "
        "policy regularisation (RLHF), comparing predicted and reference distributions.",
        activation="softmax over the class axis (applied inside to logits; probabilities are validated)",
        paper="Kullback & Leibler 1951; distillation use: Hinton, Vinyals, Dean 2015.",
        example=(
            "sample_data/divergence_soft.csv:logit_*",
            "sample_data/divergence_soft.csv:target_*",
        ),
    ),
    LossSpec(
        name="js-divergence",
        aliases=("js",),
        family="divergence",
        summary="Jensen-Shannon divergence: symmetric, bounded KL to the average distribution.",
        inputs=(_Q, _P),
        params=(_BASE, _Q_KIND, _P_KIND, _DIV_TEMPERATURE, _DIV_SCALE_T2),
        kernel=f"{_DIV}:js_divergence",
        kernel_options=("prob_atol",),
        grad=f"{_DIV}:js_divergence_grad",
        reference="scipy.spatial.distance.jensenshannon(P, Q, base, axis=1) ** 2",
        formula=(
            "l_n = ½ KL(P_n ‖ M_n) + ½ KL(Q_n ‖ M_n),  M_n = ½ (P_n + Q_n)\n(logarithms in --base; 0 · log 0 = 0)\n"
            "--temperature T: logits x become softmax(x / T); --scale-t2 multiplies l_n by T²"
        ),
        headline="the mean over rows",
        gradient=(
            "w.r.t. Q, with a = ½ log(Q/M): probs a; log-probs Q·a; logits Q·(a - Σ_c Q_c a_c); divided by ln(base)"
        ),
        properties=(
            "Symmetric: JS(P, Q) = JS(Q, P).",
            "Bounded: 0 ≤ JS ≤ ln 2 (1 bit with --base 2); ln 2 exactly for disjoint supports.",
            "Always finite, even where one distribution has zeros the other does not.",
            "Its square root is a metric (the Jensen-Shannon distance).",
        ),
        used_for="Comparing distributions (drift, calibration between models); the original GAN objective.",
        activation="softmax over the class axis (applied inside to logits; probabilities are validated)",
        paper="Lin 1991, Divergence measures based on the Shannon entropy; Goodfellow et al. 2014 (GAN).",
        example=(
            "sample_data/divergence_soft.csv:logit_*",
            "sample_data/divergence_soft.csv:target_*",
            "--base",
            "2",
        ),
    ),
    LossSpec(
        name="gaussian-kl",
        family="divergence",
        summary="Closed-form KL divergence between Gaussians (diagonal or full covariance), e.g. the VAE term.",
        inputs=(
            Role("mu", "(N, D)", "Means of q, one row per sample ((N,) is D = 1)."),
            Role(
                "logvar",
                "(N, D) or (N, D, D)",
                "q's log-variances (N, D) (diagonal covariance), or q's full covariance matrices (N, D, D).",
                ndim=(1, 2, 3),
            ),
            Role(
                "prior-mu",
                "(N, D)",
                "Means of the prior p (default 0).",
                optional=True,
            ),
            Role(
                "prior-logvar",
                "(N, D) or (N, D, D)",
                "The prior's log-variances (N, D) or covariance matrices (N, D, D) (default 0: unit "
                "variance). Diagonal and full inputs may be mixed.",
                ndim=(1, 2, 3),
                optional=True,
            ),
        ),
        params=(
            Param(
                "direction",
                "choice",
                "forward",
                "forward = KL(q ‖ p) (the VAE term); reverse = KL(p ‖ q).",
                choices=("forward", "reverse"),
            ),
        ),
        kernel=f"{_DIV}:gaussian_kl",
        grad=f"{_DIV}:gaussian_kl_grad",
        reference=(
            "torch.distributions.kl_divergence(Normal(mu, exp(½logvar)), Normal(prior_mu, exp(½prior_logvar))).sum(-1) "
            "(MultivariateNormal for full covariances)"
        ),
        formula=(
            "KL(N₁ ‖ N₂), forward: 1 = q, 2 = p; reverse: 1 = p, 2 = q\n"
            "diagonal: l_n = ½ Σ_d [log(σ₂²/σ₁²) + (σ₁² + (μ₁ - μ₂)²)/σ₂² - 1]   (σ² = exp(logvar))\n"
            "full:     l_n = ½ [tr(Σ₂⁻¹Σ₁) + (μ₂ - μ₁)ᵀΣ₂⁻¹(μ₂ - μ₁) - D + log det Σ₂ - log det Σ₁]  (Cholesky)\n"
            "default prior N(0, I): l_n = -½ Σ_d (1 + logvar - μ² - exp(logvar))"
        ),
        headline="the mean over rows of the per-row sums over D (the usual per-sample VAE KL term)",
        gradient="∂l/∂mu = Σ₂⁻¹ (μ_q - μ_p); diagonal: (μ_q - μ_p) / σ₂² (σ₂² the prior's variance for forward, q's for reverse)",
        properties=(
            "Non-negative; zero only when the two Gaussians are identical.",
            "Asymmetric: KL(q ‖ p) ≠ KL(p ‖ q) unless the covariances are equal.",
            "Quadratic in the mean difference; grows without bound as a variance goes to 0.",
            "Computed as expm1(t) - t with t the log-variance difference, so nearly equal variances "
            "keep their digits; full covariances go through Cholesky, and a matrix that is not "
            "symmetric positive definite is an error naming its row.",
        ),
        used_for="VAEs (the regulariser of the ELBO), variational inference, Gaussian policies in RL.",
        activation="none: mu is used as is; the variance is exp(logvar) (or a covariance matrix)",
        paper="Kingma & Welling 2014, Auto-Encoding Variational Bayes, appendix B.",
        example=(
            "sample_data/divergence_gaussian.csv:mu_*",
            "sample_data/divergence_gaussian.csv:logvar_*",
        ),
    ),
    # --- distillation-rl -------------------------------------------------------
    LossSpec(
        name="distillation",
        aliases=("kd",),
        family="distillation-rl",
        summary="Knowledge distillation: temperature-softened KL from teacher to student, plus optional CE on labels.",
        inputs=(
            Role("student", "(N, C)", "Student logits (the model being trained).", ndim=(2,)),
            Role("teacher", "(N, C)", "Teacher logits, the student's shape.", ndim=(2,)),
            Role(
                "labels",
                "(N,)",
                "Optional true class indices for the hard (cross-entropy) term.",
                ndim=(1,),
                dtype="label",
                optional=True,
            ),
        ),
        params=(
            Param(
                "temperature",
                "float",
                2.0,
                "Softmax temperature T applied to both teacher and student logits in the soft term.",
                low=0.0,
                low_open=True,
            ),
            Param(
                "alpha",
                "float",
                0.5,
                "Weight α of the soft (KL) term; 1-α weighs the hard cross-entropy term. "
                "Without labels the loss is the soft term alone (α treated as 1.0).",
                low=0.0,
                high=1.0,
            ),
        ),
        kernel=f"{_RL}:distillation",
        grad=f"{_RL}:distillation_grad",
        reference=(
            "the usual PyTorch recipe: α·T²·F.kl_div(F.log_softmax(s/T), F.softmax(t/T), "
            'reduction="batchmean") + (1-α)·F.cross_entropy(s, y)'
        ),
        formula=(
            "l_n = α·T²·KL(softmax(t_n/T) ‖ softmax(s_n/T)) + (1-α)·CE(s_n, y_n)\n"
            "components: soft = α·T²·KL(...), hard = (1-α)·CE(s, y) (no labels: α = 1, soft only)"
        ),
        headline="the mean over rows; the report also shows the means of the soft and hard terms",
        gradient="∂l/∂s = α·T·(softmax(s/T) - softmax(t/T)) + (1-α)·(softmax(s) - onehot(y))",
        properties=(
            "Non-negative; the soft term is 0 when student and teacher logits agree up to a constant.",
            "The T² factor keeps the soft term's gradient magnitude roughly independent of T.",
            "A higher temperature exposes the teacher's 'dark knowledge' (relative probabilities of wrong classes).",
            "Computed with log-softmax: logits of ±1e4 give finite, exact results.",
        ),
        used_for="Model compression: training a small student to mimic a large teacher (classification, language models).",
        activation="softmax over classes at temperature T (soft term) and 1 (hard term), applied inside",
        paper="Hinton, Vinyals, Dean 2015, Distilling the Knowledge in a Neural Network.",
        example=(
            "sample_data/rl_distillation.parquet:student",
            "sample_data/rl_distillation.parquet:teacher",
            "sample_data/rl_distillation.parquet:label",
            "--temperature",
            "4",
        ),
    ),
    LossSpec(
        name="ppo-clip",
        family="distillation-rl",
        summary="PPO's clipped surrogate objective (negated), per sampled action.",
        inputs=(
            Role(
                "new-logp",
                "(N,) or (N, T) or ragged lists",
                "Log-probability of each sampled action under the current policy: one per row, or one "
                "list of per-token log-probabilities per sequence (padded with --mask, or ragged).",
                ndim=(1, 2),
                ragged=True,
            ),
            Role(
                "old-logp",
                "(N,) or (N, T) or ragged lists",
                "Log-probability of the same actions under the policy that collected the data (new-logp's layout).",
                ndim=(1, 2),
                ragged=True,
            ),
            Role(
                "advantages",
                "(N,) or (N, T) or ragged lists",
                "Advantage estimate A of each action (e.g. GAE): one per token (new-logp's layout), "
                "or one per sequence, broadcast to its tokens.",
                ndim=(1, 2),
                ragged=True,
            ),
            TOKEN_MASK,
        ),
        params=(
            Param(
                "clip",
                "float",
                0.2,
                "Clip range ε: the probability ratio is clipped to [1-ε, 1+ε].",
                low=0.0,
                high=1.0,
                low_open=True,
                high_open=True,
            ),
            Param(
                "token-mean",
                "choice",
                "batch",
                "How token losses make the headline: batch = Σ over all counted tokens / their number "
                "(TRL's masked_mean(loss, mask)); sequence = mean over sequences of each sequence's token "
                "mean (OpenRLHF's masked_mean(loss, mask, dim=-1).mean()). Equal for one action per row.",
                choices=("batch", "sequence"),
            ),
        ),
        kernel=f"{_RL}:ppo_clip",
        grad=f"{_RL}:ppo_clip_grad",
        reference="PPO clipped surrogate (Schulman et al. 2017, eq. 7): -torch.min(r·A, torch.clamp(r, 1-ε, 1+ε)·A), r = exp(new - old)",
        formula=(
            "per action t: l_t = -min(r_t·A_t, clip(r_t, 1-ε, 1+ε)·A_t),  r_t = exp(new_t - old_t)\n"
            "per row n: l_n = the mean of l_t over its counted tokens (--mask; all tokens of a ragged row)\n"
            "components per row: clipped = tokens where the clipped term is the minimum (TRL), "
            "clipped_sb3 = tokens with |r_t - 1| > ε (Stable-Baselines3), tokens, ratio = mean r_t"
        ),
        headline=(
            "--token-mean batch (default): Σ over all counted tokens / their number (TRL); --token-mean "
            "sequence: the mean over sequences of their token means (OpenRLHF); both are the mean over "
            "samples for one action per row. Derived: clipfrac_trl (tokens where the clipped term is taken) "
            "and clipfrac_sb3 (tokens with |r - 1| > ε), fractions of all counted tokens"
        ),
        derived=("clipfrac",),
        gradient=(
            "∂l_n/∂new_t = -r_t·A_t / T_n where the unclipped term is the minimum (ties included), 0 where "
            "the clipped term is (the sub-gradient at r = 1±ε is the unclipped one) and at masked tokens; "
            "T_n = the row's counted tokens (1 for one action per row)"
        ),
        properties=(
            "A pessimistic (lower) bound on the unclipped surrogate: the objective gains nothing from "
            "moving r beyond 1±ε in the direction the advantage favours.",
            "Piecewise linear in r with kinks at 1±ε; not differentiable there.",
            "The ratio is formed from the log-ratio in float64: a log-ratio above ~709 makes r = inf, "
            "giving -(1+ε)·A for A > 0 (clipped, finite), +inf for A < 0 and 0 for A = 0.",
            "Can be negative: it is a negated objective, not a distance.",
        ),
        used_for="Policy-gradient reinforcement learning (PPO), including RLHF of language models.",
        activation="none: log-probabilities of the sampled actions (log-softmax of the policy's logits)",
        paper="Schulman et al. 2017, Proximal Policy Optimization Algorithms.",
        example=(
            "sample_data/rl_ppo.csv:new_logp",
            "sample_data/rl_ppo.csv:old_logp",
            "sample_data/rl_ppo.csv:advantage",
        ),
    ),
    LossSpec(
        name="policy-kl",
        family="distillation-rl",
        summary="Per-sequence KL penalty between a policy and a reference policy, from sampled-token log-probs.",
        inputs=(
            Role(
                "policy-logp",
                "(N,) or (N, T) or ragged lists",
                "Log-probabilities of the sampled tokens under the policy: one list per sequence "
                "(variable length), or one value per row (one token per sequence).",
                ndim=(1, 2),
                ragged=True,
            ),
            Role(
                "ref-logp",
                "(N,) or (N, T) or ragged lists",
                "Log-probabilities of the same tokens under the reference policy; the same length per row.",
                ndim=(1, 2),
                ragged=True,
            ),
            TOKEN_MASK,
        ),
        params=(
            Param(
                "token-mean",
                "choice",
                "sum",
                "Per sequence: sum = the sum over its tokens (the RLHF reward penalty); sequence = its "
                "token mean, averaged over sequences (OpenRLHF); batch = its token mean, with the headline "
                "Σ over all counted tokens / their number (TRL's masked_mean).",
                choices=("sum", "sequence", "batch"),
            ),
            Param(
                "estimator",
                "choice",
                "k1",
                "Per-token Monte-Carlo estimator of KL(π ‖ π_ref): k1 = log π - log π_ref (unbiased, "
                "can be negative); k2 = ½(log π - log π_ref)² (low variance, biased); "
                "k3 = (ρ - 1) - log ρ, ρ = π_ref/π (unbiased and non-negative).",
                choices=("k1", "k2", "k3"),
            ),
        ),
        kernel=f"{_RL}:policy_kl",
        grad=f"{_RL}:policy_kl_grad",
        reference="the RLHF KL penalty of InstructGPT / TRL: sum over tokens of logp - ref_logp (k1); k1-k3: Schulman 2020, Approximating KL divergence",
        formula=(
            "d_t = log π(a_t) - log π_ref(a_t) per sampled token\n"
            "k1: d_t;  k2: ½ d_t²;  k3: (ρ_t - 1) - log ρ_t = expm1(-d_t) + d_t,  ρ_t = π_ref/π\n"
            "l_n = Σ_t over the counted tokens of sequence n (--token-mean sum; 0 for an empty sequence), "
            "or their mean (--token-mean sequence / batch; an empty sequence is ignored)"
        ),
        headline=(
            "--token-mean sum (default): the mean over sequences of the per-sequence sums (the RLHF KL penalty); "
            "sequence: the mean of the per-sequence token means (OpenRLHF); batch: Σ over all counted tokens / "
            "their number (TRL's masked_mean)"
        ),
        gradient=(
            "∂l/∂log π(a_t): k1 1; k2 d_t; k3 1 - ρ_t = -expm1(-d_t), divided by the row's counted tokens for a "
            "token mean, 0 at masked tokens (per token, in the input's ragged layout)"
        ),
        properties=(
            "All three estimate KL(π ‖ π_ref) when the tokens are sampled from π; k1 and k3 are unbiased, k2 is biased but low-variance.",
            "k1 can be negative for a single sequence; k2 and k3 are never negative.",
            "k3 is computed as expm1(-d) + d, so small log-ratios keep their digits.",
            "A reference log-probability of -inf gives +inf (the reference cannot produce the token).",
        ),
        used_for="RLHF / policy optimisation of language models: keeping the policy close to the reference (SFT) model.",
        activation="none: log-probabilities (log-softmax of each model's logits, gathered at the sampled tokens)",
        paper="Ouyang et al. 2022, Training language models to follow instructions with human feedback; "
        "k1-k3: Schulman 2020, Approximating KL divergence.",
        example=(
            "sample_data/rl_policy_kl.parquet:policy_logp",
            "sample_data/rl_policy_kl.parquet:ref_logp",
            "--estimator",
            "k3",
        ),
    ),
    # --- regression ------------------------------------------------------------
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
        headline=_MEAN,
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
        headline=_MEAN,
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
    LossSpec(
        name="huber",
        family="regression",
        summary="Huber loss: quadratic for small residuals, linear beyond delta.",
        inputs=(REGRESSION_PRED, REGRESSION_TARGET),
        params=(
            Param(
                "delta",
                "float",
                1.0,
                "Threshold between the quadratic and the linear part (> 0).",
                low=0.0,
                low_open=True,
            ),
        ),
        kernel=f"{_REG}:huber",
        grad=f"{_REG}:huber_grad",
        reference="torch.nn.functional.huber_loss(input, target, delta=delta)",
        formula=(
            "l = ½r²             if |r| ≤ δ\nl = δ · (|r| - ½δ)   otherwise,   r = y - ŷ (mean over D for (N, D))"
        ),
        headline=_MEAN,
        gradient="∂l/∂ŷ = -clip(r, -δ, δ) (divided by D for (N, D))",
        properties=(
            "Between MSE and MAE: quadratic (MSE-like) near 0, linear (MAE-like, robust to outliers) beyond δ.",
            "Convex and once continuously differentiable; the second derivative jumps at |r| = δ.",
            "Symmetric in r; both branches give ½δ² at |r| = δ, so the loss is continuous there.",
            "Equals δ · smooth-l1(β = δ); identical to smooth-l1 at δ = β = 1.",
            "The gradient is bounded by δ, so single outliers cannot dominate training.",
            REGRESSION_PROPS_COMMON,
        ),
        used_for="Robust regression; value-function (TD) errors in reinforcement learning (DQN).",
        activation="none (identity output)",
        paper="Huber 1964, Robust Estimation of a Location Parameter.",
        example=("sample_data/regression.csv:pred", "sample_data/regression.csv:target", "--delta", "2"),
    ),
    LossSpec(
        name="smooth-l1",
        family="regression",
        summary="Smooth L1 loss: Huber divided by beta; exactly L1 at beta = 0.",
        inputs=(REGRESSION_PRED, REGRESSION_TARGET),
        params=(
            Param(
                "beta",
                "float",
                1.0,
                "Width of the quadratic zone around 0 (>= 0; 0 is exactly L1).",
                low=0.0,
            ),
        ),
        kernel=f"{_REG}:smooth_l1",
        grad=f"{_REG}:smooth_l1_grad",
        reference="torch.nn.functional.smooth_l1_loss(input, target, beta=beta)",
        formula=(
            "l = ½r²/β          if |r| < β\n"
            "l = |r| - ½β       otherwise   (β = 0: l = |r|),   r = y - ŷ (mean over D for (N, D))"
        ),
        headline=_MEAN,
        gradient="∂l/∂ŷ = -clip(r/β, -1, 1); -sign(r) when β = 0 (0 at r = 0); divided by D for (N, D)",
        properties=(
            "Robust to outliers: linear in |r| beyond β with slope 1 whatever β is.",
            "β · smooth-l1(β) = huber(δ = β); as β → 0 it becomes L1 (β = 0 is exactly L1, as in PyTorch).",
            "Convex and symmetric; differentiable everywhere for β > 0.",
            REGRESSION_PROPS_COMMON,
        ),
        used_for="Bounding-box regression in detection (Fast/Faster R-CNN); robust regression.",
        activation="none (identity output)",
        paper="Girshick 2015, Fast R-CNN.",
        example=("sample_data/regression_multi.csv:pred_*", "sample_data/regression_multi.csv:target_*"),
    ),
    LossSpec(
        name="log-cosh",
        family="regression",
        summary="Logarithm of the hyperbolic cosine of the residual.",
        inputs=(REGRESSION_PRED, REGRESSION_TARGET),
        params=(),
        kernel=f"{_REG}:log_cosh",
        grad=f"{_REG}:log_cosh_grad",
        reference="keras.losses.LogCosh(); optax.log_cosh(predictions, targets)",
        formula=(
            "l = log cosh(r), r = y - ŷ (mean over D for (N, D)),\n"
            "computed as |r| + log1p(exp(-2|r|)) - log 2 (no overflow; naive log(cosh r) overflows at |r| ≈ 710),\n"
            "and as log1p(2 sinh²(r/2)) for |r| < 1 (same function, full precision for tiny r)"
        ),
        headline=_MEAN,
        gradient="∂l/∂ŷ = -tanh(r) (divided by D for (N, D))",
        properties=(
            "Twice differentiable everywhere (unlike Huber), convex and symmetric.",
            "Quadratic near 0 (≈ ½r²) and linear in the tails (≈ |r| - log 2): behaves like Huber with δ ≈ 1.",
            "Robust to outliers: the gradient is bounded by 1 in magnitude.",
            REGRESSION_PROPS_COMMON,
        ),
        used_for="Regression where a smooth (twice-differentiable) robust loss is wanted.",
        activation="none (identity output)",
        paper="No single source: a standard smooth robust loss (as in Keras LogCosh and optax.log_cosh).",
        example=("sample_data/regression.csv:pred", "sample_data/regression.csv:target"),
    ),
    LossSpec(
        name="quantile",
        aliases=("pinball",),
        family="regression",
        summary="Quantile (pinball) loss: asymmetric absolute error, minimised by the q-th quantile.",
        inputs=(REGRESSION_PRED, REGRESSION_TARGET),
        params=(
            Param(
                "quantile",
                "float",
                0.5,
                "Target quantile q in [0, 1]: under-prediction costs q·|r|, over-prediction (1-q)·|r|.",
                low=0.0,
                high=1.0,
            ),
        ),
        kernel=f"{_REG}:quantile",
        grad=f"{_REG}:quantile_grad",
        reference="sklearn.metrics.mean_pinball_loss(y_true, y_pred, alpha=quantile)",
        formula="l = max(q · r, (q - 1) · r), r = y - ŷ (mean over D for (N, D))",
        headline=_MEAN,
        gradient="∂l/∂ŷ = -q where r > 0, 1 - q where r < 0, 0 at r = 0 (sub-gradient; divided by D for (N, D))",
        properties=(
            "Minimised by the conditional q-th quantile; q = 0.5 gives half the absolute error (MAE/2).",
            "Asymmetric for q ≠ 0.5: under- and over-prediction cost differently.",
            "Convex, piecewise linear, robust to outliers; not differentiable at r = 0.",
            REGRESSION_PROPS_COMMON,
        ),
        used_for="Quantile regression, prediction intervals, probabilistic forecasting.",
        activation="none (identity output)",
        paper="Koenker & Bassett 1978, Regression Quantiles.",
        example=(
            "sample_data/regression.csv:pred",
            "sample_data/regression.csv:target",
            "--quantile",
            "0.9",
        ),
    ),
    LossSpec(
        name="gaussian-nll",
        family="regression",
        summary="Gaussian negative log-likelihood of the target under N(pred, var).",
        inputs=(
            Role("pred", "(N,) or (N, D)", "Predicted means ŷ."),
            Role("target", "(N,) or (N, D)", "True values y, the prediction's shape."),
            Role(
                "var",
                "(N,) or (N, D)",
                "Predicted variances (>= 0): the prediction's shape, or one per row (N,) / (N, 1) "
                "shared by the D outputs.",
            ),
        ),
        params=(
            Param(
                "eps",
                "float",
                1e-6,
                "Variances below eps are clamped to eps (for stability), as PyTorch does.",
                low=0.0,
                low_open=True,
            ),
            Param("full", "bool", False, "Add the constant ½ log 2π (the full negative log-likelihood)."),
        ),
        kernel=f"{_REG}:gaussian_nll",
        grad=f"{_REG}:gaussian_nll_grad",
        reference="torch.nn.functional.gaussian_nll_loss(input, target, var, full=full, eps=eps)",
        formula=("l = ½ (log v + r²/v)  (+ ½ log 2π if full),  v = max(var, eps), r = y - ŷ\n(mean over D for (N, D))"),
        headline=_MEAN,
        gradient="∂l/∂ŷ = -r / max(var, eps) (divided by D for (N, D)); taken w.r.t. the mean prediction",
        properties=(
            "Can be negative: it is a negative log-density, not a probability.",
            "With a constant variance it is MSE scaled by 1/(2·var) plus a constant.",
            "Learned variances let the model down-weight noisy samples, at a log-variance cost.",
            "Negative variances are an error (PyTorch raises); variances below eps are clamped.",
            REGRESSION_PROPS_COMMON,
        ),
        used_for="Heteroscedastic regression, uncertainty estimation, probabilistic forecasting.",
        activation="identity for the mean; a positive map (softplus or exp) for the variance",
        paper="Nix & Weigend 1994, Estimating the mean and variance of the target probability distribution.",
        example=(
            "sample_data/regression_var.csv:mean",
            "sample_data/regression_var.csv:target",
            "sample_data/regression_var.csv:var",
        ),
    ),
    LossSpec(
        name="poisson-nll",
        family="regression",
        summary="Poisson negative log-likelihood of count targets given a (log-)rate.",
        inputs=(
            Role("pred", "(N,) or (N, D)", "Predicted log-rates (default) or rates (--no-log-input)."),
            Role("target", "(N,) or (N, D)", "Observed counts (non-negative), the prediction's shape."),
        ),
        params=(
            Param(
                "log-input",
                "bool",
                True,
                "The prediction is a log-rate (exp applied inside); --no-log-input for rates.",
            ),
            Param(
                "full",
                "bool",
                False,
                "Add the Stirling approximation of log(y!): y log y - y + ½ log(2πy), where y > 1.",
            ),
            Param(
                "eps",
                "float",
                1e-8,
                "Added to the rate inside the log when --no-log-input (avoids log 0).",
                low=0.0,
                low_open=True,
            ),
        ),
        kernel=f"{_REG}:poisson_nll",
        grad=f"{_REG}:poisson_nll_grad",
        reference="torch.nn.functional.poisson_nll_loss(input, target, log_input=log_input, full=full, eps=eps)",
        formula=(
            "log-input: l = exp(ŷ) - y·ŷ\n"
            "rate:      l = ŷ - y·log(ŷ + eps)\n"
            "full:      + (y log y - y + ½ log(2πy)) where y > 1\n"
            "(mean over D for (N, D))"
        ),
        headline=_MEAN,
        gradient="log-input: ∂l/∂ŷ = exp(ŷ) - y; rate: 1 - y/(ŷ + eps) (divided by D for (N, D))",
        properties=(
            "Negative log-likelihood of a Poisson count up to log(y!) (approximated with --full); can be negative.",
            "Convex in the log-rate; minimised at rate = y.",
            "Targets must be non-negative; with --no-log-input rates must be non-negative too "
            "(PyTorch returns NaN there; lossctl reports the row).",
            "From log-rates, exp(ŷ) overflows to inf for ŷ above ≈ 709.",
            REGRESSION_PROPS_COMMON,
        ),
        used_for="Count regression (events, visits, photon counts); Poisson GLMs.",
        activation="none for log-rates (exp applied inside); softplus or exp for rates",
        paper="Nelder & Wedderburn 1972, Generalized Linear Models (Poisson regression).",
        example=(
            "sample_data/regression_counts.csv:log_rate",
            "sample_data/regression_counts.csv:count",
            "--full",
        ),
    ),
    # --- contrastive -----------------------------------------------------------
    LossSpec(
        name="triplet-margin",
        aliases=("triplet",),
        family="contrastive",
        summary="Triplet margin loss: the anchor should be closer to the positive than to the negative by a margin.",
        inputs=(
            _emb("anchor", "Anchor embeddings a."),
            _emb("positive", "Embeddings p of the same identity/class as the anchor, the anchor's shape."),
            _emb("negative", "Embeddings n of a different identity/class, the anchor's shape."),
        ),
        params=(
            Param("margin", "float", 1.0, "Required gap between d(a,n) and d(a,p).", low=0.0, low_open=True),
            Param(
                "p",
                "float",
                2.0,
                "Degree of the norm used as distance (2 = Euclidean, 1 = Manhattan, inf = max).",
                low=0.0,
                low_open=True,
            ),
            Param(
                "eps",
                "float",
                1e-6,
                "Added to every coordinate of u - v before the norm (as torch.nn.functional.pairwise_distance).",
                low=0.0,
            ),
            Param(
                "swap",
                "bool",
                False,
                "Distance swap (Balntas et al. 2016): use min(d(a,n), d(p,n)) as the negative distance.",
            ),
        ),
        kernel=f"{_CON}:triplet_margin",
        grad=f"{_CON}:triplet_margin_grad",
        reference="torch.nn.functional.triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap)",
        formula=(
            "l = max(d(a, p) - d(a, n) + margin, 0)\n"
            "d(u, v) = ‖u - v + eps‖_p = (Σ_k |u_k - v_k + eps|^p)^(1/p)   (eps added to each coordinate)\n"
            "swap: d(a, n) ← min(d(a, n), d(p, n))"
        ),
        headline="the mean over triplets (= PyTorch's reduction='mean')",
        gradient=(
            "∂l/∂a = [l > 0] · (∇d(a,p) - ∇d(a,n)), ∇‖z‖_p = sign(z) · (|z| / ‖z‖_p)^(p-1) "
            "(p = 1: sign(z); p = inf: sign at the largest |z_k|); 0 where l = 0 (including exactly at the hinge), "
            "and coordinates with z_k = 0 contribute 0; with swap, the d(a,n) term is dropped when d(p,n) < d(a,n)"
        ),
        properties=(
            "Non-negative; zero once every negative is at least margin farther from the anchor than the positive, so easy triplets give no gradient.",
            "Piecewise smooth: a hinge at d(a,p) - d(a,n) + margin = 0, and the norm is not differentiable where u - v + eps = 0.",
            "As in PyTorch, eps is added to each coordinate of the difference, so d is slightly asymmetric "
            "(d([0,0],[1,0]) = 0.999999 but d([1,0],[0,0]) = 1.000001) and d(a, a) = D^(1/p) · eps, not 0.",
            "margin must be > 0 (PyTorch raises for margin <= 0). A 1-column input is taken as D = 1.",
            "The report shows the mean d_pos = d(a,p), d_neg = d(a,n) (after swap) and the fraction of active (non-zero) triplets.",
        ),
        used_for="Contrastive / metric learning: face recognition, re-identification, embedding retrieval.",
        activation="none (raw or L2-normalised embeddings)",
        paper="Schroff, Kalenichenko, Philbin 2015 (FaceNet); distance swap: Balntas et al. 2016.",
        example=(
            "sample_data/contrastive_triplets.parquet:anchor",
            "sample_data/contrastive_triplets.parquet:positive",
            "sample_data/contrastive_triplets.parquet:negative",
        ),
    ),
    LossSpec(
        name="contrastive",
        family="contrastive",
        summary="Contrastive (Hadsell) loss on pairs: pull similar pairs together, push dissimilar pairs beyond a margin.",
        inputs=(
            _emb("x1", "First embedding of each pair."),
            _emb("x2", "Second embedding of each pair, x1's shape."),
            LABEL_01,
        ),
        params=(Param("margin", "float", 1.0, "Distance beyond which dissimilar pairs cost nothing.", low=0.0),),
        kernel=f"{_CON}:contrastive",
        grad=f"{_CON}:contrastive_grad",
        reference="no torch.nn.functional equivalent; Hadsell, Chopra, LeCun 2006 with y = 1 for similar pairs and without the ½",
        formula=(
            "l = y · d² + (1 - y) · max(0, margin - d)²,  d = ‖x1 - x2‖₂\ny = 1: similar pair, y = 0: dissimilar pair"
        ),
        headline="the mean over pairs",
        gradient=(
            "∂l/∂x1 = 2 (x1 - x2) for y = 1; -2 · max(0, margin - d) · (x1 - x2) / d for y = 0, "
            "defined as 0 at d = 0 (no direction to push along)"
        ),
        properties=(
            "Non-negative; zero for identical similar pairs and for dissimilar pairs at distance >= margin.",
            "Label convention: y = 1 means similar. The paper (Hadsell et al. 2006) uses Y = 0 for similar pairs and multiplies both terms by ½; "
            "lossctl drops the ½, so its values are twice the paper's (paper D=5, Y=0 → 12.5; lossctl y=1, d=5 → 25).",
            "Similar pairs cost d² (unbounded, outlier-sensitive); dissimilar pairs cost at most margin² (bounded).",
            "Continuously differentiable in d; at d = 0 a dissimilar pair has no defined direction (gradient taken as 0).",
            "Labels must be 0 or 1; anything else is an error. The report shows the mean similar and dissimilar terms (which sum to the loss) and the mean distance.",
        ),
        used_for="Contrastive / metric learning on labelled pairs: siamese networks, verification, dimensionality reduction (DrLIM).",
        activation="none (raw embeddings)",
        paper="Hadsell, Chopra, LeCun 2006, Dimensionality Reduction by Learning an Invariant Mapping.",
        example=(
            "sample_data/contrastive_pairs.parquet:x1",
            "sample_data/contrastive_pairs.parquet:x2",
            "sample_data/contrastive_pairs.parquet:label",
        ),
    ),
    LossSpec(
        name="cosine-embedding",
        family="contrastive",
        summary="Cosine embedding loss: 1 - cos for similar pairs, max(0, cos - margin) for dissimilar ones.",
        inputs=(
            _emb("x1", "First embedding of each pair."),
            _emb("x2", "Second embedding of each pair, x1's shape."),
            LABEL_PM1_PAIR,
        ),
        params=(
            Param("margin", "float", 0.0, "Cosine above which dissimilar pairs are penalised.", low=-1.0, high=1.0),
        ),
        kernel=f"{_CON}:cosine_embedding",
        grad=f"{_CON}:cosine_embedding_grad",
        reference="torch.nn.functional.cosine_embedding_loss(input1, input2, target, margin)",
        formula=(
            "cos = Σ x1·x2 / sqrt((Σ x1² + 1e-12) · (Σ x2² + 1e-12))\n"
            "l = 1 - cos               if y = 1\n"
            "l = max(0, cos - margin)  if y = -1"
        ),
        headline="the mean over pairs (= PyTorch's reduction='mean')",
        gradient=(
            "∂cos/∂x1 = x2 / sqrt(m1 · m2) - cos · x1 / m1 (m = squared norm + 1e-12); "
            "∂l/∂x1 = -∂cos/∂x1 for y = 1, ∂cos/∂x1 where cos > margin for y = -1 (0 at the hinge)"
        ),
        properties=(
            "Bounded: in [0, 2] for y = 1 and in [0, 1 - margin] for y = -1; depends only on directions, not lengths (scale invariant).",
            "As in PyTorch, 1e-12 is added to each squared norm, so a zero vector has cos = 0: loss 1 for y = 1, max(0, -margin) for y = -1.",
            "Deviation from PyTorch: labels other than ±1 are an error in lossctl; PyTorch silently gives 0 for them.",
            "Not differentiable at cos = margin for dissimilar pairs (hinge). The report shows the mean cosine.",
        ),
        used_for="Contrastive / metric learning on labelled pairs; semantic similarity of text or image embeddings.",
        activation="none (raw embeddings; normalisation is inside the loss)",
        paper="PyTorch CosineEmbeddingLoss; cosine similarity learning as in siamese networks (Bromley et al. 1993).",
        example=(
            "sample_data/contrastive_pairs.parquet:x1",
            "sample_data/contrastive_pairs.parquet:x2",
            "sample_data/contrastive_pairs.parquet:sign",
        ),
    ),
    LossSpec(
        name="margin-ranking",
        family="contrastive",
        summary="Margin ranking loss: the score of the preferred item should exceed the other's by a margin.",
        inputs=(
            Role("x1", "(N,)", "Score of the first item of each pair.", ndim=(1, 2)),
            Role("x2", "(N,)", "Score of the second item of each pair.", ndim=(1, 2)),
            LABEL_PM1_RANK,
        ),
        params=(Param("margin", "float", 0.0, "Required score gap between the preferred and the other item."),),
        kernel=f"{_CON}:margin_ranking",
        grad=f"{_CON}:margin_ranking_grad",
        reference="torch.nn.functional.margin_ranking_loss(input1, input2, target, margin)",
        formula="l = max(0, -y · (x1 - x2) + margin),  y = 1: x1 should rank higher, y = -1: x2 should",
        headline="the mean over pairs (= PyTorch's reduction='mean')",
        gradient="∂l/∂x1 = -y where -y · (x1 - x2) + margin > 0, else 0 (0 exactly at the hinge)",
        properties=(
            "Non-negative, convex and piecewise linear in the scores (a hinge on the score difference); grows linearly with a wrong ranking, so robust-ish to outliers.",
            "With margin 0 a correctly ordered pair costs nothing; ties cost margin.",
            "Deviation from PyTorch: labels other than ±1 are an error in lossctl (PyTorch computes with any number).",
            "The report shows the fraction of pairs ranked correctly (y · (x1 - x2) > 0).",
        ),
        used_for="Learning to rank (pairwise), preference / reward models, retrieval scoring.",
        activation="none (raw scores)",
        paper="Herbrich, Graepel, Obermayer 1999 (pairwise ranking SVM); PyTorch MarginRankingLoss.",
        example=(
            "sample_data/contrastive_ranking.csv:score_a",
            "sample_data/contrastive_ranking.csv:score_b",
            "sample_data/contrastive_ranking.csv:label",
        ),
    ),
    LossSpec(
        name="info-nce",
        aliases=("nt-xent",),
        family="contrastive",
        summary="InfoNCE: softmax cross-entropy picking each query's own key among the other keys of its batch.",
        inputs=(
            _emb("query", "Query embeddings q (one view)."),
            _emb(
                "key",
                "Key embeddings k, the query's shape: row i of key is the positive of row i of query, "
                "every other row of the same batch a negative.",
            ),
        ),
        params=(
            Param(
                "temperature",
                "float",
                0.07,
                "Softmax temperature τ dividing the cosine similarities.",
                low=0.0,
                low_open=True,
            ),
            Param(
                "batch-size",
                "int",
                None,
                "Rows per batch: consecutive groups of this many rows are scored against each other (the last may be smaller). "
                "Default: the whole input, up to 4096 rows; required for more.",
                low=1,
            ),
            Param(
                "symmetric",
                "bool",
                False,
                "SimCLR NT-Xent: the 2B views of a batch, each scored against all the other 2B - 1 (the partner "
                "view is the positive); a row's value is the mean of its query and key terms.",
            ),
        ),
        kernel=f"{_CON}:info_nce",
        kernel_options=("batch_size",),
        grad=f"{_CON}:info_nce_grad",
        reference=(
            "cross_entropy(normalize(q) @ normalize(k).T / τ, arange(B), reduction='none') per batch of B rows; "
            "symmetric: SimCLR NT-Xent = cross_entropy over the 2B x 2B similarities of z = [q; k] with the "
            "diagonal masked, target the partner view, the two views of a pair averaged"
        ),
        formula=(
            "s_ij = q̂_i · k̂_j,  x̂ = x / max(‖x‖₂, 1e-12)   (i, j in the same batch)\n"
            "l_i = -log( exp(s_ii/τ) / Σ_j exp(s_ij/τ) ) = logsumexp_j(s_ij/τ) - s_ii/τ\n"
            "symmetric (NT-Xent over z = [q; k], u ≠ self): l_i = ½ [ logsumexp_u(ẑ_i·ẑ_u/τ) + logsumexp_u(ẑ_{B+i}·ẑ_u/τ) ] - s_ii/τ"
        ),
        headline="the mean over rows (all batches together; the batch size is part of the definition and is reported)",
        gradient=(
            "∂l_i/∂q_i (row i's own term only) = (g - (g·q̂_i) q̂_i) / ‖q_i‖ with g = (1/τ)(Σ_j softmax_j(s_ij/τ) k̂_j - k̂_i); "
            "symmetric: g = ½[(1/τ)(Σ_u P_iu ẑ_u - k̂_i) + (1/τ)(P_{B+i,i} - 1) k̂_i] with P the NT-Xent softmaxes; "
            "for a norm floored at 1e-12 the projection is skipped (g / 1e-12)"
        ),
        properties=(
            "Depends on the batch: a row's value changes with which other rows share its batch; rows of different batches never interact, "
            "and the result never depends on the reading chunk size.",
            "Non-negative: tends to 0 when each query's own key is far more similar than the others, equals log B when all similarities in a batch of B rows are equal; log B - mean loss is a lower bound on the mutual information between the views (van den Oord et al.).",
            "Computed with log-sum-exp: a tiny temperature (1e-6) stays finite and exact.",
            "Cosine similarity: rows are L2-normalised with the norm floored at 1e-12 (torch.nn.functional.normalize), so a zero vector has similarity 0 with every row.",
            "symmetric=True is SimCLR's NT-Xent: the other rows of the same view are negatives too, so its mean over a batch "
            "equals NT-Xent's L = (1/2B) Σ_k [ℓ(k, k') + ℓ(k', k)].",
            "The report shows top1: the fraction of queries whose own key is strictly the most similar in the batch.",
        ),
        used_for="Contrastive / self-supervised representation learning (CPC, SimCLR, MoCo, CLIP-style paired embeddings).",
        activation="none (embeddings; cosine normalisation is inside the loss)",
        paper="van den Oord, Li, Vinyals 2018 (InfoNCE, CPC); Chen et al. 2020 (SimCLR NT-Xent, symmetric).",
        example=(
            "sample_data/contrastive_views.parquet:query",
            "sample_data/contrastive_views.parquet:key",
            "--temperature",
            "0.1",
            "--batch-size",
            "32",
        ),
        batched=True,
    ),
    # --- detection -------------------------------------------------------------
    LossSpec(
        name="iou",
        aliases=(),
        family="detection",
        summary="IoU loss 1 - IoU between predicted and ground-truth boxes, pair by pair.",
        inputs=(PRED_BOXES, TARGET_BOXES),
        params=(BOX_EPS, BOX_FORMAT),
        kernel=f"{_DET}:iou",
        kernel_options=("extras",),
        grad=f"{_DET}:iou_grad",
        reference="1 - torchvision.ops.box_iou(boxes1, boxes2).diag() (box_iou has no eps: --eps 0 reproduces it)",
        formula=(
            "I = max(0, min(x2,x2g) - max(x1,x1g)) · max(0, min(y2,y2g) - max(y1,y1g))\n"
            "U = area(pred) + area(target) - I\n"
            "l = 1 - I / (U + eps)"
        ),
        headline="the mean over box pairs",
        gradient="∂l/∂b = -[∂I/(U+eps) - I·∂U/(U+eps)²], ∂U = ∂area - ∂I. " + _BOX_GRAD_TIES,
        properties=(
            "Bounded in [0, 1]; 1 for every non-overlapping pair, so it gives no gradient when boxes do not overlap "
            "(the motivation for GIoU/DIoU/CIoU).",
            *_BOX_COMMON_PROPS,
            "With --eps 0 two zero-area boxes give 0/0, which is an error naming the row.",
        ),
        used_for="Object detection: bounding-box regression and evaluation.",
        activation="none (box coordinates; decode the network's offsets into boxes first)",
        paper="Yu et al. 2016, UnitBox (IoU loss).",
        example=_BOX_EXAMPLE,
    ),
    LossSpec(
        name="giou",
        aliases=(),
        family="detection",
        summary="Generalized IoU loss: 1 - IoU plus the share of the enclosing box not covered by the union.",
        inputs=(PRED_BOXES, TARGET_BOXES),
        params=(BOX_EPS, BOX_FORMAT),
        kernel=f"{_DET}:giou",
        kernel_options=("extras",),
        grad=f"{_DET}:giou_grad",
        reference="torchvision.ops.generalized_box_iou_loss(boxes1, boxes2, reduction='none', eps)",
        formula=(
            "IoU = I / (U + eps); A_c = area of the smallest box enclosing both\n"
            "l = 1 - [IoU - (A_c - U) / (A_c + eps)]"
        ),
        headline="the mean over box pairs",
        gradient=(
            "∂l/∂b = -∂IoU + [∂A_c·(U + eps) - ∂U·(A_c + eps)] / (A_c + eps)², "
            "∂IoU = ∂I/(U+eps) - I·∂U/(U+eps)². " + _BOX_GRAD_TIES
        ),
        properties=(
            "Bounded in [0, 2]; unlike IoU it still decreases as disjoint boxes approach each other.",
            *_BOX_COMMON_PROPS,
            "Two identical zero-area boxes give 1.0, as in torchvision.",
        ),
        used_for="Object detection: bounding-box regression (DETR-style recipe: focal + L1 + GIoU).",
        activation="none (box coordinates; decode the network's offsets into boxes first)",
        paper="Rezatofighi et al. 2019, Generalized Intersection over Union.",
        example=_BOX_EXAMPLE,
    ),
    LossSpec(
        name="diou",
        aliases=(),
        family="detection",
        summary="Distance IoU loss: 1 - IoU plus the squared centre distance over the enclosing box's squared diagonal.",
        inputs=(PRED_BOXES, TARGET_BOXES),
        params=(BOX_EPS, BOX_FORMAT),
        kernel=f"{_DET}:diou",
        kernel_options=("extras",),
        grad=f"{_DET}:diou_grad",
        reference="torchvision.ops.distance_box_iou_loss(boxes1, boxes2, reduction='none', eps)",
        formula=(
            "IoU = I / (U + eps); ρ² = squared distance between the box centres\n"
            "c² = squared diagonal of the smallest enclosing box\n"
            "l = 1 - IoU + ρ² / (c² + eps)"
        ),
        headline="the mean over box pairs",
        gradient=(
            "∂l/∂b = -∂IoU + ∂ρ²/(c² + eps) - ρ²·∂c²/(c² + eps)², with ∂ρ²/∂x1 = ∂ρ²/∂x2 = Δcx, "
            "∂c²/∂x = 2·c_w·∂c_w. " + _BOX_GRAD_TIES
        ),
        properties=(
            "Bounded in [0, 2); the centre-distance term pulls disjoint boxes together directly.",
            *_BOX_COMMON_PROPS,
            "Two identical zero-area boxes give 1.0, as in torchvision.",
        ),
        used_for="Object detection: bounding-box regression (faster convergence than GIoU).",
        activation="none (box coordinates; decode the network's offsets into boxes first)",
        paper="Zheng et al. 2020, Distance-IoU Loss.",
        example=_BOX_EXAMPLE,
    ),
    LossSpec(
        name="ciou",
        aliases=(),
        family="detection",
        summary="Complete IoU loss: DIoU plus an aspect-ratio consistency term α·v.",
        inputs=(PRED_BOXES, TARGET_BOXES),
        params=(CIOU_EPS, BOX_FORMAT),
        kernel=f"{_DET}:ciou",
        kernel_options=("extras",),
        grad=f"{_DET}:ciou_grad",
        reference="torchvision.ops.complete_box_iou_loss(boxes1, boxes2, reduction='none', eps)",
        formula=(
            "l = DIoU_loss + α·v  (DIoU part and its IoU always with eps = 1e-7, as torchvision)\n"
            "v = 4/π² · (atan(w_g/h_g) - atan(w/h))²   (atan2(w, h), so h = 0 gives π/2)\n"
            "α = v / (1 - IoU + v + eps)   (α = 0 when v = 0)"
        ),
        headline="the mean over box pairs",
        gradient=(
            "Exact gradient of the reported value, α included: ∂l = ∂DIoU_loss + α(2 - α)·∂v + α²·∂IoU, "
            "with ∂atan2(w,h)/∂w = h/(w²+h²), ∂/∂h = -w/(w²+h²). torchvision computes α under no_grad, so "
            "autograd there gives ∂DIoU_loss + α·∂v instead (a surrogate that differs from the derivative of the "
            "value by v·∂α). " + _BOX_GRAD_TIES
        ),
        properties=(
            "Non-negative; adds an aspect-ratio penalty to DIoU that is 0 when the boxes have the same w/h.",
            *_BOX_COMMON_PROPS,
            "torchvision's complete_box_iou_loss does not pass eps to its DIoU part, which always uses 1e-7; "
            "eps only enters α. lossctl reproduces this (eps = 0.1 changes only pairs with v > 0).",
            "Point boxes (zero width and zero height) are an error naming the row: atan(0/0) is undefined and has "
            "no limit, and torchvision returns NaN there. Boxes with only one zero side are accepted (atan(w/0) = π/2).",
            "Report components: diou (the DIoU loss) and aspect (α·v), which sum to the loss.",
        ),
        used_for="Object detection: bounding-box regression (YOLOv4/v5-style recipes).",
        activation="none (box coordinates; decode the network's offsets into boxes first)",
        paper="Zheng et al. 2020, Distance-IoU Loss (CIoU); Zheng et al. 2021, Enhancing Geometric Factors.",
        example=(
            "sample_data/detection_boxes.parquet:pred",
            "sample_data/detection_boxes.parquet:target",
            "--box-format",
            "cxcywh",
        ),
    ),
    # --- generative ------------------------------------------------------------
    LossSpec(
        name="vae",
        aliases=(),
        family="generative",
        summary="VAE negative ELBO: reconstruction error plus β times the KL divergence of the latent Gaussian from N(0, I).",
        inputs=(
            Role(
                "recon",
                "(N, D)",
                "The decoder's reconstruction x̂: values (--reconstruction mse) or logits (--reconstruction bce).",
            ),
            Role("target", "(N, D)", "The input x being reconstructed; in [0, 1] with --reconstruction bce."),
            Role("mu", "(N, Z)", "The encoder's latent means μ."),
            Role("logvar", "(N, Z)", "The encoder's latent log-variances log σ², the shape of mu."),
        ),
        params=(
            Param(
                "reconstruction",
                "choice",
                "mse",
                "Reconstruction term: mse (squared error of values) or bce (binary cross-entropy of logits "
                "against targets in [0, 1]).",
                choices=("mse", "bce"),
            ),
            Param("beta", "float", 1.0, "Weight β of the KL term (β-VAE; 1 is the plain ELBO).", low=0.0),
        ),
        kernel=f"{_GEN}:vae",
        grad=f"{_GEN}:vae_grad",
        reference=(
            "F.mse_loss(recon, x, reduction='sum') or F.binary_cross_entropy_with_logits(recon, x, reduction='sum'), "
            "plus beta * -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp()) (per sample; "
            "= torch.distributions.kl_divergence(Normal(mu, exp(logvar/2)), Normal(0, 1)).sum(-1))"
        ),
        formula=(
            "l = Σ_d recon(x_d, x̂_d) + β · ½ Σ_z (μ_z² + σ_z² - log σ_z² - 1),  σ² = exp(logvar)\n"
            "mse: recon = (x - x̂)²\n"
            "bce: recon = x · softplus(-x̂) + (1 - x) · softplus(x̂)   (x̂ are logits)"
        ),
        headline="the mean over samples of the per-sample sum (the usual batch-averaged VAE loss)",
        gradient="∂l/∂x̂ = 2(x̂ - x) (mse) or σ(x̂) - x (bce, logits); the KL term does not depend on x̂",
        properties=(
            "The negative evidence lower bound (ELBO) for β = 1 (up to constants of the Gaussian/Bernoulli decoder).",
            "The KL term is non-negative and zero only when μ = 0 and logvar = 0; it is computed as "
            "½(μ² + expm1(logvar) - logvar), exact for small logvar.",
            "Report components: reconstruction and kl (β-weighted); they sum to the loss.",
            "Sums (not means) over D and Z: the reconstruction term grows with the data dimension.",
        ),
        used_for="Variational autoencoders (VAE, β-VAE).",
        activation="identity (mse) or sigmoid per pixel (bce, applied inside the loss to logits)",
        paper="Kingma & Welling 2014, Auto-Encoding Variational Bayes; β-VAE: Higgins et al. 2017.",
        example=(
            "sample_data/vae_batch.parquet:recon",
            "sample_data/vae_batch.parquet:x",
            "sample_data/vae_batch.parquet:mu",
            "sample_data/vae_batch.parquet:logvar",
            "--reconstruction",
            "bce",
        ),
    ),
    # --- hinge (classification; kernel: lossctl/losses/hinge.py) ----------------------------
    LossSpec(
        name="hinge",
        aliases=("multi-margin",),
        family="classification",
        summary="Multi-class margin (hinge) loss on class scores, as PyTorch's multi_margin_loss.",
        inputs=(
            Role("pred", "(N, C)", "Class scores: one row per sample, one column per class (no softmax).", ndim=(2,)),
            Role("target", "(N,)", "Class indices in [0, C).", ndim=(1,), dtype="label"),
        ),
        params=(
            Param(
                "p",
                "choice",
                "1",
                "Exponent of each hinge term: 1 (hinge) or 2 (squared hinge).",
                choices=("1", "2"),
            ),
            Param(
                "margin",
                "float",
                1.0,
                "Required gap between the target's score and every other class's score.",
                low=-math.inf,
                high=math.inf,
                low_open=True,
                high_open=True,
            ),
            Param(
                "weight",
                "floats",
                None,
                "Class weights: C comma-separated numbers, or a file holding them (.npy, .json, text); "
                "each row's loss is multiplied by the weight of its target class.",
                low=0.0,
            ),
            CLASSES,
        ),
        kernel="lossctl.losses.hinge:hinge",
        grad="lossctl.losses.hinge:hinge_grad",
        reference="torch.nn.functional.multi_margin_loss(input, target, p, margin, weight)",
        formula=(
            "l_n = (1/C) · Σ_{i ≠ y_n} w[y_n] · max(0, margin - x_n[y_n] + x_n[i])^p,  p ∈ {1, 2}\n"
            "w ≡ 1 without weights; note the division by C (not C - 1) and the weight of the target class"
        ),
        headline="the mean over rows (PyTorch's reduction='mean': Σ l_n / N, not divided by Σ w[y_n] even with --weight)",
        gradient=(
            "∂l_n/∂x_n[i] = w[y_n] · (1, or 2 z_i for p = 2) / C for i ≠ y_n with z_i = margin - x_n[y_n] + x_n[i] > 0, "
            "else 0 (0 at z_i = 0 exactly, as PyTorch); ∂l_n/∂x_n[y_n] = -Σ_{i ≠ y_n} ∂l_n/∂x_n[i]"
        ),
        properties=(
            "Non-negative; 0 once the target's score beats every other score by at least margin.",
            "Convex and piecewise linear (p = 1) or piecewise quadratic (p = 2) in the scores; "
            "unchanged when the same number is added to every score of a row.",
            "Scores are used as given: no softmax, so logits and any other real-valued scores work alike.",
            "With C = 1 every value is 0 (no other class).",
        ),
        used_for="Multi-class classification with SVM-style margins; robustness and adversarial-margin training.",
        activation="none: raw class scores (logits or any real-valued scores)",
        paper=(
            "Weston & Watkins 1999, Support vector machines for multi-class pattern recognition "
            "(the sum over wrong classes; Crammer & Singer 2001 take the max instead)."
        ),
        example=(
            "sample_data/classifier.csv:logit_*",
            "sample_data/classifier.csv:label",
            "--p",
            "2",
        ),
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
    from lossctl import plugins

    found = plugins.find(name)  # a plugin's loss: --plugin, LOSSCTL_PLUGINS or an installed package
    if found is not None:
        return found
    close = suggest(name)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UsageError(f"Unknown loss {name!r}.{hint} Run `lossctl list` to see every loss.")


def register(spec: LossSpec) -> None:
    """Add a plugin's loss (lossctl.plugins). A name or alias of a built-in loss, or of another
    plugin's loss, is refused; the same plugin registering it again replaces it."""
    global LOSSES, FAMILIES
    for key in (spec.name, *spec.aliases):
        old = BY_NAME.get(key)
        if old is None or (old.plugin is not None and old.plugin == spec.plugin and old.name == spec.name):
            continue
        owner = "a built-in loss" if old.plugin is None else f"a loss of the plugin {old.plugin}"
        raise UsageError(
            f"The plugin {spec.plugin} cannot register the loss {spec.name!r}: {key!r} is already {owner} "
            f"({old.name!r}). Choose another name (a prefix such as 'myteam-{spec.name}' avoids clashes)."
        )
    LOSSES = tuple(s for s in LOSSES if s.name != spec.name) + (spec,)
    for key in [k for k, s in BY_NAME.items() if s.name == spec.name]:
        del BY_NAME[key]
    for key in (spec.name, *spec.aliases):
        BY_NAME[key] = spec
    if spec.family not in FAMILIES:
        FAMILIES = FAMILIES + (spec.family,)


def describe(spec: LossSpec) -> dict[str, Any]:
    """A JSON-serialisable description of a loss (used by ``list --format json``)."""
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "family": spec.family,
        "summary": spec.summary,
        "inputs": [{"role": r.name, "shape": r.shape, "help": r.help, "optional": r.optional} for r in spec.inputs],
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
        **({"plugin": spec.plugin} if spec.plugin else {}),
    }
