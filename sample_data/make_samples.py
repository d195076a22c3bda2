"""Regenerate the bundled sample data (deterministic): python sample_data/make_samples.py

Small, realistic examples for every loss family: a 5-class classifier's logits with
labels (Parquet, CSV, NPY, NPZ), a binary classifier, regressors, token log-probabilities,
soft targets and Gaussians, distillation and RL rollouts, embeddings, boxes and a VAE batch.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(20261127)


def classifier(n: int = 200, c: int = 5):
    label = rng.integers(0, c, size=n)
    logits = rng.normal(0.0, 1.0, size=(n, c))
    # A decent but imperfect model: the true class gets a boost, sometimes a wrong one does.
    logits[np.arange(n), label] += rng.normal(2.0, 1.0, size=n)
    confused = rng.random(n) < 0.15
    wrong = (label + rng.integers(1, c, size=n)) % c
    logits[np.flatnonzero(confused), wrong[confused]] += 3.0
    return logits.astype(np.float32), label.astype(np.int64)


# ---------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------
# Sample data for the classification family (nll, focal, entropy, token-cross-entropy).
#
# make(here, rng) writes into the sample_data/ directory ``here``:
#   classification_multilabel.csv     4-label detector head: logit_0..3, label_0..3 (focal, bce)
#   classification_probs.csv          5-class probability rows p_0..p_4 + label (entropy, --pred-kind probs)
#   classification_logprobs.parquet   id, logprobs (fixed-size list of 5 log-probabilities), label (nll)
#   classification_tokens.parquet     id, logprobs (ragged list: log p of each observed token), tokens (token-cross-entropy)
#   classification_token_logits.npy   (N, T, V) float32 logits of a tiny language model
#   classification_token_labels.npy   (N, T) int64 next-token labels, -100 on padding


def _classification_log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def make_classification(here: str, rng) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Multi-label detector head (K = 4 labels, rare positives): focal / bce with (N, K).
    n, k = 240, 4
    prevalence = np.array([0.05, 0.1, 0.2, 0.4])
    label = (rng.random((n, k)) < prevalence).astype(np.int64)
    logit = rng.normal(-2.0, 1.2, size=(n, k)) + 3.0 * label
    with open(os.path.join(here, "classification_multilabel.csv"), "w") as fh:
        fh.write(",".join([f"logit_{j}" for j in range(k)] + [f"label_{j}" for j in range(k)]) + "\n")
        for i in range(n):
            fh.write(",".join([f"{v:.5f}" for v in logit[i]] + [str(int(t)) for t in label[i]]) + "\n")

    # Probability rows of a 5-class classifier (some confident, some unsure): entropy.
    n, c = 200, 5
    y = rng.integers(0, c, size=n)
    scores = rng.normal(0.0, 1.0, size=(n, c))
    scores[np.arange(n), y] += rng.uniform(0.0, 5.0, size=n)
    lsm = _classification_log_softmax(scores)
    probs = np.exp(lsm)
    with open(os.path.join(here, "classification_probs.csv"), "w") as fh:
        fh.write(",".join(f"p_{j}" for j in range(c)) + ",label\n")
        for i in range(n):
            fh.write(",".join(f"{v:.10f}" for v in probs[i]) + f",{int(y[i])}\n")

    # Log-probabilities (a log_softmax output) with labels: nll.
    ids = np.array([f"s{i:04d}" for i in range(n)])
    table = pa.table(
        {
            "id": pa.array(ids),
            "logprobs": pa.FixedSizeListArray.from_arrays(pa.array(lsm.ravel()), c),
            "label": pa.array(y.astype(np.int64)),
        }
    )
    pq.write_table(table, os.path.join(here, "classification_logprobs.parquet"))

    # Per-token log-probabilities of generated sequences of different lengths (ragged).
    m = 60
    lengths = rng.integers(3, 40, size=m)
    rows = []
    tokens = []
    for t in lengths:
        # Most tokens are likely under the model, a few are surprising.
        lp = -rng.gamma(0.6, 1.5, size=int(t))
        surprise = rng.random(int(t)) < 0.05
        lp[surprise] -= rng.uniform(3.0, 8.0, size=int(surprise.sum()))
        rows.append(np.round(lp, 6))
        tokens.append(int(t))
    table = pa.table(
        {
            "id": pa.array([f"seq{i:03d}" for i in range(m)]),
            "logprobs": pa.array([r.tolist() for r in rows], type=pa.list_(pa.float64())),
            "tokens": pa.array(np.array(tokens, dtype=np.int64)),
        }
    )
    pq.write_table(table, os.path.join(here, "classification_tokens.parquet"))

    # A tiny language model's logits (N, T, V) with next-token labels (N, T), right-padded.
    n_seq, t_max, vocab = 8, 12, 50
    labels = rng.integers(0, vocab, size=(n_seq, t_max))
    logits = rng.normal(0.0, 1.0, size=(n_seq, t_max, vocab))
    hit = rng.random((n_seq, t_max)) < 0.6
    ii, tt = np.nonzero(hit)
    logits[ii, tt, labels[ii, tt]] += rng.uniform(1.0, 4.0, size=len(ii))
    seq_len = rng.integers(5, t_max + 1, size=n_seq)
    seq_len[0] = t_max
    pad = np.arange(t_max)[None, :] >= seq_len[:, None]
    labels[pad] = -100
    np.save(os.path.join(here, "classification_token_logits.npy"), logits.astype(np.float32))
    np.save(os.path.join(here, "classification_token_labels.npy"), labels.astype(np.int64))


# ---------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------
# Sample data for the divergence and distillation-rl families (merged into
# sample_data/make_samples.py by the lead).
#
# divergence_soft.csv:             soft targets (target_0..4, probabilities from annotator votes) and a
#                                  model's logits (logit_0..4): kl-divergence, js-divergence.
# divergence_gaussian.csv:         a VAE encoder's mu_0..7 and logvar_0..7 (prior N(0, I)): gaussian-kl.
# divergence_gaussian_full.parquet: mu (list of 3) and full covariance cov (3 x 3 nested lists) of q,
#                                  with a prior mean prior_mu and prior covariance prior_cov: gaussian-kl
#                                  with (N, D, D) inputs.
# rl_distillation.parquet:         student and teacher logits (lists of 10) and the true label.
# rl_ppo.csv:                      new_logp, old_logp, advantage of sampled actions: ppo-clip.
# rl_policy_kl.parquet:            per-token log-probs of sampled responses of different lengths under the
#                                  policy (policy_logp) and the reference model (ref_logp): policy-kl.


def _divergence_log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _divergence_fixed(a: np.ndarray) -> pa.Array:
    """(N, K) or (N, K, K) as (nested) fixed-size list column."""
    arr = pa.array(np.ascontiguousarray(a).ravel())
    for width in reversed(a.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, width)
    return arr


def make_divergence(here: str, rng) -> None:
    # Soft targets: 5 annotators' votes over 5 classes, smoothed; a model's logits near the truth.
    n, c = 150, 5
    label = rng.integers(0, c, size=n)
    votes = rng.multinomial(5, np.full(c, 0.05) + 0.75 * np.eye(c)[0], size=n)
    votes = np.array([np.roll(v, k) for v, k in zip(votes, label)])
    target = (votes + 0.1) / (votes + 0.1).sum(axis=1, keepdims=True)
    logits = np.log(target) + rng.normal(0.0, 0.8, size=(n, c))
    logits[rng.choice(n, 6, replace=False)] += 4.0 * np.eye(c)[rng.integers(0, c, size=6)]  # confident mistakes
    with open(os.path.join(here, "divergence_soft.csv"), "w") as fh:
        fh.write(",".join([f"target_{k}" for k in range(c)] + [f"logit_{k}" for k in range(c)]) + "\n")
        for t, x in zip(target, logits):
            fh.write(",".join([f"{v:.10f}" for v in t] + [f"{v:.5f}" for v in x]) + "\n")

    # A VAE encoder's posterior: 8 latent dims, most near the prior, a few informative.
    n, d = 200, 8
    mu = rng.normal(0.0, 1.0, size=(n, d)) * np.array([1.5, 1.2, 1.0, 0.6, 0.2, 0.1, 0.05, 0.05])
    logvar = rng.normal(0.0, 0.2, size=(n, d)) + np.array([-3.0, -2.5, -2.0, -1.0, -0.2, -0.05, 0.0, 0.0])
    with open(os.path.join(here, "divergence_gaussian.csv"), "w") as fh:
        fh.write(",".join([f"mu_{k}" for k in range(d)] + [f"logvar_{k}" for k in range(d)]) + "\n")
        for m, lv in zip(mu, logvar):
            fh.write(",".join(f"{v:.6f}" for v in (*m, *lv)) + "\n")

    # Full covariances (D = 3): q's covariance A Aᵀ + 0.1 I, the prior's a fixed correlated matrix.
    n, d = 100, 3
    mu = rng.normal(0.0, 1.0, size=(n, d))
    a = rng.normal(0.0, 0.5, size=(n, d, d))
    cov = a @ np.swapaxes(a, 1, 2) + 0.1 * np.eye(d)
    prior_cov = np.broadcast_to(np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.3], [0.2, 0.3, 1.0]]), (n, d, d))
    prior_mu = np.zeros((n, d))
    pq.write_table(
        pa.table(
            {
                "mu": _divergence_fixed(mu),
                "cov": _divergence_fixed(cov),
                "prior_mu": _divergence_fixed(prior_mu),
                "prior_cov": _divergence_fixed(np.array(prior_cov)),
            }
        ),
        os.path.join(here, "divergence_gaussian_full.parquet"),
    )

    # Distillation: a 10-class teacher and a weaker student that mostly agrees with it.
    n, c = 200, 10
    label = rng.integers(0, c, size=n)
    teacher = rng.normal(0.0, 1.0, size=(n, c))
    teacher[np.arange(n), label] += rng.normal(4.0, 1.0, size=n)
    student = 0.7 * teacher + rng.normal(0.0, 1.0, size=(n, c))
    pq.write_table(
        pa.table(
            {
                "student": _divergence_fixed(student.astype(np.float32)),
                "teacher": _divergence_fixed(teacher.astype(np.float32)),
                "label": pa.array(label.astype(np.int64)),
            }
        ),
        os.path.join(here, "rl_distillation.parquet"),
    )

    # PPO: one update epoch after collection; the new policy has moved a little.
    n = 256
    old = _divergence_log_softmax(rng.normal(0.0, 1.5, size=(n, 6)))[np.arange(n), rng.integers(0, 6, size=n)]
    new = old + rng.normal(0.0, 0.15, size=n)
    adv = rng.normal(0.0, 1.0, size=n)
    new += 0.1 * np.sign(adv) * rng.random(n)  # the update favoured positive-advantage actions
    new = np.minimum(new, 0.0)
    with open(os.path.join(here, "rl_ppo.csv"), "w") as fh:
        fh.write("new_logp,old_logp,advantage\n")
        for a_, b_, c_ in zip(new, old, adv):
            fh.write(f"{a_:.6f},{b_:.6f},{c_:.6f}\n")

    # RLHF: 60 sampled responses of 3..40 tokens; the policy has drifted from the reference.
    n = 60
    lengths = rng.integers(3, 41, size=n)
    pol_rows, ref_rows = [], []
    for t in lengths:
        ref = _divergence_log_softmax(rng.normal(0.0, 2.0, size=(t, 50)))
        pol = _divergence_log_softmax(rng.normal(0.0, 2.0, size=(t, 50)) * 0.3 + np.exp(ref) * 8.0)
        tok = rng.integers(0, 50, size=t)
        # tokens sampled from the policy: the most likely token under it, sometimes another
        best = pol.argmax(axis=1)
        tok = np.where(rng.random(t) < 0.7, best, tok)
        pol_rows.append(np.round(pol[np.arange(t), tok], 6).tolist())
        ref_rows.append(np.round(ref[np.arange(t), tok], 6).tolist())
    pq.write_table(
        pa.table(
            {
                "id": pa.array([f"resp{i:03d}" for i in range(n)]),
                "policy_logp": pa.array(pol_rows, type=pa.list_(pa.float64())),
                "ref_logp": pa.array(ref_rows, type=pa.list_(pa.float64())),
            }
        ),
        os.path.join(here, "rl_policy_kl.parquet"),
    )


# ---------------------------------------------------------------------------
# token-level RL rollouts
# ---------------------------------------------------------------------------
# rl_rollouts_padded.parquet: 48 responses of 4..24 tokens as padded (N, 24) fixed-size lists:
#     new_logp, old_logp, ref_logp (log-probs of the sampled tokens under the current policy, the
#     rollout policy and the reference model; 0.0 at padding), mask (1 = response token, 0 =
#     padding), advantages (per token, GAE-like; 0.0 at padding) and reward (one per sequence).
# rl_rollouts_ragged.parquet: the same rollouts as variable-length lists (no padding, no mask).


def make_rl_tokens(here: str, rng) -> None:
    n, width = 48, 24
    lengths = rng.integers(4, width + 1, size=n)
    lengths[0] = width  # at least one full row
    rows = {k: [] for k in ("new_logp", "old_logp", "ref_logp", "advantages")}
    reward = rng.normal(0.0, 1.0, size=n)
    for i, t in enumerate(lengths):
        old = _divergence_log_softmax(rng.normal(0.0, 2.0, size=(t, 40)))
        tok = np.where(rng.random(t) < 0.6, old.argmax(axis=1), rng.integers(0, 40, size=t))
        old_lp = old[np.arange(t), tok]
        ref_lp = old_lp + rng.normal(0.0, 0.2, size=t)
        new_lp = old_lp + rng.normal(0.0, 0.15, size=t) + 0.1 * np.sign(reward[i]) * rng.random(t)
        # GAE-like per-token advantages: the sequence reward discounted back from the last token
        adv = reward[i] * 0.95 ** np.arange(t)[::-1] + rng.normal(0.0, 0.1, size=t)
        for key, v in (("new_logp", new_lp), ("old_logp", old_lp), ("ref_logp", ref_lp), ("advantages", adv)):
            if key != "advantages":
                v = np.minimum(v, 0.0)
            rows[key].append(np.round(v, 6))
    ids = pa.array([f"roll{i:03d}" for i in range(n)])

    def padded(lists):
        out = np.zeros((n, width))
        for i, v in enumerate(lists):
            out[i, : len(v)] = v
        return pa.FixedSizeListArray.from_arrays(pa.array(out.ravel()), width)

    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int8)
    pq.write_table(
        pa.table(
            {
                "id": ids,
                **{k: padded(v) for k, v in rows.items()},
                "mask": pa.FixedSizeListArray.from_arrays(pa.array(mask.ravel()), width),
                "reward": pa.array(np.round(reward, 6)),
            }
        ),
        os.path.join(here, "rl_rollouts_padded.parquet"),
    )
    pq.write_table(
        pa.table(
            {
                "id": ids,
                **{k: pa.array([r.tolist() for r in v], type=pa.list_(pa.float64())) for k, v in rows.items()},
                "reward": pa.array(np.round(reward, 6)),
            }
        ),
        os.path.join(here, "rl_rollouts_ragged.parquet"),
    )


# ---------------------------------------------------------------------------
# regression
# ---------------------------------------------------------------------------
# Sample data for the regression family (merged into sample_data/make_samples.py by the lead).
#
# regression_multi.csv:  a 3-output regressor (pred_0..2, target_0..2) with a few outliers.
# regression_var.csv:    a heteroscedastic regressor: predicted mean and variance per sample.
# regression_counts.csv: a count model: predicted log-rate and rate, observed Poisson count.


def make_regression(here: str, rng) -> None:
    # Multi-output regression (N, 3), each output on its own scale.
    n = 200
    scale = np.array([1.0, 5.0, 0.2])
    target = rng.normal(0.0, 1.0, size=(n, 3)) * scale * 3
    pred = target + rng.normal(0.0, 1.0, size=(n, 3)) * scale * 0.5
    out = rng.choice(n, 4, replace=False)
    pred[out, rng.integers(0, 3, size=4)] += rng.choice([-1, 1], 4) * 6.0
    with open(os.path.join(here, "regression_multi.csv"), "w") as fh:
        fh.write(",".join([f"pred_{k}" for k in range(3)] + [f"target_{k}" for k in range(3)]) + "\n")
        for p, t in zip(pred, target):
            fh.write(",".join(f"{v:.5f}" for v in (*p, *t)) + "\n")

    # Heteroscedastic regression: the noise grows with |x|; the model predicts it (imperfectly).
    n = 200
    x = rng.uniform(-3.0, 3.0, size=n)
    true_sd = 0.3 + 0.5 * np.abs(x)
    target = 2.0 * x + 1.0 + rng.normal(0.0, 1.0, size=n) * true_sd
    mean = 2.0 * x + 1.0 + rng.normal(0.0, 0.1, size=n)
    var = (true_sd * rng.uniform(0.7, 1.4, size=n)) ** 2
    with open(os.path.join(here, "regression_var.csv"), "w") as fh:
        fh.write("x,mean,var,target\n")
        for a, m, v, t in zip(x, mean, var, target):
            fh.write(f"{a:.4f},{m:.5f},{v:.5f},{t:.5f}\n")

    # Counts: Poisson with a log-linear rate; the model's log-rate is close to the truth.
    n = 200
    feature = rng.uniform(0.0, 2.0, size=n)
    log_rate_true = 0.3 + 1.1 * feature
    count = rng.poisson(np.exp(log_rate_true))
    log_rate = log_rate_true + rng.normal(0.0, 0.15, size=n)
    with open(os.path.join(here, "regression_counts.csv"), "w") as fh:
        fh.write("feature,log_rate,rate,count\n")
        for f, lr, c in zip(feature, log_rate, count):
            fh.write(f"{f:.4f},{lr:.5f},{np.exp(lr):.5f},{int(c)}\n")


# ---------------------------------------------------------------------------
# contrastive
# ---------------------------------------------------------------------------
# Sample data for the contrastive family (merged into sample_data/make_samples.py).
#
# - contrastive_triplets.parquet: anchor / positive / negative embeddings (N=120, D=8),
#   FixedSizeList columns, from a model that separates 12 identities imperfectly.
# - contrastive_pairs.parquet: x1 / x2 embeddings (N=150, D=8) with label (1 similar, 0 dissimilar)
#   and sign (the same pairs as ±1, for cosine-embedding).
# - contrastive_ranking.csv: score_a, score_b, label (±1: which item a judge preferred), N=200.
# - contrastive_views.parquet: query / key embeddings (N=128, D=16): two augmented views of each
#   image; row i of key is the positive of row i of query (use --batch-size 32: 4 batches).


def _contrastive_fixed(a: np.ndarray) -> pa.Array:
    a = np.asarray(a, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), a.shape[1])


def _contrastive_unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_contrastive(here: str, rng) -> None:
    # Triplets: identities on a sphere of radius ~1.5, samples scattered around them.
    d, ids = 8, 12
    centres = _contrastive_unit(rng.normal(size=(ids, d))) * 1.5
    n = 120
    who = rng.integers(0, ids, size=n)
    other = (who + rng.integers(1, ids, size=n)) % ids
    anchor = centres[who] + rng.normal(0, 0.35, size=(n, d))
    positive = centres[who] + rng.normal(0, 0.35, size=(n, d))
    negative = centres[other] + rng.normal(0, 0.35, size=(n, d))
    hard = rng.random(n) < 0.2  # hard negatives: pulled half-way towards the anchor's identity
    negative[hard] = 0.5 * (negative[hard] + centres[who[hard]])
    pq.write_table(
        pa.table(
            {
                "id": pa.array([f"t{i:03d}" for i in range(n)]),
                "anchor": _contrastive_fixed(anchor),
                "positive": _contrastive_fixed(positive),
                "negative": _contrastive_fixed(negative),
            }
        ),
        os.path.join(here, "contrastive_triplets.parquet"),
    )

    # Pairs: about 40% similar.
    m = 150
    a_id = rng.integers(0, ids, size=m)
    label = (rng.random(m) < 0.4).astype(np.int64)
    b_id = np.where(label == 1, a_id, (a_id + rng.integers(1, ids, size=m)) % ids)
    x1 = 0.5 * centres[a_id] + rng.normal(0, 0.15, size=(m, d))
    x2 = 0.5 * centres[b_id] + rng.normal(0, 0.15, size=(m, d))
    pq.write_table(
        pa.table(
            {
                "id": pa.array([f"p{i:03d}" for i in range(m)]),
                "x1": _contrastive_fixed(x1),
                "x2": _contrastive_fixed(x2),
                "label": pa.array(label),
                "sign": pa.array(2 * label - 1),
            }
        ),
        os.path.join(here, "contrastive_pairs.parquet"),
    )

    # Ranking: a reward model's scores for two responses; the judge prefers a with prob σ(true gap).
    k = 200
    quality_a = rng.normal(size=k)
    quality_b = rng.normal(size=k)
    pref = np.where(rng.random(k) < 1 / (1 + np.exp(-3 * (quality_a - quality_b))), 1, -1)
    score_a = quality_a + rng.normal(0, 0.5, size=k)
    score_b = quality_b + rng.normal(0, 0.5, size=k)
    with open(os.path.join(here, "contrastive_ranking.csv"), "w") as fh:
        fh.write("pair,score_a,score_b,label\n")
        for i in range(k):
            fh.write(f"r{i:03d},{score_a[i]:.6f},{score_b[i]:.6f},{int(pref[i])}\n")

    # Two views of each image: a shared latent plus view-specific noise.
    v, dv = 128, 16
    latent = rng.normal(size=(v, dv))
    query = latent + rng.normal(0, 0.6, size=(v, dv))
    key = latent + rng.normal(0, 0.6, size=(v, dv))
    pq.write_table(
        pa.table(
            {
                "id": pa.array([f"img{i:03d}" for i in range(v)]),
                "query": _contrastive_fixed(query),
                "key": _contrastive_fixed(key),
            }
        ),
        os.path.join(here, "contrastive_views.parquet"),
    )


# ---------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------
# Sample data for the detection (iou, giou, diou, ciou) and generative (vae) losses.
#
# make(here, rng) writes:
#   detection_boxes.csv      id, pred_x1..pred_y2, true_x1..true_y2 (xyxy pixels, 120 boxes)
#   detection_boxes.parquet  the same boxes as FixedSizeList<4> columns `pred`, `target` in cxcywh
#   vae_batch.parquet        a small VAE batch: recon (logits, D=16), x in [0, 1], mu, logvar (Z=4)


def _detection_boxes(rng, n: int = 120):
    """Ground-truth boxes in a 640x480 image and a detector's predictions of them."""
    w = rng.uniform(16, 200, n)
    h = w * rng.lognormal(0.0, 0.4, n)
    cx = rng.uniform(0, 640, n)
    cy = rng.uniform(0, 480, n)
    true = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    true[:, 0::2] = np.clip(true[:, 0::2], 0, 640)
    true[:, 1::2] = np.clip(true[:, 1::2], 0, 480)
    # Predictions: mostly good (jittered centre and size), a few poor localisations and misses.
    tw, th = true[:, 2] - true[:, 0], true[:, 3] - true[:, 1]
    pcx = (true[:, 0] + true[:, 2]) / 2 + rng.normal(0, 0.08, n) * tw
    pcy = (true[:, 1] + true[:, 3]) / 2 + rng.normal(0, 0.08, n) * th
    pw = tw * rng.lognormal(0.0, 0.12, n)
    ph = th * rng.lognormal(0.0, 0.12, n)
    bad = rng.random(n) < 0.1
    pcx[bad] += rng.choice([-1, 1], bad.sum()) * tw[bad] * rng.uniform(0.6, 1.5, bad.sum())
    pw[bad] *= rng.uniform(0.5, 1.6, bad.sum())
    pred = np.stack([pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2], axis=1)
    return np.round(pred, 2), np.round(true, 2)


