"""What the numbers are: never guessed, but never silently misread either.

lossctl reads a prediction as the kind it is declared (``--pred-kind``, default
logits) and never guesses from the values. When the declared kind is very
probably wrong, it says so:

- ``KindWatch`` follows, over every row the loss is computed on, whether a
  prediction declared as logits looks like probabilities (every value in [0, 1]
  and every row summing to 1 within the probability tolerance) or like
  log-probabilities (every value <= 0 and every row's exponentials summing to 1
  within that tolerance). It keeps one running boolean per condition and stops
  testing a condition at its first failure, so ordinary logits cost one min/max
  of the first chunk. A condition still true after the last row becomes one
  warning (deduplicated; never per chunk), naming the input and the option to add.
- ``error_hint`` completes a validation error of a declared probability /
  log-probability input with the option that reads the values as what they
  probably are (``--target-kind logits`` for KL's target, ``ce`` instead of ``nll``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossctl.errors import opt, spell

# Losses whose prediction takes no kind option: what to suggest when it does not hold
# what the loss expects (the values decide the error; this only names the way out).
_OTHER_LOSS = {
    "nll": (
        "nll takes log-probabilities (a log_softmax output); if these are logits (raw scores), "
        "did you mean `ce` (lossctl compute ce PRED TARGET)? Probabilities: `ce " + opt("pred_kind") + " probs`"
    ),
}

# Losses whose inputs are logits with no kind option (softmax applied inside): probabilities
# there are a wrong number; log-probabilities are valid logits (softmax(log p) = p).
_LOGITS_ONLY_ROLES = {"distillation": ("student", "teacher")}


def _kind_param(spec, role: str):
    name = {"pred": "pred-kind", "target": "target-kind"}.get(role)
    for p in spec.params:
        if p.name == name:
            return p
    return None


def error_hint(spec, params: dict[str, Any], role: str | None, declared: str | None) -> str:
    """A sentence to add to a validation error of ``role`` read as ``declared`` (probs / log-probs)."""
    if declared not in ("probs", "log-probs") or role is None:
        return ""
    p = _kind_param(spec, role)
    if p is None:
        return _OTHER_LOSS.get(spec.name, "") if role == "pred" else ""
    others = [k for k in ("logits", "probs", "log-probs") if k in p.choices and k != declared]
    if not others:
        return ""
    what = {"logits": "logits (raw scores)", "probs": "probabilities", "log-probs": "log-probabilities"}
    first, rest = others[0], others[1:]
    return f"If these are {what[first]}, use {opt(p.name)} {first}" + "".join(
        f"; if {what[k]}, {opt(p.name)} {k}" for k in rest
    )


class KindWatch:
    """Running checks of what declared-logits inputs look like; see the module docstring."""

    def __init__(self, spec, params: dict[str, Any], prob_atol: float | None):
        self.spec = spec
        self.prob_atol = prob_atol
        # [role, condition, still true, rows seen]
        self.watches: list[list] = []
        kind = _kind_param(spec, "pred")
        # Only a prediction that is a distribution per row ((N, C), softmax inside): element-wise
        # scores (bce's (N, K) labels) are independent, so a row sum means nothing there.
        dist = any(r.name == "pred" and r.ndim == (2,) for r in spec.inputs)
        if kind is not None and dist and params.get("pred_kind", kind.default) == "logits":
            for cond in ("probs", "log-probs"):
                if cond in kind.choices:
                    self.watches.append(["pred", cond, True, 0])
        for role in _LOGITS_ONLY_ROLES.get(spec.name, ()):
            self.watches.append([role, "probs", True, 0])

    @property
    def active(self) -> bool:
        return any(w[2] for w in self.watches)

    def update(self, arrays: dict[str, Any]) -> None:
        """Fold in the rows of one chunk (those the loss is computed on)."""
        if not self.active:
            return
        for w in self.watches:
            role, cond, still, _ = w
            if not still:
                continue
            a = arrays.get(role)
            if not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype.kind != "f":
                w[2] = False
                continue
            if len(a) == 0:
                continue
            w[2] = self._looks(a, cond)
            w[3] += len(a)

    def _tol(self, a: np.ndarray) -> float:
        from lossctl.losses._common import default_prob_atol

        return default_prob_atol(a.dtype, a.shape[1]) if self.prob_atol is None else self.prob_atol

    def _looks(self, a: np.ndarray, cond: str) -> bool:
        if a.shape[1] < 2:
            return False  # one column: every row trivially "sums to 1"; nothing to tell
        with np.errstate(all="ignore"):
            if cond == "probs":
                if not (a.min() >= 0.0 and a.max() <= 1.0):  # NaN fails both
                    return False
                sums = a.sum(axis=1, dtype=np.float64)
            else:
                if not a.max() <= 0.0:
                    return False
                sums = np.exp(a.astype(np.float64)).sum(axis=1)
        return bool((np.abs(sums - 1.0) <= self._tol(a)).all())

    def warnings(self, where: dict[str, str]) -> list[str]:
        """One message per condition that held on every row read (``where``: role -> source text)."""
        out = []
        for role, cond, still, seen in self.watches:
            if not (still and seen):
                continue
            src = where.get(role, role)
            metavar = role.upper().replace("-", "_")
            rows = f"all {seen} rows" if seen > 1 else "the one row"
            if cond == "probs":
                shape = f"every value is in [0, 1] and every row sums to 1 ({rows} read)"
                if role in _LOGITS_ONLY_ROLES.get(self.spec.name, ()):
                    fix = (
                        f"{self.spec.name} applies a softmax to {metavar}, so probabilities give a wrong number; "
                        "if these are probabilities, give their logarithms (log-probabilities are valid logits)"
                    )
                else:
                    fix = (
                        "read as logits they give a different number than as probabilities; "
                        f"if these are probabilities, add {opt('pred_kind')} probs"
                    )
            else:
                shape = f"every value is <= 0 and every row's exponentials sum to 1 ({rows} read)"
                fix = (
                    "the loss is the same either way (softmax of log-probabilities gives them back), "
                    f"but {opt('grad')} is then w.r.t. logits; if these are log-probabilities, add "
                    f"{opt('pred_kind')} log-probs"
                )
            kind = {"probs": "probabilities", "log-probs": "log-probabilities"}[cond]
            # spelled now, by the face running this (a report's warnings are plain text)
            out.append(spell(f"{metavar} ({src}) is read as logits but looks like {kind}: {shape}; {fix}."))
        return out
