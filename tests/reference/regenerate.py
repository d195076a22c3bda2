"""Recompute every number the tests take from PyTorch (and torchvision), and write them to
tests/reference/torch_values.py, the one module the tests import them from.

    pip install -e '.[bench]'                         # torch==2.13.0, CPU build
    python tests/reference/regenerate.py              # print what differs from the stored values
    python tests/reference/regenerate.py --write      # rewrite torch_values.py

Each block below names the PyTorch call it records, its inputs (written into the module with
the values, so a test reads both from one place) and the dtype it runs in: float32 where the
tests compare at float32 precision (stored to 9 significant digits, which round-trips a
float32), float64 where they compare tighter (stored exactly). The blocks that need
torchvision (sigmoid focal loss, box losses) are recomputed only when torchvision imports; the
bench extra does not install it, and without it those blocks are kept as stored and reported.

tests/test_torch_reference.py recomputes every block when torch is installed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.join(HERE, "torch_values.py")


@dataclass
class Block:
    name: str
    doc: str  # the PyTorch call, as a user would write it
    dtype: str  # "float32" or "float64"
    inputs: dict
    compute: Callable[[Any, dict], Any]  # (torch tensors of the inputs, the torch module) -> values
    needs: str = "torch"  # or "torchvision"


def _f(t) -> list | float:
    """A tensor's values as plain floats (lists for non-scalars)."""
    return t.detach().double().tolist()


# ---------------------------------------------------------------------------
# the blocks
# ---------------------------------------------------------------------------

CE_X = [[1.0, 2.0, 3.0], [1.0, 0.0, -1.0]]
CE_Y = [0, 1]
CE_W = [1.0, 2.0, 3.0]


def _cross_entropy(t, torch):
    F = torch.nn.functional
    out = {}
    for key, kw in {
        "plain": {},
        "weight": {"weight": t["W"]},
        "label_smoothing_0.1": {"label_smoothing": 0.1},
        "label_smoothing_0.1_weight": {"label_smoothing": 0.1, "weight": t["W"]},
    }.items():
        out[key] = {
            "none": _f(F.cross_entropy(t["X"], t["Y"], reduction="none", **kw)),
            "mean": _f(F.cross_entropy(t["X"], t["Y"], reduction="mean", **kw)),
        }
    return out


def _cross_entropy_soft(t, torch):
    F = torch.nn.functional
    out = {}
    for key, kw in {"plain": {}, "weight": {"weight": t["W"]}, "label_smoothing_0.2": {"label_smoothing": 0.2}}.items():
        out[key] = {
            "none": _f(F.cross_entropy(t["X"], t["T"], reduction="none", **kw)),
            "mean": _f(F.cross_entropy(t["X"], t["T"], reduction="mean", **kw)),
        }
    return out


def _nll(t, torch):
    F = torch.nn.functional
    lsm = F.log_softmax(t["X"], dim=1)
    return {
        "plain": {"none": _f(F.nll_loss(lsm, t["Y"], reduction="none")), "mean": _f(F.nll_loss(lsm, t["Y"]))},
        "weight": {
            "none": _f(F.nll_loss(lsm, t["Y"], weight=t["W"], reduction="none")),
            "mean": _f(F.nll_loss(lsm, t["Y"], weight=t["W"])),
        },
    }


def _bce_logits(t, torch):
    F = torch.nn.functional
    return _f(
        F.binary_cross_entropy_with_logits(
            t["x"], t["y"], weight=t["weight"], pos_weight=t["pos_weight"], reduction="none"
        )
    )


def _bce_logits_extremes(t, torch):
    return _f(torch.nn.functional.binary_cross_entropy_with_logits(t["x"], t["y"], reduction="none"))


def _sigmoid_focal(t, torch):
    from torchvision.ops import sigmoid_focal_loss

    return {
        "none": _f(sigmoid_focal_loss(t["x"], t["y"], reduction="none")),
        "x=1000,y=0": _f(sigmoid_focal_loss(t["x_big"], t["y_big"], reduction="none"))[0],
    }


def _boxes(t, torch):
    from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

    return {
        "giou": _f(generalized_box_iou_loss(t["B1"], t["B2"], reduction="none")),
        "diou": _f(distance_box_iou_loss(t["B1"], t["B2"], reduction="none")),
        "ciou": _f(complete_box_iou_loss(t["B1"], t["B2"], reduction="none")),
        "ciou_eps_0.1": _f(complete_box_iou_loss(t["B1"], t["B2"], reduction="none", eps=0.1)),
    }


