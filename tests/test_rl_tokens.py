"""Token-level RL objectives (issue #18, item 4): ppo-clip and policy-kl over padded (N, T) or
ragged per-token log-probs, --mask, --token-mean batch|sequence, per-sequence advantages, and the
two clip fractions. Oracles are written here in plain float64 Python (math, mpmath), per token."""

from __future__ import annotations

import csv
import math
import os

import mpmath
import numpy as np
import pytest
from conftest import assert_clean_error, finite_difference, write_parquet

from lossctl.losses.rl import policy_kl, policy_kl_grad, ppo_clip, ppo_clip_grad
from lossctl.ragged import Ragged

EPS = 0.2


# -- independent references --------------------------------------------------------------------


def ref_ppo_token(new: float, old: float, adv: float, eps: float = EPS) -> float:
    """-min(r·A, clip(r, 1-ε, 1+ε)·A), r = e^(new - old) (Schulman et al. 2017, eq. 7)."""
    r = math.exp(new - old)
    return -min(r * adv, min(max(r, 1.0 - eps), 1.0 + eps) * adv)


def masked_mean_batch(values, mask) -> float:
    """TRL's masked_mean(values, mask): (values * mask).sum() / mask.sum() over the whole batch."""
    num = math.fsum(v * m for row_v, row_m in zip(values, mask) for v, m in zip(row_v, row_m))
    den = math.fsum(m for row_m in mask for m in row_m)
    return num / den


def masked_mean_sequence(values, mask) -> float:
    """OpenRLHF's masked_mean(values, mask, dim=-1).mean(): per-row masked mean, then the plain mean."""
    per_row = [math.fsum(v * m for v, m in zip(rv, rm)) / math.fsum(rm) for rv, rm in zip(values, mask)]
    return math.fsum(per_row) / len(per_row)


def ref_kl_token(lp: float, lr: float, estimator: str) -> float:
    """k1, k2, k3 (Schulman 2020, Approximating KL divergence) at 50 digits."""
    with mpmath.workdps(50):
        d = mpmath.mpf(lp) - mpmath.mpf(lr)
        if estimator == "k1":
            v = d
        elif estimator == "k2":
            v = d * d / 2
        else:
            rho = mpmath.exp(-d)
            v = (rho - 1) - mpmath.log(rho)
        return float(v)


# -- data ---------------------------------------------------------------------------------------


def rollouts(seed: int = 7, n: int = 9, width: int = 6):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, width + 1, size=n)
    lengths[0] = width
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.float64)
    old = -rng.uniform(0.05, 3.0, size=(n, width))
    new = old + rng.normal(0.0, 0.3, size=(n, width))  # some ratios leave [0.8, 1.2]
    new = np.minimum(new, -1e-3)  # finite differences stay below 0
    adv = rng.normal(0.0, 1.0, size=(n, width))
    # padding holds values no log-probability could have: they must count for nothing
    new[mask == 0] = 5.0
    old[mask == 0] = -7.0
    adv[mask == 0] = 1e6
    return new, old, adv, mask, lengths


def ragged(a, lengths) -> Ragged:
    return Ragged.from_lists([row[:t] for row, t in zip(a, lengths)])


def per_token(new, old, adv, mask):
    return [
        [ref_ppo_token(a, b, c) if m else 0.0 for a, b, c, m in zip(rn, ro, ra, rm)]
        for rn, ro, ra, rm in zip(new.tolist(), old.tolist(), adv.tolist(), mask.tolist())
    ]


# -- ppo-clip -------------------------------------------------------------------------------------