def _detection_cxcywh(b):
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def _detection_vae(rng, n: int = 64, d: int = 16, z: int = 4):
    """A VAE on 4x4 binarised-ish images: targets in [0, 1], decoder logits, encoder mu/logvar."""
    x = np.clip(rng.beta(0.4, 0.4, size=(n, d)), 0.0, 1.0)
    x = np.round(x, 3)
    logit_x = np.log(np.clip(x, 0.02, 0.98) / (1 - np.clip(x, 0.02, 0.98)))
    recon = logit_x + rng.normal(0, 1.0, size=(n, d))
    mu = rng.normal(0, 0.8, size=(n, z))
    logvar = rng.normal(-1.0, 0.5, size=(n, z))
    return recon.astype(np.float32), x.astype(np.float32), mu.astype(np.float32), logvar.astype(np.float32)


def make_detection(here: str, rng) -> None:
    pred, true = _detection_boxes(rng)
    n = len(pred)
    cols = ["x1", "y1", "x2", "y2"]
    with open(os.path.join(here, "detection_boxes.csv"), "w") as fh:
        fh.write("id," + ",".join(f"pred_{c}" for c in cols) + "," + ",".join(f"true_{c}" for c in cols) + "\n")
        for i in range(n):
            fh.write(
                f"b{i:04d},"
                + ",".join(f"{v:.2f}" for v in pred[i])
                + ","
                + ",".join(f"{v:.2f}" for v in true[i])
                + "\n"
            )
    pc, tc = _detection_cxcywh(pred), _detection_cxcywh(true)
    table = pa.table(
        {
            "id": pa.array([f"b{i:04d}" for i in range(n)]),
            "pred": pa.FixedSizeListArray.from_arrays(pa.array(pc.ravel()), 4),
            "target": pa.FixedSizeListArray.from_arrays(pa.array(tc.ravel()), 4),
        }
    )
    pq.write_table(table, os.path.join(here, "detection_boxes.parquet"))

    recon, x, mu, logvar = _detection_vae(rng)
    m, d = recon.shape
    z = mu.shape[1]
    table = pa.table(
        {
            "id": pa.array([f"v{i:03d}" for i in range(m)]),
            "recon": pa.FixedSizeListArray.from_arrays(pa.array(recon.ravel()), d),
            "x": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), d),
            "mu": pa.FixedSizeListArray.from_arrays(pa.array(mu.ravel()), z),
            "logvar": pa.FixedSizeListArray.from_arrays(pa.array(logvar.ravel()), z),
        }
    )
    pq.write_table(table, os.path.join(here, "vae_batch.parquet"))


