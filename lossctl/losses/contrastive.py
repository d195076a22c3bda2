"""Contrastive and ranking losses on embeddings: triplet margin, contrastive
(Hadsell et al.), cosine embedding, margin ranking and InfoNCE / NT-Xent.

Shapes: N rows (samples), D embedding size. Every kernel returns per-sample
float64 values of shape ``[N]``; gradients are taken with respect to the first
input (anchor / x1 / query).

References:
    PyTorch ``torch.nn.functional.triplet_margin_loss`` (with ``pairwise_distance``),
    ``cosine_embedding_loss`` and ``margin_ranking_loss`` (2.x): parameter names,
    defaults and the exact formulas (the eps of the triplet distance, the 1e-12 of
    the cosine) are theirs. Contrastive: Hadsell, Chopra, LeCun 2006 with the
    label flipped (1 = similar) and without the ½. InfoNCE: van den Oord et al.
    2018; the symmetric form averages both directions (CLIP-style; SimCLR's
    NT-Xent, Chen et al. 2020, also uses same-view negatives, so it differs).
"""

from __future__ import annotations

import numpy as np

from lossctl.errors import InputError, ParamError
from lossctl.losses import Result
from lossctl.losses._common import as_rows, check_finite, check_temperature, first_rows, match_shape

# InfoNCE: without --batch-size the whole input is one batch, up to this many rows.
INFO_NCE_MAX_AUTO_BATCH = 4096
# Row norms are floored here before L2-normalising (torch.nn.functional.normalize's eps):
# a zero vector stays zero, so its cosine similarity with everything is 0.
NORM_EPS = 1e-12
# torch cosine_embedding_loss adds this to each squared norm.
COSINE_EPS = 1e-12


# ---------------------------------------------------------------------------
# shared input handling
# ---------------------------------------------------------------------------


def _embeddings(x, role: str, what: str = "embeddings") -> np.ndarray:
    """(N, D) float64; a single column (N,) is taken as D = 1. Values must be finite."""
    a = as_rows(x, role, what)
    check_finite(a, role, what)
    return a


def _scalars(x, role: str, what: str) -> np.ndarray:
    """(N,) float64 from (N,) or (N, 1); finite."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise InputError(role, f"{what} must be one value per row (N,); got shape {a.shape}", [])
    check_finite(a, role, what)
    return a


def _labels(y, n: int, role: str, allowed: tuple[float, ...], expected: str) -> np.ndarray:
    """One label per row, each one of ``allowed``; returned as float64 (N,)."""
    a = np.asarray(y)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or len(a) != n:
        raise InputError(role, f"labels must be one value per row ({n} rows); got shape {a.shape}", [])
    if a.dtype.kind not in "biuf":
        raise InputError(role, f"labels have type {a.dtype}", [], expected=expected)
    v = a.astype(np.float64)
    ok = np.zeros(n, dtype=bool)
    for val in allowed:
        ok |= v == val
    if not ok.all():
        rows = first_rows(~ok)
        raise InputError(role, f"label {float(v[rows[0]]):.9g} is not allowed", rows, expected=expected)
    return v


def _positive(value, name: str, allow_zero: bool = False) -> float:
    v = float(value)
    if not (v > 0 or (allow_zero and v == 0)):
        raise ParamError(name, f"--{name} must be {'>= 0' if allow_zero else '> 0'}; got {v:g}")
    return v


# ---------------------------------------------------------------------------
# triplet-margin
# ---------------------------------------------------------------------------


def _pnorm(z: np.ndarray, p: float) -> np.ndarray:
    """Row-wise ‖z‖_p, scaled by the row's largest |z| so no power over/underflows."""
    az = np.abs(z)
    if np.isinf(p):
        return az.max(axis=1) if az.shape[1] else np.zeros(len(az))
    scale = az.max(axis=1) if az.shape[1] else np.zeros(len(az))
    safe = np.where(scale > 0, scale, 1.0)
    r = az / safe[:, None]
    if p == 2.0:
        s = np.einsum("ij,ij->i", r, r)
        return scale * np.sqrt(s)
    if p == 1.0:
        return az.sum(axis=1)
    s = np.power(r, p).sum(axis=1)
    return scale * np.power(s, 1.0 / p)