def test_ppo_tokens_against_trl_and_openrlhf_means():
    new, old, adv, mask, lengths = rollouts()
    tok = per_token(new, old, adv, mask)
    m = mask.tolist()
    batch = masked_mean_batch(tok, m)
    sequence = masked_mean_sequence(tok, m)
    assert abs(batch - sequence) > 1e-3  # the two conventions differ on these lengths
    for token_mean, want in (("batch", batch), ("sequence", sequence)):
        res = ppo_clip(
            ragged(new, np.full(len(new), 6)),
            ragged(old, np.full(len(new), 6)),
            ragged(adv, np.full(len(new), 6)),
            ragged(mask, np.full(len(new), 6)),
            clip=EPS,
            token_mean=token_mean,
        )
        num = res.loss if res.num is None else res.num
        den = np.ones(len(res.loss)) if res.den is None else res.den
        assert math.fsum(num) / math.fsum(den) == pytest.approx(want, rel=1e-13, abs=1e-15)
        # the per-sequence value is that sequence's token mean, whatever the convention
        for i in range(len(new)):
            want_i = math.fsum(tok[i]) / lengths[i]
            assert res.loss[i] == pytest.approx(want_i, rel=1e-13, abs=1e-15)
        assert res.components["tokens"].tolist() == lengths.tolist()


def test_ppo_ragged_equals_padded_with_mask():
    new, old, adv, mask, lengths = rollouts(seed=3)
    padded = ppo_clip(new, old, adv, mask)
    rag = ppo_clip(ragged(new, lengths), ragged(old, lengths), ragged(adv, lengths))
    assert padded.loss.tolist() == rag.loss.tolist()
    for k in ("clipped", "clipped_sb3", "tokens", "ratio"):
        assert padded.components[k].tolist() == rag.components[k].tolist()


def test_ppo_one_advantage_per_sequence_is_broadcast():
    new, old, _, mask, lengths = rollouts(seed=5)
    seq_adv = np.linspace(-1.5, 2.0, len(new))
    res = ppo_clip(ragged(new, lengths), ragged(old, lengths), seq_adv)
    full = np.repeat(seq_adv[:, None], new.shape[1], axis=1)
    tok = per_token(new, old, full, mask)
    for i in range(len(new)):
        assert res.loss[i] == pytest.approx(math.fsum(tok[i]) / lengths[i], rel=1e-13, abs=1e-15)


@pytest.mark.parametrize(
    "r, a, trl, sb3",
    [
        (1.5, -1.0, 0.0, 1.0),  # outside [1-ε, 1+ε] but the unclipped term is the minimum
        (1.5, 1.0, 1.0, 1.0),  # clipped term taken
        (0.5, -1.0, 1.0, 1.0),  # clipped term taken (A < 0, r below 1-ε)
        (0.5, 1.0, 0.0, 1.0),
        (1.1, 1.0, 0.0, 0.0),
        (1.2, 1.0, 0.0, 0.0),  # a tie at 1+ε is the unclipped branch; |r - 1| > ε is false
    ],
)
def test_clip_fraction_definitions(r, a, trl, sb3):
    res = ppo_clip(np.log(np.array([r])), np.zeros(1), np.array([a]), clip=EPS)
    assert res.components["clipped"].tolist() == [trl]
    assert res.components["clipped_sb3"].tolist() == [sb3]


def test_cli_reports_token_weighted_clip_fractions(cli, tmp_path):
    new, old, adv, mask, lengths = rollouts(seed=11)
    path = write_parquet(tmp_path / "roll.parquet", {"new": new, "old": old, "adv": adv, "mask": mask})
    res = cli(
        ["compute", "ppo-clip", f"{path}:new", f"{path}:old", f"{path}:adv", "--mask", f"{path}:mask", "-f", "json"]
    )
    assert res.code == 0, res.err
    trl = sb3 = 0
    for rn, ro, ra, rm in zip(new.tolist(), old.tolist(), adv.tolist(), mask.tolist()):
        for a, b, c, m in zip(rn, ro, ra, rm):
            if not m:
                continue
            ratio = math.exp(a - b)
            clipped = min(max(ratio, 1 - EPS), 1 + EPS) * c
            trl += clipped < ratio * c
            sb3 += abs(ratio - 1) > EPS
    total = int(mask.sum())
    assert 0 < trl < sb3 < total
    assert res.json["derived"]["clipfrac_trl"] == pytest.approx(trl / total, rel=1e-14)
    assert res.json["derived"]["clipfrac_sb3"] == pytest.approx(sb3 / total, rel=1e-14)
    tok = per_token(new, old, adv, mask)
    assert res.json["value"] == pytest.approx(masked_mean_batch(tok, mask.tolist()), rel=1e-13)
    seq = cli(
        [
            "compute",
            "ppo-clip",
            f"{path}:new",
            f"{path}:old",
            f"{path}:adv",
            "--mask",
            f"{path}:mask",
            "--token-mean",
            "sequence",
            "-f",
            "json",
        ]
    )
    assert seq.json["value"] == pytest.approx(masked_mean_sequence(tok, mask.tolist()), rel=1e-13)