def make_examples(here: str) -> None:
    """What the README's sharded examples run on: shards/part-0.parquet holds rows 0-99 of
    classifier.parquet and shards/part-1.parquet rows 100-199."""
    table = pq.read_table(os.path.join(here, "classifier.parquet"))
    half = table.num_rows // 2
    os.makedirs(os.path.join(here, "shards"), exist_ok=True)
    pq.write_table(table.slice(0, half), os.path.join(here, "shards", "part-0.parquet"))
    pq.write_table(table.slice(half), os.path.join(here, "shards", "part-1.parquet"))


_LM_WORDS = (
    "the river rose through the valley and the old mill turned again while farmers counted "
    "grain under a grey sky ; in 1887 the town council voted to build a stone bridge , "
    "which still stands = history = the bridge carried carts , later cars , and once a circus"
).split()


def _lm_text(rng, n_words: int) -> str:
    words = [_LM_WORDS[int(i)] for i in rng.integers(0, len(_LM_WORDS), n_words)]
    if rng.random() < 0.5:
        words.insert(int(rng.integers(0, n_words)), "café")  # a 2-byte UTF-8 character
    return " ".join(words)


def _lm_token_logprobs(rng, n: int) -> list[float]:
    """Log-probabilities of n sampled tokens (<= 0), rounded to 6 digits as APIs print them."""
    return [round(float(v), 6) for v in -rng.gamma(0.8, 2.0, n)]


