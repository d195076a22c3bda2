"""Reference cases: contrastive and ranking losses (plain-Python float64 loops, math.fsum)."""

from __future__ import annotations

import math

import numpy as np

from cases.common import Case

# ---------------------------------------------------------------------------
# references, one row at a time
# ---------------------------------------------------------------------------


def ref_pairwise_distance(u, v, p, eps):
    """torch.nn.functional.pairwise_distance: ‖u - v + eps‖_p, eps on every coordinate."""
    z = [a - b + eps for a, b in zip(u, v)]
    if math.isinf(p):
        return max(abs(t) for t in z)
    return math.fsum(abs(t) ** p for t in z) ** (1.0 / p)


def ref_triplet(arrays, params):
    a, pos, neg = (np.asarray(x, dtype=np.float64).tolist() for x in arrays)
    margin = params.get("margin", 1.0)
    p = params.get("p", 2.0)
    eps = params.get("eps", 1e-6)
    out = []
    for ra, rp, rn in zip(a, pos, neg):
        d_ap = ref_pairwise_distance(ra, rp, p, eps)
        d_an = ref_pairwise_distance(ra, rn, p, eps)
        if params.get("swap", False):
            d_an = min(d_an, ref_pairwise_distance(rp, rn, p, eps))
        out.append(max(d_ap - d_an + margin, 0.0))
    return out


def ref_contrastive(arrays, params):
    x1, x2, y = arrays
    m = params.get("margin", 1.0)
    out = []
    for u, v, lab in zip(x1.tolist(), x2.tolist(), y.tolist()):
        d = math.sqrt(math.fsum((a - b) ** 2 for a, b in zip(u, v)))
        out.append(d * d if lab == 1 else max(0.0, m - d) ** 2)
    return out


def ref_cosine(u, v):
    """torch cosine_embedding_loss's cosine: 1e-12 added to each squared norm."""
    s = math.fsum(a * b for a, b in zip(u, v))
    m1 = math.fsum(a * a for a in u) + 1e-12
    m2 = math.fsum(b * b for b in v) + 1e-12
    return s / math.sqrt(m1 * m2)


def ref_cosine_embedding(arrays, params):
    x1, x2, y = arrays
    m = params.get("margin", 0.0)
    out = []
    for u, v, lab in zip(x1.tolist(), x2.tolist(), y.tolist()):
        c = ref_cosine(u, v)
        out.append(1.0 - c if lab == 1 else max(0.0, c - m))
    return out


def ref_margin_ranking(arrays, params):
    x1, x2, y = arrays
    m = params.get("margin", 0.0)
    return [max(0.0, -t * (a - b) + m) for a, b, t in zip(x1.tolist(), x2.tolist(), y.tolist())]


def ref_unit(row):
    n = math.sqrt(math.fsum(v * v for v in row))
    n = max(n, 1e-12)
    return [v / n for v in row]


def ref_lse(vals):
    m = max(vals)
    return m + math.log(math.fsum(math.exp(v - m) for v in vals))


def ref_info_nce(arrays, params):
    """Explicit loops: batches of consecutive rows, cosine similarities, -log softmax of the positive
    (symmetric: the SimCLR NT-Xent terms of both views, each over the other 2m - 1 views)."""
    q, k = (np.asarray(x, dtype=np.float64).tolist() for x in arrays)
    tau = params.get("temperature", 0.07)
    n = len(q)
    b = params.get("batch_size") or n
    sym = params.get("symmetric", False)
    out = []
    for start in range(0, n, b):
        idx = list(range(start, min(start + b, n)))
        qh = [ref_unit(q[i]) for i in idx]
        kh = [ref_unit(k[i]) for i in idx]
        def sim(u, v):
            return math.fsum(a * c for a, c in zip(u, v)) / tau

        m = len(idx)
        for r in range(m):
            pos = sim(qh[r], kh[r])
            if sym:
                # SimCLR NT-Xent over the 2m views of the batch: every other view is a candidate
                row = pos - ref_lse([sim(qh[r], kh[j]) for j in range(m)] + [sim(qh[r], qh[j]) for j in range(m) if j != r])
                col = pos - ref_lse([sim(kh[r], qh[j]) for j in range(m)] + [sim(kh[r], kh[j]) for j in range(m) if j != r])
                out.append(-0.5 * (row + col))
            else:
                out.append(-(pos - ref_lse([sim(qh[r], kh[j]) for j in range(m)])))
    return out


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------


def _make_triplet(rng, p):
    n, d = 40, 5
    a = rng.normal(size=(n, d))
    pos = a + rng.normal(size=(n, d)) * 0.7
    neg = a + rng.normal(size=(n, d)) * rng.choice([0.5, 1.0, 2.0], size=(n, 1))
    if p.get("_f32"):
        return [x.astype(np.float32) for x in (a, pos, neg)]
    return [a, pos, neg]