def _per_sample(path) -> list[tuple[str, str]]:
    with open(path) as fh:
        return [(r["row"], r["loss"]) for r in csv.DictReader(fh)]


@pytest.mark.parametrize("loss", ["ppo-clip", "policy-kl"])
def test_chunk_size_does_not_change_any_number(cli, tmp_path, loss):
    new, old, adv, mask, lengths = rollouts(seed=13, n=41, width=9)
    path = write_parquet(
        tmp_path / "roll.parquet", {"new": new, "old": old, "adv": adv, "mask": mask}, row_group_size=5
    )
    inputs = [f"{path}:new", f"{path}:old"] + ([f"{path}:adv"] if loss == "ppo-clip" else [])
    outs = []
    for rows in ("1", "7", "1000"):
        ps = tmp_path / f"ps{rows}.csv"
        res = cli(
            [
                "compute",
                loss,
                *inputs,
                "--mask",
                f"{path}:mask",
                "--token-mean",
                "batch",
                "--chunk-size",
                rows,
                "--per-sample",
                str(ps),
                "-f",
                "json",
            ]
        )
        assert res.code == 0, res.err
        outs.append((res.json["value"], res.json["components"], res.json["derived"], _per_sample(ps)))
    assert outs[0] == outs[1] == outs[2]


def test_ppo_gradient_by_finite_differences():
    new, old, adv, mask, lengths = rollouts(seed=17)
    x = ragged(new, lengths)
    o, a = ragged(old, lengths), ragged(adv, lengths)
    r = np.exp(x.values - o.values)
    near_kink = np.abs(np.abs(r - 1.0) - EPS) < 1e-4
    assert not near_kink.any()  # away from the kinks the objective is smooth
    for token_mean in ("batch", "sequence"):
        g = ppo_clip_grad(x, o, a, clip=EPS, token_mean=token_mean)
        fd = finite_difference(lambda v, tm=token_mean: ppo_clip(v, o, a, clip=EPS, token_mean=tm).loss, x, 1e-7)
        np.testing.assert_allclose(g.values, fd, rtol=1e-6, atol=1e-9)
    # padded input: the gradient has the input's shape and is 0 at padding
    g = ppo_clip_grad(new, old, adv, mask)
    assert g.shape == new.shape
    assert (g[mask == 0] == 0).all() and (g[mask == 1] != 0).any()


# -- policy-kl ------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_policy_kl_token_means_against_mpmath(estimator):
    new, old, _, mask, lengths = rollouts(seed=19)
    ref = old  # the reference policy's log-probs of the same tokens
    tok = [
        [ref_kl_token(a, b, estimator) if m else 0.0 for a, b, m in zip(rn, rr, rm)]
        for rn, rr, rm in zip(new.tolist(), ref.tolist(), mask.tolist())
    ]
    res_sum = policy_kl(new, ref, mask, estimator=estimator)
    for i in range(len(new)):
        assert res_sum.loss[i] == pytest.approx(math.fsum(tok[i]), rel=1e-13, abs=1e-15)
    for token_mean, want in (
        ("batch", masked_mean_batch(tok, mask.tolist())),
        ("sequence", masked_mean_sequence(tok, mask.tolist())),
    ):
        res = policy_kl(ragged(new, lengths), ragged(ref, lengths), estimator=estimator, token_mean=token_mean)
        num = res.loss if res.num is None else res.num
        den = np.ones(len(res.loss)) if res.den is None else res.den
        assert math.fsum(num) / math.fsum(den) == pytest.approx(want, rel=1e-13, abs=1e-15)