def make_lm(here: str, rng) -> None:
    """Language-model logs in the published formats of the tools that write them."""
    import hashlib
    import json

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # lm-evaluation-harness --log_samples for a loglikelihood_rolling task (wikitext): one line per
    # document; resps / filtered_resps hold the document's total log-likelihood, and each metric
    # the (loglikelihood, words or bytes) pair its aggregation (weighted_perplexity, bits_per_byte)
    # adds up. Words are re.split(r"\s+", text), bytes len(text.encode("utf-8")), as the harness counts.
    import re

    with open(os.path.join(here, "lm_harness_wikitext.jsonl"), "w") as fh:
        for i in range(12):
            text = _lm_text(rng, int(rng.integers(20, 90)))
            n_tokens = int(len(text) / 3.6) + 1
            ll = round(math.fsum(_lm_token_logprobs(rng, n_tokens)), 6)
            words = len(re.split(r"\s+", text))
            n_bytes = len(text.encode("utf-8"))
            rec = {
                "doc_id": i,
                "doc": {"page": text},
                "target": text,
                "arguments": {"gen_args_0": {"arg_0": text}},
                "resps": [[ll]],
                "filtered_resps": [ll],
                "filter": "none",
                "metrics": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
                "doc_hash": sha(json.dumps({"page": text}, sort_keys=True)),
                "prompt_hash": sha(text),
                "target_hash": sha(text),
                "word_perplexity": [ll, words],
                "byte_perplexity": [ll, n_bytes],
                "bits_per_byte": [ll, n_bytes],
            }
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")

    # OpenAI-compatible chat completions with logprobs=true (vLLM, llama.cpp, OpenAI): one
    # response per line; choices[0].logprobs.content holds one entry per generated token.
    with open(os.path.join(here, "lm_openai_chat.jsonl"), "w") as fh:
        for i in range(10):
            n = int(rng.integers(3, 15))
            words = [_LM_WORDS[int(k)] for k in rng.integers(0, len(_LM_WORDS), n)]
            toks = [words[0]] + [" " + w for w in words[1:]]
            lps = _lm_token_logprobs(rng, n)
            content = [
                {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8")), "top_logprobs": []}
                for t, lp in zip(toks, lps)
            ]
            rec = {
                "id": f"chatcmpl-{i:04d}",
                "object": "chat.completion",
                "created": 1764400000 + i,
                "model": "sample-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(toks)},
                        "logprobs": {"content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n},
            }
            fh.write(json.dumps(rec) + "\n")

    # OpenAI-compatible (legacy) completions with logprobs=N: choices[0].logprobs.token_logprobs.
    with open(os.path.join(here, "lm_openai_completions.jsonl"), "w") as fh:
        for i in range(10):
            n = int(rng.integers(3, 15))
            words = [_LM_WORDS[int(k)] for k in rng.integers(0, len(_LM_WORDS), n)]
            toks = [" " + w for w in words]
            offsets = [sum(len(t) for t in toks[:k]) for k in range(n)]
            rec = {
                "id": f"cmpl-{i:04d}",
                "object": "text_completion",
                "created": 1764400000 + i,
                "model": "sample-model",
                "choices": [
                    {
                        "text": "".join(toks),
                        "index": 0,
                        "logprobs": {
                            "tokens": toks,
                            "token_logprobs": _lm_token_logprobs(rng, n),
                            "top_logprobs": None,
                            "text_offset": offsets,
                        },
                        "finish_reason": "length",
                    }
                ],
            }
            fh.write(json.dumps(rec) + "\n")


def main() -> None:
    logits, label = classifier()
    n, c = logits.shape
    ids = np.array([f"s{i:04d}" for i in range(n)])
    table = pa.table(
        {
            "id": pa.array(ids),
            "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), c),
            "label": pa.array(label),
        }
    )
    pq.write_table(table, os.path.join(HERE, "classifier.parquet"))
    with open(os.path.join(HERE, "classifier.csv"), "w") as fh:
        fh.write("id," + ",".join(f"logit_{k}" for k in range(c)) + ",label\n")
        for i in range(n):
            fh.write(ids[i] + "," + ",".join(repr(float(v)) for v in logits[i]) + f",{label[i]}\n")
    np.save(os.path.join(HERE, "classifier_logits.npy"), logits)
    np.save(os.path.join(HERE, "classifier_labels.npy"), label)
    np.savez(os.path.join(HERE, "classifier.npz"), logits=logits, label=label)
    # Labels in another order, keyed by id (for --id-col).
    perm = rng.permutation(n)
    with open(os.path.join(HERE, "classifier_labels_shuffled.csv"), "w") as fh:
        fh.write("id,label\n")
        for i in perm:
            fh.write(f"{ids[i]},{label[i]}\n")

    # Binary classifier: one logit per sample.
    m = 300
    y = (rng.random(m) < 0.3).astype(np.int64)
    logit = rng.normal(-1.0, 1.5, size=m) + 2.5 * y
    with open(os.path.join(HERE, "binary.csv"), "w") as fh:
        fh.write("logit,label\n")
        for v, t in zip(logit, y):
            fh.write(f"{v:.6f},{t}\n")

    # Regression with a few outliers.
    k = 250
    target = rng.normal(10.0, 3.0, size=k)
    pred = target + rng.normal(0.0, 0.8, size=k)
    pred[rng.choice(k, 5, replace=False)] += rng.choice([-1, 1], 5) * rng.uniform(8, 15, 5)
    with open(os.path.join(HERE, "regression.csv"), "w") as fh:
        fh.write("pred,target\n")
        for a, b in zip(pred, target):
            fh.write(f"{a:.5f},{b:.5f}\n")

    # One example per family (each family's generator keeps its own seed).
    make_classification(HERE, np.random.default_rng(20261201))
    make_divergence(HERE, np.random.default_rng(20261127))
    make_regression(HERE, np.random.default_rng(20261128))
    make_contrastive(HERE, np.random.default_rng(20261127))
    make_detection(HERE, np.random.default_rng(20261127))
    make_examples(HERE)
    make_classifier_b(HERE, ids, logits, label, np.random.default_rng(20261129))
    make_rl_tokens(HERE, np.random.default_rng(20261129))
    make_lm(HERE, np.random.default_rng(20261129))


def make_classifier_b(here: str, ids, logits_a, label, rng) -> None:
    """classifier_b.parquet: a second model on classifier.parquet's rows (same ids and labels),
    for `lossctl compare` and `lossctl check` out of the box. It is model A tempered (A is
    over-confident on its confused rows) with a little independent noise and a slightly larger
    margin on the true class: better on average, worse on some rows."""
    n, c = logits_a.shape
    logits = 0.75 * logits_a.astype(np.float64) + rng.normal(0.0, 0.4, size=(n, c))
    logits[np.arange(n), label] += 0.3
    table = pa.table(
        {
            "id": pa.array(ids),
            "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.astype(np.float32).ravel()), c),
            "label": pa.array(label),
        }
    )
    pq.write_table(table, os.path.join(here, "classifier_b.parquet"))


if __name__ == "__main__":
    main()
