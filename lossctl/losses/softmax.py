"""Losses over a softmax distribution per row or per token: softmax-focal (multi-class
focal loss), entropy of the predicted distribution, token-cross-entropy (language modelling,
perplexity).

Shapes use N for rows (samples or sequences), T for tokens, C for classes and V for the
vocabulary. Every kernel returns per-sample float64 values of shape ``[N]``.
"""

from __future__ import annotations

import math

from lossctl.losses._lazy import lazy

from lossctl.errors import InputError, ParamError, opt
from lossctl.losses import Result
from lossctl.losses._common import (
    as_float,
    check_finite,
    check_log_probs,
    check_probs,
    first_rows,
    label_text,
    label_values,
    log_softmax64,
    logsumexp_parts,
    softmax64,
    softmax_minus_onehot,
)
from lossctl.losses.spec import loss, Param, Role
from lossctl.losses._classes import CLASSES, _xlogy_rows, _index_target

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)

# ---------------------------------------------------------------------------
# softmax-focal (multi-class focal loss, Lin et al. 2017)
# ---------------------------------------------------------------------------


def _softmax_focal_parts(pred, target, alpha, gamma):
    x = as_float(pred)
    n, n_classes = x.shape
    a = None
    if alpha is not None:
        a = np.asarray(alpha, dtype=np.float64).ravel()
        if a.shape != (n_classes,):
            raise ParamError(
                "alpha",
                f"{opt('alpha')} has {a.size} value(s) but the predictions have {n_classes} classes (columns)",
            )
        if (a < 0).any() or not np.isfinite(a).all():
            raise ParamError("alpha", f"{opt('alpha')} values must be finite and >= 0")
    y = _index_target(target, n_classes, None, "softmax-focal")
    check_finite(x, "pred", "logits")
    m, log_s = logsumexp_parts(x)
    nll_y = log_s + (m - x[np.arange(n), y].astype(np.float64))  # -log p_y >= 0
    nll_y = np.maximum(nll_y, 0.0)
    one_minus_p = -np.expm1(-nll_y)  # 1 - p_y, exact for p_y near 1
    fw = np.power(one_minus_p, float(gamma))  # 0^0 = 1
    ay = np.ones(n) if a is None else a[y]
    return x, y, nll_y, one_minus_p, fw, ay


@loss(
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
    kernel_options=("extras",),
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
)
def softmax_focal(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    alpha=None,
    gamma: float = 2.0,
    extras: bool = False,
) -> Result:
    """Multi-class focal loss: ``l_n = -α[y_n] · (1 - p_y)^γ · log p_y``, ``p = softmax(x)``.

    ``-log p_y`` comes from log-sum-exp and ``1 - p_y = -expm1(log p_y)``, so a
    confident correct row keeps its small loss and extreme logits stay finite.
    ``alpha`` (optional) is one weight per class; the headline is the plain mean.
    """
    x, y, nll_y, _, fw, ay = _softmax_focal_parts(pred, target, alpha, gamma)
    loss = ay * fw * nll_y
    result = Result(loss=np.ascontiguousarray(loss, dtype=np.float64))
    if extras:
        result.columns = {"p_true": np.exp(-nll_y), "pred_class": np.argmax(x, axis=1)}
    return result


def softmax_focal_grad(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    alpha=None,
    gamma: float = 2.0,
) -> np.ndarray:
    """∂l/∂x = A · (softmax(x) - onehot(y)), ``A = α_y·(1-p)^γ·(1 + γ·p·(-log p)/(1-p))``.

    ``-log p / (1-p) → 1`` as ``p → 1``; with ``γ = 0`` this is the cross-entropy gradient.
    """
    x, y, nll_y, one_minus_p, fw, ay = _softmax_focal_parts(pred, target, alpha, gamma)
    p = np.exp(-nll_y)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(one_minus_p > 0, nll_y / one_minus_p, 1.0)
    # p·(-log p)/(1-p) → 0 as p → 0 (an overflowed -log p of inf times p = 0 is 0, not NaN)
    coef = ay * fw * (1.0 + np.where(p > 0, gamma * p * ratio, 0.0))
    return coef[:, None] * softmax_minus_onehot(log_softmax64(x), y)


# ---------------------------------------------------------------------------
# entropy
# ---------------------------------------------------------------------------


def _log_base(base) -> float:
    return math.log(float(base))  # (declared: (0, inf) other than 1, checked when parsed)