def test_policy_kl_k3_keeps_tiny_log_ratios():
    lp = np.array([[-1.0, -2.0, -0.5]])
    lr = lp + np.array([[1e-9, -3e-8, 0.0]])
    res = policy_kl(lp, lr, np.array([[1.0, 1.0, 0.0]]), estimator="k3", token_mean="sequence")
    want = (ref_kl_token(-1.0, float(lr[0, 0]), "k3") + ref_kl_token(-2.0, float(lr[0, 1]), "k3")) / 2
    assert res.loss[0] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("token_mean", ["sum", "sequence"])
def test_policy_kl_gradient_by_finite_differences(estimator, token_mean):
    new, old, _, mask, lengths = rollouts(seed=23)
    x, r = ragged(new, lengths), ragged(old, lengths)
    g = policy_kl_grad(x, r, estimator=estimator, token_mean=token_mean)
    fd = finite_difference(lambda v: policy_kl(v, r, estimator=estimator, token_mean=token_mean).loss, x, 1e-7)
    np.testing.assert_allclose(g.values, fd, rtol=1e-6, atol=1e-9)


# -- bad input ------------------------------------------------------------------------------------


def test_empty_sequence_is_ignored_and_counted(cli, tmp_path):
    new, old, adv, mask, lengths = rollouts(seed=29)
    mask[3] = 0.0
    path = write_parquet(tmp_path / "roll.parquet", {"new": new, "old": old, "adv": adv, "mask": mask})
    res = cli(
        ["compute", "ppo-clip", f"{path}:new", f"{path}:old", f"{path}:adv", "--mask", f"{path}:mask", "-f", "json"]
    )
    assert res.code == 0, res.err
    assert res.json["rows"]["ignored"] == 1
    assert res.json["count"] == len(new) - 1
    tok = per_token(new, old, adv, mask)
    assert res.json["value"] == pytest.approx(masked_mean_batch(tok, mask.tolist()), rel=1e-13)


def test_mask_values_other_than_0_1_name_the_row(cli, tmp_path):
    new, old, adv, mask, lengths = rollouts(seed=31)
    mask[4, 0] = 2.0
    path = write_parquet(tmp_path / "roll.parquet", {"new": new, "old": old, "adv": adv, "mask": mask})
    res = cli(["compute", "ppo-clip", f"{path}:new", f"{path}:old", f"{path}:adv", "--mask", f"{path}:mask"])
    assert_clean_error(res, 1, "row 4", "mask", "0 nor 1")


def test_mismatched_lengths_name_the_row(cli, tmp_path):
    new, old, adv, mask, lengths = rollouts(seed=37)
    short = lengths.copy()
    short[2] -= 1 if short[2] > 1 else -1
    p = tmp_path / "a.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {
                "new": pa.array([r[:t].tolist() for r, t in zip(new, lengths)]),
                "old": pa.array([r[:t].tolist() for r, t in zip(old, lengths)]),
                "adv": pa.array([r[:t].tolist() for r, t in zip(adv, short)]),
            }
        ),
        p,
    )
    res = cli(["compute", "ppo-clip", f"{p}:new", f"{p}:old", f"{p}:adv"])
    assert_clean_error(res, 1, "row 2", "adv")


def test_masked_padding_is_not_validated_but_counted_tokens_are(cli, tmp_path):
    new, old, adv, mask, lengths = rollouts(seed=41)
    path = write_parquet(tmp_path / "roll.parquet", {"new": new, "ref": old, "mask": mask})
    ok = cli(["compute", "policy-kl", f"{path}:new", f"{path}:ref", "--mask", f"{path}:mask", "-f", "json"])
    assert ok.code == 0, ok.err  # the padding holds 5.0, which is no log-probability
    bad = cli(["compute", "policy-kl", f"{path}:new", f"{path}:ref"])
    assert_clean_error(bad, 1, "policy")
    assert os.path.exists(path)