def _pairwise_distance(t, torch):
    F = torch.nn.functional
    return {
        "d(a, a), p=2": _f(F.pairwise_distance(t["a"], t["a"], p=2.0))[0],
        "d(a, a), p=1": _f(F.pairwise_distance(t["a"], t["a"], p=1.0))[0],
        "d(zero, e1)": _f(F.pairwise_distance(t["zero"], t["e1"]))[0],
        "d(e1, zero)": _f(F.pairwise_distance(t["e1"], t["zero"]))[0],
    }


def _cosine_embedding(t, torch):
    F = torch.nn.functional
    return {
        "zero vector, y=1": _f(F.cosine_embedding_loss(t["zero"], t["e1"], t["y1"], reduction="none"))[0],
        "zero vector, y=-1, margin=-0.25": _f(
            F.cosine_embedding_loss(t["zero"], t["e1"], -t["y1"], margin=-0.25, reduction="none")
        )[0],
        "y=0 (lossctl refuses it)": _f(F.cosine_embedding_loss(t["e1"], t["e1"], 0 * t["y1"], reduction="none"))[0],
    }


def _margin_ranking(t, torch):
    return _f(torch.nn.functional.margin_ranking_loss(t["x1"], t["x2"], t["y"], margin=0.5, reduction="none"))


def _kl_div(t, torch):
    F = torch.nn.functional
    lq = torch.log(t["Q"])
    return {
        "sum": _f(F.kl_div(lq, t["P"], reduction="sum")),
        "batchmean": _f(F.kl_div(lq, t["P"], reduction="batchmean")),
        "row 1, batchmean of the 1-D row": _f(F.kl_div(lq[1], t["P"][1], reduction="batchmean")),
    }


def _gaussian_kl(t, torch):
    from torch.distributions import Normal, kl_divergence

    return _f(kl_divergence(Normal(t["mu_p"], t["sigma_p"]), Normal(t["mu_q"], t["sigma_q"])))


def _huber_smooth_l1(t, torch):
    F = torch.nn.functional
    zero = torch.zeros_like(t["E"])
    return {
        "huber": {str(d): _f(F.huber_loss(t["E"], zero, delta=d, reduction="none")) for d in (0.5, 1.0, 2.0)},
        "smooth_l1": {str(b): _f(F.smooth_l1_loss(t["E"], zero, beta=b, reduction="none")) for b in (0.5, 1.0, 2.0)},
        "huber(2, 0), delta=2": _f(F.huber_loss(t["two"], t["zero"], delta=2.0)),
        "huber(1, 0), delta=1": _f(F.huber_loss(t["one"], t["zero"], delta=1.0)),
        "smooth_l1(2, 0), beta=2": _f(F.smooth_l1_loss(t["two"], t["zero"], beta=2.0)),
    }


def _gaussian_nll(t, torch):
    return _f(torch.nn.functional.gaussian_nll_loss(t["input"], t["target"], t["var"], reduction="none"))


def _poisson_nll(t, torch):
    F = torch.nn.functional
    plain = F.poisson_nll_loss(t["x1"], t["y3"], reduction="none")
    full = F.poisson_nll_loss(t["x1"], t["y3"], full=True, reduction="none")
    return {
        "x=0, y=1, log_input=False": _f(F.poisson_nll_loss(t["x0"], t["y1"], log_input=False, reduction="none"))[0],
        "x=1, y=3, full=True": _f(full)[0],
        "x=1, y=3, full=True minus full=False": _f(full - plain)[0],
    }


