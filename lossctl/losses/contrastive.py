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
    2018; the symmetric form is SimCLR's NT-Xent (Chen et al. 2020): each of the
    2B views of a batch is scored against the other 2B - 1, same-view negatives included.
"""

from __future__ import annotations

from lossctl.losses._lazy import lazy

from lossctl.errors import InputError, ParamError, opt
from lossctl.losses import Result
from lossctl.losses._common import as_rows, check_finite, check_temperature, first_rows, match_shape
from lossctl.losses.spec import loss, Param, Role

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)

# Declarations shared by this module's losses ----------------------------------------

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
    return float(value)  # (its range is declared and checked when parsed)


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


@loss(
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
)
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


@loss(
    name="contrastive",
    family="contrastive",
    summary="Contrastive (Hadsell) loss on pairs: pull similar pairs together, push dissimilar pairs beyond a margin.",
    inputs=(
        _emb("x1", "First embedding of each pair."),
        _emb("x2", "Second embedding of each pair, x1's shape."),
        LABEL_01,
    ),
    params=(Param("margin", "float", 1.0, "Distance beyond which dissimilar pairs cost nothing.", low=0.0),),
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
)
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
    margin = float(margin)  # (declared: [-1, 1])
    s = np.einsum("ij,ij->i", a, b)
    m1 = np.einsum("ij,ij->i", a, a) + COSINE_EPS
    m2 = np.einsum("ij,ij->i", b, b) + COSINE_EPS
    denom = np.sqrt(m1) * np.sqrt(m2)
    cos = s / denom
    return a, b, y, margin, cos, m1, denom


@loss(
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
)
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


@loss(
    name="margin-ranking",
    family="contrastive",
    summary="Margin ranking loss: the score of the preferred item should exceed the other's by a margin.",
    inputs=(
        Role("x1", "(N,)", "Score of the first item of each pair.", ndim=(1, 2)),
        Role("x2", "(N,)", "Score of the second item of each pair.", ndim=(1, 2)),
        LABEL_PM1_RANK,
    ),
    params=(Param("margin", "float", 0.0, "Required score gap between the preferred and the other item."),),
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
)
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
                f"{opt('batch-size')} is required for more than {INFO_NCE_MAX_AUTO_BATCH} rows "
                f"(got {n}); InfoNCE depends on which rows share a batch",
            )
        return max(n, 1)
    return int(batch_size)  # (declared: at least 1)


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


@loss(
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
            high_open=True,
            normal=True,
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
    kernel_options=("batch_size",),
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
        f"{opt('temperature')}",
        "0.1",
        f"{opt('batch-size')}",
        "32",
    ),
    batched=True,
)
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