def _labels01(rng, n):
    return rng.integers(0, 2, size=n)


def _make_pairs(rng, p, labels):
    n, d = 40, 4
    x1 = rng.normal(size=(n, d))
    # Pairs at many distances: some inside the margin, some beyond.
    x2 = x1 + rng.normal(size=(n, d)) * rng.choice([0.1, 0.4, 1.0], size=(n, 1))
    y = labels(rng, n)
    if p.get("_edges"):
        x1[0] = 0.0  # zero vector
        x2[1] = x1[1]  # identical pair
    return [x1, x2, y]


def _make_contrastive(rng, p):
    return _make_pairs(rng, p, _labels01)


def _make_cosine(rng, p):
    return _make_pairs(rng, p, lambda r, n: r.choice([-1, 1], size=n))


def _make_cosine_grad(rng, p):
    x1, x2, y = _make_pairs(rng, {}, lambda r, n: r.choice([-1, 1], size=n))
    return [x1, -x2 if p.get("margin", 0.0) < -0.2 else x2, y]


def _make_ranking(rng, p):
    n = 50
    x1 = rng.normal(size=n) * 2
    x2 = rng.normal(size=n) * 2
    y = rng.choice([-1, 1], size=n)
    return [x1, x2, y]


def _make_views(rng, p):
    n, d = p.get("_n", 20), p.get("_d", 5)
    latent = rng.normal(size=(n, d))
    q = latent + rng.normal(size=(n, d)) * 0.5
    k = latent + rng.normal(size=(n, d)) * 0.5
    if p.get("_edges"):
        q[3] = 0.0  # zero query: similarity 0 with every key
        k[5] = 0.0
        k[7] = q[7] * 1e6  # perfectly aligned, large norm
    return [q, k]


CASES = {
    "triplet-margin": Case(
        make=_make_triplet,
        reference=ref_triplet,
        params=[
            {},
            {"p": 1.0},
            {"p": 3.0},
            {"p": 1.5, "eps": 0.0},
            {"p": float("inf")},
            {"swap": True},
            {"swap": True, "p": 1.0, "margin": 0.5},
            {"margin": 0.3, "eps": 1e-3},
            {"_f32": True},
        ],
        rtol=1e-10,
        grad_params=[{}, {"p": 1.0}, {"p": 3.0}, {"p": float("inf")}, {"swap": True}, {"swap": True, "margin": 2.0}],
    ),
    "contrastive": Case(
        make=_make_contrastive,
        reference=ref_contrastive,
        params=[{}, {"margin": 2.0}, {"margin": 0.0}, {"_edges": True}, {"_edges": True, "margin": 0.5}],
        grad_params=[{}, {"margin": 2.0}, {"margin": 0.5}],
    ),
    "cosine-embedding": Case(
        make=_make_cosine,
        reference=ref_cosine_embedding,
        params=[{}, {"margin": 0.5}, {"margin": -0.3}, {"_edges": True}, {"_edges": True, "margin": -0.5}],
        grad_make=_make_cosine_grad,
        grad_params=[{}, {"margin": 0.5}, {"margin": -0.5}],
    ),
    "margin-ranking": Case(
        make=_make_ranking,
        reference=ref_margin_ranking,
        params=[{}, {"margin": 0.5}, {"margin": -0.2}, {"margin": 3.0}],
    ),
    "info-nce": Case(
        make=_make_views,
        reference=ref_info_nce,
        params=[
            {},
            {"temperature": 0.5},
            {"temperature": 0.5, "batch_size": 6},
            {"temperature": 0.2, "batch_size": 6, "symmetric": True},
            {"symmetric": True},
            {"temperature": 1.0, "batch_size": 1},
            {"temperature": 0.1, "batch_size": 25},
            {"temperature": 0.05, "batch_size": 7, "_edges": True},
            {"temperature": 0.3, "symmetric": True, "_edges": True},
            {"temperature": 0.01, "batch_size": 4, "_n": 50, "_d": 3},
        ],
        rtol=1e-9,
        grad_params=[
            {"temperature": 0.5, "_n": 6, "_d": 3},
            {"temperature": 0.2, "batch_size": 4, "_n": 6, "_d": 3},
            {"temperature": 0.5, "symmetric": True, "_n": 6, "_d": 3},
            {"temperature": 0.3, "batch_size": 4, "symmetric": True, "_n": 6, "_d": 3},
            {"temperature": 1.0, "batch_size": 1, "_n": 6, "_d": 3},
        ],
    ),
}