def _entropy_logp(pred, pred_kind: str, prob_atol):
    """(p, log p) in float64 from the prediction kind, validated."""
    x = as_float(pred)
    if x.ndim != 2:
        raise InputError("pred", f"expected one distribution per row, shape (N, C); got {x.shape}", [])
    if pred_kind == "logits":
        check_finite(x, "pred", "logits")
        lp, p = softmax64(x)
        return p, lp
    if pred_kind == "probs":
        check_probs(x, "pred", prob_atol)
        with np.errstate(divide="ignore"):
            lp = np.log(np.asarray(x, dtype=np.float64))
    elif pred_kind == "log-probs":
        check_log_probs(x, "pred", prob_atol)
        lp = np.asarray(x, dtype=np.float64)
    else:
        raise ParamError("pred-kind", f"unknown {opt('pred-kind')} {pred_kind!r}")
    return np.exp(lp), lp


@loss(
    name="entropy",
    family="classification",
    summary="Shannon entropy of each predicted distribution (prediction uncertainty; no target).",
    inputs=(
        Role(
            "pred",
            "(N, C)",
            f"A distribution per row: logits, probabilities or log-probabilities ({opt('pred-kind')}).",
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
            high_open=True,
            exclude=(1.0,),
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
    kernel_options=("prob_atol",),
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
    example=("sample_data/classification_probs.csv:p_*", f"{opt('pred-kind')}", "probs", f"{opt('base')}", "2"),
)
def entropy(
    pred: np.ndarray,
    *,
    base: float = math.e,
    pred_kind: str = "logits",
    prob_atol: float | None = None,
) -> Result:
    """Shannon entropy of each predicted distribution: ``H(p) = -Σ_c p_c log p_c / log(base)``.

    ``0 · log 0 = 0``. From logits, ``log p`` is the log-softmax (finite for any
    finite logits). Probability rows are validated, never renormalised
    (``scipy.stats.entropy`` renormalises).
    """
    lb = _log_base(base)
    p, lp = _entropy_logp(pred, pred_kind, prob_atol)
    h = -_xlogy_rows(p, lp)
    if lb != 1.0:
        h = h / lb
    return Result(loss=h + 0.0)  # + 0.0 turns -0.0 into 0.0


def entropy_grad(
    pred: np.ndarray,
    *,
    base: float = math.e,
    pred_kind: str = "logits",
    prob_atol: float | None = None,
) -> np.ndarray:
    """Gradient of H w.r.t. the prediction, divided by log(base).

    logits: ``-p_c (log p_c + H)``; probs: ``-(log p_c + 1)`` (+inf at p_c = 0;
    the derivative of the formula, not projected onto the simplex);
    log-probs: ``-p_c (log p_c + 1)`` (0 at log p_c = -inf).
    """
    lb = _log_base(base)
    p, lp = _entropy_logp(pred, pred_kind, prob_atol)
    if pred_kind == "logits":
        h = -_xlogy_rows(p, lp)
        g = np.zeros_like(p)  # p log p → 0: a class of probability 0 (log p = -inf) has gradient 0
        np.multiply(-p, lp + h[:, None], out=g, where=p > 0)
    elif pred_kind == "probs":
        g = -(lp + 1.0)
    else:
        g = np.zeros_like(lp)
        np.multiply(-p, lp + 1.0, out=g, where=p > 0)
    return g / lb


# ---------------------------------------------------------------------------
# token-cross-entropy (language modelling)
# ---------------------------------------------------------------------------


def _token_log_probs(pred):
    """Per-token log-probabilities as a Ragged, validated (values <= 0, -inf allowed)."""
    from lossctl.ragged import Ragged

    r = (
        pred
        if isinstance(pred, Ragged)
        else Ragged(
            np.asarray(pred).reshape(-1), np.arange(len(pred) + 1, dtype=np.int64) * (pred.shape[1] if len(pred) else 0)
        )
    )
    v = np.asarray(r.values, dtype=np.float64)
    bad = np.isnan(v) | (v > 0)
    if bad.any():
        rows = first_rows(r.sum_rows(bad.astype(np.float64)) > 0)
        first = v[np.flatnonzero(bad)[0]]
        raise InputError(
            "pred",
            f"per-token log-probability {float(first):.9g} above 0 (or NaN)",
            rows,
            expected="per-token log-probabilities log p(token) <= 0",
        )
    return r, v


def _token_mode(pred, target):
    if getattr(pred, "is_ragged", False) and np.ndim(pred.values) == 2:
        if target is None:
            raise InputError(
                "pred",
                "ragged logits (one (T_n, V) list of logit vectors per sequence) need labels as the second input",
                [],
                expected="labels after the logits: one list of T_n token ids per sequence",
            )
        return "ragged-logits"
    if getattr(pred, "is_ragged", False) or np.ndim(pred) == 2:
        if target is not None:
            raise InputError(
                "target",
                "labels are given, but the prediction holds per-token log-probabilities (N, T), "
                "which already score the observed tokens",
                [],
                expected="no labels with per-token log-probabilities, or (N, T, V) logits with labels",
            )
        return "logprobs"
    if np.ndim(pred) == 3:
        if target is None:
            raise InputError(
                "pred",
                "(N, T, V) logits need labels (N, T) as the second input",
                [],
                expected="labels (N, T) after the logits",
            )
        return "logits"
    raise InputError(
        "pred",
        f"shape {np.shape(pred)} is neither (N, T, V) logits nor (N, T) per-token log-probabilities",
        [],
        expected="logits (N, T, V) with labels (N, T), or per-token log-probabilities (N, T)",
    )


def _token_logits(pred):
    """(flat (M, V) logits, tokens per sequence, sequences) of ragged or padded (N, T, V) logits."""
    from lossctl.ragged import Ragged

    if isinstance(pred, Ragged):
        x = as_float(np.asarray(pred.values))
        lengths = pred.lengths
        n = len(pred)
    else:
        a = as_float(np.asarray(pred))
        n, t, v = a.shape
        x = a.reshape(n * t, v)
        lengths = np.full(n, t, dtype=np.int64)
    return x, lengths, n


def _token_labels(target, n: int, lengths, shift: bool):
    """(flat labels, labels per sequence) of ragged or (N, T) labels, one per logit vector."""
    from lossctl.ragged import Ragged

    if isinstance(target, Ragged):
        if len(target) != n:
            raise InputError("target", f"{len(target)} label sequences for {n} sequences of logits", [])
        tl = target.lengths
        y_all = np.asarray(target.values)
    else:
        yt = np.asarray(target)
        if yt.ndim != 2 or len(yt) != n:
            raise InputError(
                "target",
                f"labels have shape {yt.shape}, not one list of token ids per sequence",
                [],
                expected="labels (N, T): one token id per token of each sequence",
            )
        tl = np.full(n, yt.shape[1], dtype=np.int64)
        y_all = yt.reshape(-1)
    if (tl != lengths).any():
        bad = first_rows(tl != lengths)
        i = bad[0]
        raise InputError(
            "target",
            f"sequence of {int(lengths[i])} tokens of logits but {int(tl[i])} labels",
            bad,
            expected="one label per token: as many labels as logit vectors in each sequence"
            + (f" (with {opt('shift')}, the input ids themselves)" if shift else ""),
        )
    if y_all.dtype.kind not in "biuf":
        raise InputError("target", f"labels have type {y_all.dtype}", [], expected="integer token ids")
    return y_all


def _token_ids(y_all, v: int, ignore_index, row_of, pos_all, n: int):
    """(label values, in range) of the flat labels: integers in [0, V) or ignore-index."""
    yi, valid, nonint = label_values(y_all, v, ignore_index)
    if nonint.any():
        j = int(np.flatnonzero(nonint)[0])
        raise InputError(
            "target",
            f"label {float(y_all[j]):.9g} at token {int(pos_all[j])} is not an integer",
            first_rows(np.bincount(row_of[nonint], minlength=n) > 0),
            expected="integer token ids",
        )
    if not valid.all():
        j = int(np.flatnonzero(~valid)[0])
        raise InputError(
            "target",
            f"label {label_text(y_all[j])} at token {int(pos_all[j])} out of range [0, {v}) "
            f"(ignore-index is {ignore_index})",
            first_rows(np.bincount(row_of[~valid], minlength=n) > 0),
            expected=f"token ids in [0, {v}) for a vocabulary of {v} logits",
        )
    return yi, valid


def _check_scored_finite(xs, n: int, counts) -> None:
    """Finite logits at every scored position, else an error naming the sequences."""
    if not np.isfinite(xs).all():
        bad = ~np.isfinite(xs).all(axis=1)
        rows = np.repeat(np.arange(n), counts)
        raise InputError(
            "pred",
            "non-finite value in logits",
            first_rows(np.bincount(rows[bad], minlength=n) > 0),
            expected="finite logits",
        )


class _Tokens:
    """The scored tokens of a batch of sequences, flat: which logit row scores which label.

    ``x`` (M, V) logits of every position; ``pick`` the positions scored (all of them, or with
    --shift every position but each sequence's last); ``y`` the label each scored position
    predicts (the next token's with --shift); ``offsets`` the scored tokens of each sequence;
    ``keep`` False at labels equal to --ignore-index; ``pos`` the index of the predicted token
    in its sequence."""

    def __init__(self, pred, target, ignore_index, shift: bool):
        from lossctl.ragged import Ragged

        x, lengths, n = _token_logits(pred)
        v = x.shape[1] if x.ndim == 2 else 0
        y_all = _token_labels(target, n, lengths, shift)
        row_of = np.repeat(np.arange(n), lengths)
        starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        pos_all = np.arange(len(row_of)) - starts[row_of]
        yi, valid = _token_ids(y_all, v, ignore_index, row_of, pos_all, n)
        if shift:  # position t predicts token t + 1: logits[:, :-1] against labels[:, 1:]
            scored = pos_all < (lengths[row_of] - 1)
            self.pick = np.flatnonzero(scored)
            y = yi[self.pick + 1]
            keep = valid[self.pick + 1] & (y_all[self.pick + 1] != ignore_index if ignore_index is not None else True)
            self.pos = pos_all[self.pick] + 1
            counts = np.maximum(lengths - 1, 0)
        else:
            self.pick = np.arange(len(row_of))
            y = yi
            keep = (y_all != ignore_index) if ignore_index is not None else np.ones(len(yi), dtype=bool)
            self.pos = pos_all
            counts = lengths
        self.keep = np.asarray(keep, dtype=bool)
        self.y = np.where(self.keep, y, 0)
        self.offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=self.offsets[1:])
        self.n, self.v, self.x, self.lengths = n, v, x, lengths
        self.padded = not isinstance(pred, Ragged)
        self.pred = pred
        xs = x[self.pick]
        _check_scored_finite(xs, n, counts)
        self.xs = xs

    def losses(self) -> np.ndarray:
        """-log softmax(x_t)[y_t] per scored token, 0 at ignored ones (float64)."""
        if not len(self.xs):
            return np.zeros(0, dtype=np.float64)
        m, log_s = logsumexp_parts(self.xs)
        tok = log_s + (m - self.xs[np.arange(len(self.xs)), self.y].astype(np.float64))
        return np.where(self.keep, tok, 0.0)

    def per_sequence(self, values: np.ndarray) -> np.ndarray:
        from lossctl.ragged import Ragged

        return Ragged(values, self.offsets).sum_rows()

    def grad(self) -> np.ndarray:
        """∂l_n/∂x: (softmax(x_t) - onehot(y_t)) / n_tokens(n) at kept scored tokens, 0 elsewhere."""
        from lossctl.ragged import Ragged

        g = np.zeros(self.x.shape, dtype=np.float64)
        count = self.per_sequence(self.keep.astype(np.float64))
        if len(self.xs):
            gs = softmax_minus_onehot(log_softmax64(self.xs), self.y)
            rows = np.repeat(np.arange(self.n), np.diff(self.offsets))
            scale = np.where(self.keep, 1.0 / np.maximum(count, 1)[rows], 0.0)
            g[self.pick] = gs * scale[:, None]
        if self.padded:
            return g.reshape(np.shape(self.pred))
        return Ragged(g, self.pred.offsets)


@loss(
    name="token-cross-entropy",
    aliases=("lm",),
    tokens="token_cross_entropy_tokens",
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
            f"Tokens equal to {opt('ignore-index')} (padding) are skipped.",
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
    kernel_options=("extras",),
    reference=(
        "torch.nn.functional.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100) "
        "(the headline); perplexity = exp of it"
    ),
    formula=(
        "per token:    l_t = -log softmax(x_t)[y_t]   (logits), or -log p(token_t) (per-token log-probs)\n"
        f"{opt('shift')}:      l_t = -log softmax(x_t)[y_{{t+1}}], t < T_n - 1   (labels = input ids)\n"
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
)
def token_cross_entropy(
    pred,
    target=None,
    *,
    ignore_index: int = -100,
    shift: bool = False,
    extras: bool = False,
) -> Result:
    """Token-level cross-entropy of a language model, one value per sequence.

    Input forms:
      * ``pred`` logits ``[N, T, V]`` and ``target`` labels ``[N, T]``: per-token
        ``-log softmax(x_t)[y_t]``; tokens labelled ``ignore_index`` are skipped.
      * ``pred`` ragged logits (a Ragged of ``(T_n, V)`` rows) and ragged labels (``T_n``
        per sequence).
      * ``pred`` per-token log-probabilities ``log p(token)`` as a Ragged (or
        ``[N, T]``), no target: per-token ``-log p``.

    ``shift`` (logits only): labels are the input ids, and position t predicts token t + 1
    (Hugging Face causal LMs: ``logits[:, :-1]`` against ``labels[:, 1:]``).

    Per sequence: the mean over its scored, non-ignored tokens. Headline: the
    token-weighted mean (``num`` = Σ token losses, ``den`` = token count), which
    equals ``F.cross_entropy(logits.view(-1, V), labels.view(-1))``; a sequence
    without tokens is an ignored row. ``extras`` adds the per-sequence ``tokens``.
    """
    mode = _token_mode(pred, target)
    if mode == "logits" or mode == "ragged-logits":
        toks = _Tokens(pred, target, ignore_index, shift)
        num = toks.per_sequence(toks.losses())
        den = toks.per_sequence(toks.keep.astype(np.float64))
    else:
        _no_shift(shift)
        r, v = _token_log_probs(pred)
        num = -r.sum_rows(v) + 0.0
        den = r.lengths.astype(np.float64)
    empty = den == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.where(empty, 0.0, num / np.where(empty, 1.0, den))
    result = Result(loss=loss, num=num, den=den, ignored=empty if empty.any() else None)
    if extras:
        result.columns = {"tokens": den.astype(np.int64)}
    return result


def token_cross_entropy_tokens(pred, target=None, *, ignore_index: int = -100, shift: bool = False) -> dict:
    """One entry per scored token (ignored tokens left out): ``row`` (the sequence's index in
    the batch), ``position`` (the token's index in its sequence; with ``shift`` the predicted
    token t + 1), ``token`` (its id; -1 for per-token log-probabilities, which carry none) and
    ``loss`` (-log p of the token, float64)."""
    mode = _token_mode(pred, target)
    if mode == "logits" or mode == "ragged-logits":
        toks = _Tokens(pred, target, ignore_index, shift)
        rows = np.repeat(np.arange(toks.n), np.diff(toks.offsets))
        k = toks.keep
        return {"row": rows[k], "position": toks.pos[k], "token": toks.y[k], "loss": toks.losses()[k]}
    _no_shift(shift)
    r, v = _token_log_probs(pred)
    rows = r.row_ids()
    return {
        "row": rows,
        "position": np.arange(len(rows)) - r.offsets[rows],
        "token": np.full(len(rows), -1, dtype=np.int64),
        "loss": -v + 0.0,
    }


def _no_shift(shift: bool) -> None:
    if shift:
        raise ParamError(
            "shift",
            f"{opt('shift')} applies to logits with labels (the input ids); per-token log-probabilities already "
            "score each observed token, so there is nothing to shift"
        )


def token_cross_entropy_grad(pred, target=None, *, ignore_index: int = -100, shift: bool = False):
    """∂l_n/∂pred_n.

    logits ``[N, T, V]`` (or ragged): ``(softmax(x_t) - onehot(y_t)) / n_tokens(n)`` at
    scored, non-ignored tokens, 0 elsewhere (with ``shift``, each sequence's last position is
    not scored). Per-token log-probabilities: ``-1/T_n`` for each token (a Ragged with the
    input's offsets; an array for a 2-D input).
    """
    from lossctl.ragged import Ragged

    mode = _token_mode(pred, target)
    if mode == "logits" or mode == "ragged-logits":
        return _Tokens(pred, target, ignore_index, shift).grad()
    _no_shift(shift)
    r, _ = _token_log_probs(pred)
    lengths = r.lengths
    per_row = -1.0 / np.maximum(lengths, 1)
    values = per_row[r.row_ids()].astype(np.float64)
    if isinstance(pred, Ragged):
        return r.with_values(values)
    return values.reshape(np.shape(pred))