BLOCKS = {
    b.name: b
    for b in [
        Block(
            "CROSS_ENTROPY",
            "F.cross_entropy(X, Y, weight=W?, label_smoothing=?, reduction='none' / 'mean')",
            "float32",
            {"X": CE_X, "Y": CE_Y, "W": CE_W},
            _cross_entropy,
        ),
        Block(
            "CROSS_ENTROPY_SOFT",
            "F.cross_entropy(X, T, ...) with probability targets T, reduction='none' / 'mean'",
            "float32",
            {"X": CE_X, "T": [[0.2, 0.3, 0.5], [0.9, 0.1, 0.0]], "W": CE_W},
            _cross_entropy_soft,
        ),
        Block(
            "NLL",
            "F.nll_loss(F.log_softmax(X, dim=1), Y, weight=W?)",
            "float32",
            {"X": CE_X, "Y": CE_Y, "W": CE_W},
            _nll,
        ),
        Block(
            "BCE_WITH_LOGITS",
            "F.binary_cross_entropy_with_logits(x, y, weight=weight, pos_weight=pos_weight, reduction='none')",
            "float32",
            {"x": [0.5, -1.0, 2.0], "y": [1.0, 0.0, 0.3], "weight": [1.0, 2.0, 0.5], "pos_weight": 3.0},
            _bce_logits,
        ),
        Block(
            "BCE_WITH_LOGITS_EXTREMES",
            "F.binary_cross_entropy_with_logits(x, y, reduction='none')",
            "float32",
            {"x": [1000.0, -1000.0, 1000.0, -1000.0, 1e4], "y": [0.0, 1.0, 1.0, 0.0, 0.0]},
            _bce_logits_extremes,
        ),
        Block(
            "SIGMOID_FOCAL",
            "torchvision.ops.sigmoid_focal_loss(x, y, alpha=0.25, gamma=2, reduction='none')",
            "float32",
            {"x": [0.5, -1.0, 2.0, -3.0], "y": [1.0, 0.0, 0.0, 1.0], "x_big": [1000.0], "y_big": [0.0]},
            _sigmoid_focal,
            needs="torchvision",
        ),
        Block(
            "BOX_LOSSES",
            "torchvision.ops.{generalized,distance,complete}_box_iou_loss(B1, B2, reduction='none'), eps=1e-7 or 0.1",
            "float32",
            {
                "B1": [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 1.0]],
                "B2": [[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 1.0, 2.0]],
            },
            _boxes,
            needs="torchvision",
        ),
        Block(
            "PAIRWISE_DISTANCE",
            "F.pairwise_distance(u, v, p=p, eps=1e-6): ||u - v + eps||_p, as triplet_margin_loss uses it",
            "float64",
            {"a": [[0.3, -1.2]], "zero": [[0.0, 0.0]], "e1": [[1.0, 0.0]]},
            _pairwise_distance,
        ),
        Block(
            "COSINE_EMBEDDING",
            "F.cosine_embedding_loss(u, v, y, margin=?, reduction='none')",
            "float64",
            {"zero": [[0.0, 0.0]], "e1": [[1.0, 0.0]], "y1": [1.0]},
            _cosine_embedding,
        ),
        Block(
            "MARGIN_RANKING",
            "F.margin_ranking_loss(x1, x2, y, margin=0.5, reduction='none')",
            "float64",
            {"x1": [1.0, 2.0, 3.0], "x2": [2.0, 2.0, 1.0], "y": [1.0, -1.0, 1.0]},
            _margin_ranking,
        ),
        Block(
            "KL_DIV",
            "F.kl_div(input=torch.log(Q), target=P, reduction=...)",
            "float32",
            {"Q": [[0.25, 0.25, 0.5], [0.1, 0.2, 0.7]], "P": [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]},
            _kl_div,
        ),
        Block(
            "GAUSSIAN_KL",
            "torch.distributions.kl_divergence(Normal(mu_p, sigma_p), Normal(mu_q, sigma_q))",
            "float64",
            {"mu_p": 1.0, "sigma_p": 0.5, "mu_q": -0.5, "sigma_q": 2.0},
            _gaussian_kl,
        ),
        Block(
            "HUBER_SMOOTH_L1",
            "F.huber_loss(E, 0, delta=d) and F.smooth_l1_loss(E, 0, beta=b), reduction='none'",
            "float64",
            {"E": [-0.5, 0.0, -2.0, 6.0], "zero": [0.0], "one": [1.0], "two": [2.0]},
            _huber_smooth_l1,
        ),
        Block(
            "GAUSSIAN_NLL",
            "F.gaussian_nll_loss(input, target, var, eps=1e-6, reduction='none')",
            "float32",
            {"input": [1.0, 1e-3], "target": [1.0, 0.0], "var": [0.0, 1e-12]},
            _gaussian_nll,
        ),
        Block(
            "POISSON_NLL",
            "F.poisson_nll_loss(x, y, log_input=?, full=?, eps=1e-8, reduction='none')",
            "float64",
            {"x0": [0.0], "y1": [1.0], "x1": [1.0], "y3": [3.0]},
            _poisson_nll,
        ),
    ]
}
_INTEGER_INPUTS = {("CROSS_ENTROPY", "Y"), ("NLL", "Y")}  # class indices: int64 tensors


# ---------------------------------------------------------------------------
# computing and rendering
# ---------------------------------------------------------------------------


def have(module: str) -> bool:
    try:
        __import__(module)
    except Exception:  # a torchvision built for another torch raises RuntimeError on import
        return False
    return True