def _pnorm_grad(z: np.ndarray, d: np.ndarray, p: float) -> np.ndarray:
    """∂‖z‖_p/∂z row-wise: sign(z)·(|z|/‖z‖)^(p-1); 0 where z = 0 or ‖z‖ = 0 (sub-gradient)."""
    az = np.abs(z)
    sz = np.sign(z)
    if np.isinf(p):
        g = np.zeros_like(z)
        if z.shape[1]:
            k = np.argmax(az, axis=1)
            rows = np.arange(len(z))
            g[rows, k] = sz[rows, k]
        return g
    if p == 1.0:
        return sz
    safe = np.where(d > 0, d, 1.0)
    r = az / safe[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        g = sz * np.power(r, p - 1.0)
    g[(az == 0) | ~np.isfinite(g)] = 0.0
    g[d == 0] = 0.0
    return g


def _triplet_parts(anchor, positive, negative, margin, p, eps, swap):
    a = _embeddings(anchor, "anchor")
    pos = _embeddings(positive, "positive")
    neg = _embeddings(negative, "negative")
    match_shape(a, pos, "positive", "the anchor")
    match_shape(a, neg, "negative", "the anchor")
    margin = _positive(margin, "margin")
    p = _positive(p, "p")
    eps = float(eps)
    z_ap = a - pos + eps
    z_an = a - neg + eps
    d_ap = _pnorm(z_ap, p)
    d_an = _pnorm(z_an, p)
    use_an = np.ones(len(a), dtype=bool)
    if swap:
        d_pn = _pnorm(pos - neg + eps, p)
        use_an = d_an <= d_pn
        d_neg = np.where(use_an, d_an, d_pn)
    else:
        d_neg = d_an
    loss = np.maximum(d_ap - d_neg + margin, 0.0)
    return loss, d_ap, d_neg, z_ap, z_an, d_an, use_an, p


def triplet_margin(
    anchor, positive, negative, *, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6, swap: bool = False
) -> Result:
    """``max(d(a,p) - d(a,n) + margin, 0)``, ``d(u,v) = ‖u - v + eps‖_p`` (torch ``pairwise_distance``)."""
    loss, d_ap, d_neg, *_ = _triplet_parts(anchor, positive, negative, margin, p, eps, swap)
    return Result(
        loss=loss,
        components={"d_pos": d_ap, "d_neg": d_neg, "active": (loss > 0).astype(np.float64)},
    )


def triplet_margin_grad(
    anchor, positive, negative, *, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6, swap: bool = False
) -> np.ndarray:
    """∂l/∂a = [l > 0]·(∇‖a-p+eps‖_p - [d(a,n) used]·∇‖a-n+eps‖_p)."""
    loss, d_ap, _, z_ap, z_an, d_an, use_an, p = _triplet_parts(anchor, positive, negative, margin, p, eps, swap)
    g = _pnorm_grad(z_ap, d_ap, p) - np.where(use_an[:, None], _pnorm_grad(z_an, d_an, p), 0.0)
    g *= (loss > 0)[:, None]
    return g.reshape(np.shape(anchor)) if np.ndim(anchor) == 1 else g


# ---------------------------------------------------------------------------
# contrastive (Hadsell et al. 2006, y = 1 similar, no ½)
# ---------------------------------------------------------------------------


def _contrastive_parts(x1, x2, label, margin):
    a = _embeddings(x1, "x1")
    b = _embeddings(x2, "x2")
    match_shape(a, b, "x2", "x1")
    y = _labels(label, len(a), "label", (0.0, 1.0), "labels 1 (similar pair) or 0 (dissimilar pair)")
    margin = _positive(margin, "margin", allow_zero=True)
    diff = a - b
    d2 = np.einsum("ij,ij->i", diff, diff)
    d = np.sqrt(d2)
    hinge = np.maximum(margin - d, 0.0)
    return y, diff, d2, d, hinge


def contrastive(x1, x2, label, *, margin: float = 1.0) -> Result:
    """``y·d² + (1-y)·max(0, m - d)²`` with ``d = ‖x1 - x2‖₂``."""
    y, _, d2, d, hinge = _contrastive_parts(x1, x2, label, margin)
    similar = np.where(y == 1, d2, 0.0)
    dissimilar = np.where(y == 0, hinge * hinge, 0.0)
    return Result(
        loss=similar + dissimilar,
        components={"similar": similar, "dissimilar": dissimilar, "distance": d},
    )


def contrastive_grad(x1, x2, label, *, margin: float = 1.0) -> np.ndarray:
    """y=1: 2(x1 - x2); y=0: -2·max(0, m - d)·(x1 - x2)/d, defined as 0 at d = 0."""
    y, diff, _, d, hinge = _contrastive_parts(x1, x2, label, margin)
    safe = np.where(d > 0, d, 1.0)
    coef = np.where(y == 1, 2.0, np.where(d > 0, -2.0 * hinge / safe, 0.0))
    g = coef[:, None] * diff
    return g.reshape(np.shape(x1)) if np.ndim(x1) == 1 else g


# ---------------------------------------------------------------------------
# cosine-embedding
# ---------------------------------------------------------------------------


def _cosine_parts(x1, x2, label, margin):
    a = _embeddings(x1, "x1")
    b = _embeddings(x2, "x2")
    match_shape(a, b, "x2", "x1")
    y = _labels(label, len(a), "label", (1.0, -1.0), "labels 1 (similar pair) or -1 (dissimilar pair)")
    margin = float(margin)
    if not -1.0 <= margin <= 1.0:
        raise ParamError("margin", f"--margin must be in [-1, 1]; got {margin:g}")
    s = np.einsum("ij,ij->i", a, b)
    m1 = np.einsum("ij,ij->i", a, a) + COSINE_EPS
    m2 = np.einsum("ij,ij->i", b, b) + COSINE_EPS
    denom = np.sqrt(m1) * np.sqrt(m2)
    cos = s / denom
    return a, b, y, margin, cos, m1, denom


def cosine_embedding(x1, x2, label, *, margin: float = 0.0) -> Result:
    """y=1: ``1 - cos``; y=-1: ``max(0, cos - margin)`` (torch ``cosine_embedding_loss``)."""
    _, _, y, margin, cos, _, _ = _cosine_parts(x1, x2, label, margin)
    loss = np.where(y == 1, 1.0 - cos, np.maximum(cos - margin, 0.0))
    return Result(loss=loss, components={"cos": cos})


def cosine_embedding_grad(x1, x2, label, *, margin: float = 0.0) -> np.ndarray:
    """∂cos/∂x1 = x2/√(m1·m2) - cos·x1/m1 (m = squared norm + 1e-12); y=1: -∂cos; y=-1: [cos > margin]·∂cos."""
    a, b, y, margin, cos, m1, denom = _cosine_parts(x1, x2, label, margin)
    dcos = b / denom[:, None] - (cos / m1)[:, None] * a
    coef = np.where(y == 1, -1.0, (cos - margin > 0).astype(np.float64))
    g = coef[:, None] * dcos
    return g.reshape(np.shape(x1)) if np.ndim(x1) == 1 else g


# ---------------------------------------------------------------------------
# margin-ranking
# ---------------------------------------------------------------------------


def _ranking_parts(x1, x2, label, margin):
    a = _scalars(x1, "x1", "scores")
    b = _scalars(x2, "x2", "scores")
    if a.shape != b.shape:
        raise InputError("x2", f"{len(b)} rows do not match x1's {len(a)}", [], expected="one score per row of x1")
    y = _labels(label, len(a), "label", (1.0, -1.0), "labels 1 (x1 should rank higher) or -1 (x2 should rank higher)")
    t = -y * (a - b) + float(margin)
    return a, b, y, t


def margin_ranking(x1, x2, label, *, margin: float = 0.0) -> Result:
    """``max(0, -y·(x1 - x2) + margin)`` (torch ``margin_ranking_loss``)."""
    a, b, y, t = _ranking_parts(x1, x2, label, margin)
    return Result(
        loss=np.maximum(t, 0.0),
        components={"correct": (y * (a - b) > 0).astype(np.float64)},
    )


def margin_ranking_grad(x1, x2, label, *, margin: float = 0.0) -> np.ndarray:
    """∂l/∂x1 = -y where the hinge is active (> 0), else 0."""
    _, _, y, t = _ranking_parts(x1, x2, label, margin)
    g = np.where(t > 0, -y, 0.0)
    return g.reshape(np.shape(x1))


# ---------------------------------------------------------------------------
# info-nce / nt-xent
# ---------------------------------------------------------------------------


def _normalise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows divided by max(‖row‖₂, 1e-12) (torch.nn.functional.normalize); returns (x̂, floored norm)."""
    scale = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(len(x))
    safe = np.where(scale > 0, scale, 1.0)
    r = x / safe[:, None]
    norm = scale * np.sqrt(np.einsum("ij,ij->i", r, r))
    norm = np.maximum(norm, NORM_EPS)
    return x / norm[:, None], norm


def _resolve_batch(batch_size, n: int) -> int:
    if batch_size is None:
        if n > INFO_NCE_MAX_AUTO_BATCH:
            raise ParamError(
                "batch-size",
                f"--batch-size is required for more than {INFO_NCE_MAX_AUTO_BATCH} rows "
                f"(got {n}); InfoNCE depends on which rows share a batch",
            )
        return max(n, 1)
    b = int(batch_size)
    if b < 1:
        raise ParamError("batch-size", f"--batch-size must be >= 1; got {b}")
    return b


def _grouped(x: np.ndarray, b: int, g0: int, g1: int) -> np.ndarray:
    """Rows of groups [g0, g1) as (G, b, D), zero-padded at the end of the input."""
    n, dim = x.shape
    lo, hi = g0 * b, min(g1 * b, n)
    out = np.zeros(((g1 - g0) * b, dim))
    out[: hi - lo] = x[lo:hi]
    return out.reshape(g1 - g0, b, dim)


def _softmax_stats(A, B, valid, r0, r1, tau, want_p, same=None):
    """Softmax over j of s_ij/τ = (â_i · b̂_j)/τ for rows i in [r0, r1) of each group.

    A, B: (G, b, D) grouped unit rows; valid: (G, b) (False on padding).
    With ``same`` (= A, the anchor's own view), the candidates also include
    s(â_i, â_j)/τ for j ≠ i: the 2N-view denominator of NT-Xent (self excluded).
    Returns per (G, r): the row max m, log Σ_c exp(s_ic/τ - m), the diagonal s_ii/τ,
    the largest off-diagonal cross score s_ij/τ, and (want_p) Σ_c softmax_ic · ĉ of
    shape (G, r, D). Values on padding rows are placeholders (m = 0, log-sum = 0, diagonal 0).
    """
    logits = np.einsum("gid,gjd->gij", A[:, r0:r1], B)
    logits /= tau
    np.copyto(logits, -np.inf, where=~valid[:, None, :])
    ar = np.arange(r1 - r0)
    row_ok = valid[:, r0:r1]
    diag = np.where(row_ok, logits[:, ar, r0 + ar], 0.0)
    logits[:, ar, r0 + ar] = -np.inf
    neg = logits.max(axis=2)  # -inf for a batch of one row
    logits[:, ar, r0 + ar] = diag
    other = None
    if same is not None:
        other = np.einsum("gid,gjd->gij", A[:, r0:r1], same)
        other /= tau
        np.copyto(other, -np.inf, where=~valid[:, None, :])
        other[:, ar, r0 + ar] = -np.inf  # an anchor is not its own negative
        logits = np.concatenate([logits, other], axis=2)
    m = np.where(row_ok, logits.max(axis=2), 0.0)
    logits -= m[:, :, None]
    np.exp(logits, out=logits)
    # log Σ exp = log1p(Σ of the non-max terms): the maximum's exact 1 is left out of the sum, so a
    # confident row keeps its tiny loss (as logsumexp_parts does for the other losses).
    top = np.expand_dims(logits.argmax(axis=2), 2)
    one = np.take_along_axis(logits, top, axis=2)
    np.put_along_axis(logits, top, 0.0, axis=2)
    rest = np.where(row_ok, logits.sum(axis=2), 0.0)
    np.put_along_axis(logits, top, one, axis=2)
    s = 1.0 + rest
    pb = None
    if want_p:
        logits /= s[:, :, None]
        b = B.shape[1]
        pb = np.einsum("gij,gjd->gid", logits[:, :, :b], B)
        if same is not None:
            pb += np.einsum("gij,gjd->gid", logits[:, :, b:], same)
    return m, np.log1p(rest), diag, neg, pb


# float64 similarity scores held at once (16 MB)
_SCORE_BLOCK = 1 << 21


def _info_nce_blocks(query, key, temperature, batch_size, symmetric, want_grad):
    q = _embeddings(query, "query")
    k = _embeddings(key, "key")
    match_shape(q, k, "key", "the query")
    tau = check_temperature(temperature)
    n = len(q)
    b = _resolve_batch(batch_size, n)
    qh, qnorm = _normalise(q)
    kh, _ = _normalise(k)
    loss = np.empty(n)
    top1 = np.empty(n)
    grad = np.empty_like(q) if want_grad else None
    n_groups = -(-n // b)
    groups_per_block = max(1, _SCORE_BLOCK // (b * b))
    width = 2 * b if symmetric else b  # NT-Xent rows see both views
    rows_per_slice = b if b * width <= _SCORE_BLOCK else max(1, _SCORE_BLOCK // width)
    for g0 in range(0, n_groups, groups_per_block):
        g1 = min(g0 + groups_per_block, n_groups)
        lo, hi = g0 * b, min(g1 * b, n)
        Q = _grouped(qh, b, g0, g1)
        K = _grouped(kh, b, g0, g1)
        valid = (np.arange((g1 - g0) * b) < hi - lo).reshape(g1 - g0, b)  # padding rows are False
        value = np.empty((g1 - g0, b))
        hit = np.empty((g1 - g0, b), dtype=bool)
        gq = np.empty_like(Q) if want_grad else None
        for r0 in range(0, b, rows_per_slice):
            r1 = min(b, r0 + rows_per_slice)
            # query -> key: softmax over row i of S/τ (NT-Xent: and over the other queries)
            m, log_s, diag, neg, pk = _softmax_stats(Q, K, valid, r0, r1, tau, want_grad, Q if symmetric else None)
            term = log_s + (m - diag)
            hit[:, r0:r1] = diag > neg
            if want_grad:
                g = (pk - K[:, r0:r1]) / tau
            if symmetric:
                # key -> query, over the queries and the other keys (the 2N-view NT-Xent term)
                mc, log_sc, diagc, _, _ = _softmax_stats(K, Q, valid, r0, r1, tau, False, K)
                term = 0.5 * (term + log_sc + (mc - diagc))
                if want_grad:
                    p_ii_m1 = np.expm1(diagc - mc - log_sc)  # softmax of column i at row i, minus 1
                    g = 0.5 * (g + (p_ii_m1 / tau)[:, :, None] * K[:, r0:r1])
            value[:, r0:r1] = term
            if want_grad:
                gq[:, r0:r1] = g
        loss[lo:hi] = value[valid]
        top1[lo:hi] = hit[valid]
        if want_grad:
            grad[lo:hi] = gq[valid]
    return q, qh, qnorm, loss, top1, grad


def info_nce(
    query, key, *, temperature: float = 0.07, batch_size: int | None = None, symmetric: bool = False
) -> Result:
    """``-log softmax_j(s_ij/τ)[i]`` within consecutive batches of ``batch_size`` rows (cosine s)."""
    _, _, _, loss, top1, _ = _info_nce_blocks(query, key, temperature, batch_size, symmetric, False)
    return Result(loss=loss, components={"top1": top1})


def info_nce_grad(
    query, key, *, temperature: float = 0.07, batch_size: int | None = None, symmetric: bool = False
) -> np.ndarray:
    """∂l_i/∂q_i: (1/τ)(Σ_j P_ij k̂_j - k̂_i) through the L2 normalisation of q_i (symmetric adds the column term)."""
    q, qh, qnorm, _, _, g = _info_nce_blocks(query, key, temperature, batch_size, symmetric, True)
    floored = qnorm <= NORM_EPS
    radial = np.einsum("ij,ij->i", g, qh)
    out = np.where(floored[:, None], g, g - radial[:, None] * qh) / qnorm[:, None]
    return out.reshape(np.shape(query)) if np.ndim(query) == 1 else out