# -- the README section runs on the bundled samples ----------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_block() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    section = text.split("##### RL objectives from rollout logs", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_readme_rl_commands_run_on_the_bundled_samples():
    import subprocess
    import sys

    block = _readme_block()
    assert block.count("lossctl compute") == 5
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("FORCE_COLOR", None)
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("ppo-clip = ") == 3 and out.stdout.count("policy-kl = ") == 2
    assert "clipfrac_trl" in out.stdout and "clipfrac_sb3" in out.stdout


def test_readme_samples_against_the_reference(cli):
    import pyarrow.parquet as pq

    pad = os.path.join(ROOT, "sample_data", "rl_rollouts_padded.parquet")
    rag = os.path.join(ROOT, "sample_data", "rl_rollouts_ragged.parquet")
    t = pq.read_table(pad).to_pydict()
    r = pq.read_table(rag).to_pydict()
    # the two layouts hold the same tokens
    for i, m in enumerate(t["mask"]):
        k = sum(m)
        assert r["new_logp"][i] == t["new_logp"][i][:k] and all(m[:k]) and not any(m[k:])
    tok = [
        [ref_ppo_token(a, b, c) * m for a, b, c, m in zip(rn, ro, ra, rm)]
        for rn, ro, ra, rm in zip(t["new_logp"], t["old_logp"], t["advantages"], t["mask"])
    ]
    res = cli(
        [
            "compute",
            "ppo-clip",
            f"{pad}:new_logp",
            f"{pad}:old_logp",
            f"{pad}:advantages",
            "--mask",
            f"{pad}:mask",
            "-f",
            "json",
        ]
    )
    assert res.json["value"] == pytest.approx(masked_mean_batch(tok, t["mask"]), rel=1e-13)
    seq_adv = [
        [ref_ppo_token(a, b, adv) for a, b in zip(rn, ro)]
        for rn, ro, adv in zip(r["new_logp"], r["old_logp"], r["reward"])
    ]
    res = cli(["compute", "ppo-clip", f"{rag}:new_logp", f"{rag}:old_logp", f"{rag}:reward", "-f", "json"])
    ones = [[1.0] * len(v) for v in seq_adv]
    assert res.json["value"] == pytest.approx(masked_mean_batch(seq_adv, ones), rel=1e-13)
    kl = [[ref_kl_token(a, b, "k1") for a, b in zip(rn, rr)] for rn, rr in zip(r["new_logp"], r["ref_logp"])]
    res = cli(["compute", "policy-kl", f"{rag}:new_logp", f"{rag}:ref_logp", "-f", "json"])
    assert res.json["value"] == pytest.approx(math.fsum(math.fsum(v) for v in kl) / len(kl), rel=1e-12)


@pytest.mark.parametrize("loss", ["ppo-clip", "policy-kl"])
def test_nan_padding_under_the_mask_is_not_a_missing_value(cli, tmp_path, loss):
    new, old, adv, mask, lengths = rollouts(seed=43)
    zero = {"new": new.copy(), "old": old.copy(), "adv": adv.copy(), "mask": mask}
    for k in ("new", "old", "adv"):
        zero[k][mask == 0] = 0.0
    nan = {k: (np.where(mask == 0, np.nan, v) if k != "mask" else v) for k, v in zero.items()}
    args = ["new", "old"] + (["adv"] if loss == "ppo-clip" else [])
    values = []
    for name, cols in (("zero", zero), ("nan", nan)):
        path = write_parquet(tmp_path / f"{name}.parquet", cols)
        res = cli(["compute", loss, *[f"{path}:{a}" for a in args], "--mask", f"{path}:mask", "-f", "json"])
        assert res.code == 0, res.err
        assert res.json["rows"]["nan_omitted"] == 0
        values.append(res.json["value"])
    assert values[0] == values[1]
    # a NaN at a token that counts is still a missing value, named by its row
    nan["new"][5, 0] = np.nan
    path = write_parquet(tmp_path / "bad.parquet", nan)
    res = cli(["compute", loss, *[f"{path}:{a}" for a in args], "--mask", f"{path}:mask"])
    assert_clean_error(res, 1, "row 5", "NaN")
    # without the mask, NaN padding is missing values as before
    res = cli(["compute", loss, *[f"{path}:{a}" for a in args]])
    assert_clean_error(res, 1, "NaN")