def _round(v, dtype: str):
    if isinstance(v, dict):
        return {k: _round(x, dtype) for k, x in v.items()}
    if isinstance(v, list):
        return [_round(x, dtype) for x in v]
    v = float(v)
    if dtype == "float32" and math.isfinite(v) and v != 0.0:
        v = float(f"{v:.9g}")
    return v + 0.0  # -0.0 -> 0.0


def compute(block: Block) -> Any:
    """The block's values, computed now with torch (rounded as stored)."""
    import torch

    dt = getattr(torch, block.dtype)
    tensors = {}
    for k, v in block.inputs.items():
        if (block.name, k) in _INTEGER_INPUTS:
            tensors[k] = torch.tensor(v, dtype=torch.int64)
        else:
            tensors[k] = torch.tensor(v, dtype=dt)
    return _round(block.compute(tensors, torch), block.dtype)


def _fmt(v, indent: int = 0) -> str:
    pad = " " * indent
    if isinstance(v, dict):
        items = [f"{pad}    {json.dumps(k)}: {_fmt(x, indent + 4).lstrip()}," for k, x in v.items()]
        return pad + "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(v, list):
        return pad + "[" + ", ".join(_fmt(x).strip() for x in v) + "]"
    if isinstance(v, float):
        return pad + (repr(v) if math.isfinite(v) else f'float("{v}")')
    if isinstance(v, str):
        return pad + json.dumps(v, ensure_ascii=False)
    return pad + repr(v)


def render(values: dict[str, Any], versions: str) -> str:
    """The text of torch_values.py for these values (block name -> values)."""
    out = [
        '"""Numbers PyTorch (and torchvision) computed for the tests: the oracles behind their',
        '"as PyTorch" assertions.',
        "",
        "GENERATED by tests/reference/regenerate.py (do not edit by hand; change the blocks there and",
        "run it with --write). Computed with",
        f"{versions}.",
        "Each block: the call (doc), the dtype it ran in, its inputs and the values.",
        '"""',
        "",
    ]
    for name, block in BLOCKS.items():
        entry = {"doc": block.doc, "dtype": block.dtype, "inputs": block.inputs, "values": values[name]}
        out.append(f"{name} = {_fmt(entry)}")
        out.append("")
    return "\n".join(out)


def stored() -> tuple[dict[str, Any], str]:
    """The values in torch_values.py now, and the versions line it names."""
    sys.path.insert(0, HERE)
    try:
        import torch_values
    finally:
        sys.path.remove(HERE)
    with open(TARGET, encoding="utf-8") as fh:
        text = fh.read()
    versions = text.split("Computed with\n", 1)[1].split(".\n", 1)[0] if "Computed with\n" in text else "?"
    return {name: getattr(torch_values, name)["values"] for name in BLOCKS if hasattr(torch_values, name)}, versions


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                yield f"{path}/{k}: only in {'stored' if k in a else 'recomputed'}"
            else:
                yield from _diff(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _diff(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: stored {a!r}, torch now {b!r}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite tests/reference/torch_values.py")
    args = ap.parse_args(argv)
    if not have("torch"):
        print("regenerate.py needs torch (the bench extra): pip install -e '.[bench]'", file=sys.stderr)
        return 2
    import torch

    old, _ = stored() if os.path.exists(TARGET) else ({}, "")
    versions = [f"torch {torch.__version__}"]
    tv = have("torchvision")
    if tv:
        import torchvision

        versions.append(f"torchvision {torchvision.__version__}")
    else:
        versions.append("the torchvision blocks kept from an earlier run")
    values, differences = {}, 0
    for name, block in BLOCKS.items():
        if block.needs == "torchvision" and not tv:
            if name not in old:
                print(f"{name}: needs torchvision, which does not import here, and has no stored values")
                return 1
            print(f"{name}: kept as stored (needs torchvision, which does not import here)")
            values[name] = old[name]
            continue
        values[name] = compute(block)
        lines = list(_diff(old.get(name), values[name])) if name in old else ["new block"]
        differences += len(lines)
        print(f"{name}: {'same as stored' if not lines else ''}")
        for line in lines:
            print(f"    {line}")
    if args.write:
        with open(TARGET, "w", encoding="utf-8") as fh:
            fh.write(render(values, ", ".join(versions)))
        print(f"wrote {TARGET}")
    elif differences:
        print(f"{differences} value(s) differ; --write stores the recomputed ones")
    return 0


if __name__ == "__main__":
    sys.exit(main())
