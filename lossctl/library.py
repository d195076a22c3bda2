"""The kernels as a documented library: ``from lossctl import losses; losses.cross_entropy(x, y)``.

Each loss of the registry (built-in or plugin) is a :class:`LossFunction`: calling it returns the
per-sample values (float64, shape (N,)); ``.grad(...)`` returns d loss_n / d pred_n with the
prediction's shape; ``.result(...)`` the kernel's full :class:`lossctl.losses.Result` (components,
extra columns, ignored rows). Its docstring (numpydoc) is built from the registry's one catalogue
text: formula, shapes, headline, reference and paper. Parameters are validated as on the command
line; errors are :class:`lossctl.InputError` (``.role``, ``.rows`` relative to the arrays given)
and :class:`lossctl.ParamError` (``.param``).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

_CACHE: dict[str, "LossFunction"] = {}


def function(name: str) -> "LossFunction":
    """The library function of a loss, by its Python name (``cross_entropy``) or its name (``cross-entropy``)."""
    from lossctl import registry

    key = name.replace("_", "-")
    if key.endswith("-loss") and key not in registry.BY_NAME:  # ``contrastive_loss``: any loss with a suffix
        key = key[: -len("-loss")]
    if key not in _CACHE:
        from lossctl.errors import UsageError

        try:
            spec = registry.get(key)  # (a plugin's loss too)
        except UsageError:
            raise AttributeError(f"lossctl.losses has no loss {name!r}; see lossctl.losses.names()") from None
        _CACHE[key] = LossFunction(spec)
    return _CACHE[key]


def names() -> list[str]:
    """The Python names of every loss (aliases included)."""
    from lossctl import registry

    return sorted(n.replace("-", "_") for n in registry.BY_NAME)


class LossFunction:
    """One loss as a NumPy function; see the instance's docstring for its definition."""

    def __init__(self, spec):
        self.spec = spec
        self.__name__ = spec.name.replace("-", "_")
        self.__qualname__ = self.__name__
        self.__module__ = "lossctl.losses"
        self.__doc__ = docstring(spec)
        self.__signature__ = inspect.Signature(
            [inspect.Parameter(r.name.replace("-", "_"), inspect.Parameter.POSITIONAL_ONLY) for r in spec.inputs]
            + [
                inspect.Parameter(p.dest, inspect.Parameter.KEYWORD_ONLY, default=p.default)
                for p in spec.params
            ]
        )

    def __repr__(self) -> str:
        return f"<lossctl loss function {self.__name__} ({self.spec.summary})>"

    def __call__(self, *inputs: Any, **params: Any) -> np.ndarray:
        return np.asarray(self.result(*inputs, **params).loss, dtype=np.float64)

    def result(self, *inputs: Any, **params: Any):
        args, kwargs = self._prepare(inputs, params, self.spec.load_kernel())
        with np.errstate(all="ignore"):
            return self.spec.load_kernel()(*args, **kwargs)

    def grad(self, *inputs: Any, **params: Any) -> np.ndarray:
        """d loss_n / d pred_n, with the shape of the model's output (float64)."""
        fn = self.spec.load_grad()
        if fn is None:
            from lossctl.errors import ParamError

            raise ParamError(None, f"{self.spec.name} has no gradient.")
        args, kwargs = self._prepare(inputs, params, fn)
        with np.errstate(all="ignore"):
            return np.asarray(fn(*args, **kwargs), dtype=np.float64)

    def _prepare(self, inputs, params, fn):
        from lossctl import api
        from lossctl.errors import InputError, ParamError, UsageError

        spec = self.spec
        roles = spec.inputs
        required = [r for r in roles if not r.optional]
        if not len(required) <= len(inputs) <= len(roles):
            raise ParamError(None, f"{self.__name__} takes {len(required)} to {len(roles)} arrays; got {len(inputs)}.")
        try:
            kw = api._params(spec, params)
        except UsageError as exc:
            raise api.translated(exc) from None
        args = []
        for role, x in zip(roles, list(inputs) + [None] * (len(roles) - len(inputs))):
            if x is None:
                args.append(None)
                continue
            a = x if getattr(x, "is_ragged", False) else _array(x, role.name)
            if isinstance(a, np.ndarray):
                if a.ndim not in role.ndim:
                    raise InputError(role.name, f"{role.name} has shape {a.shape}; expected {role.shape}.",
                                     expected=role.shape)
                if a.dtype.kind not in "biuf":
                    raise InputError(role.name, f"{role.name} has dtype {a.dtype}; expected numbers.")
                if role.dtype == "float" and a.dtype.kind in "biu":
                    a = a.astype(np.float64)
            args.append(a)
        accepted = set(inspect.signature(fn).parameters)
        kwargs = {k: v for k, v in kw.items() if k in accepted}
        if "prob_atol" in accepted:
            from lossctl.losses._common import default_prob_atol

            atol = None
            for a in args:
                if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.ndim >= 2:
                    t = default_prob_atol(a.dtype, a.shape[-1])
                    atol = t if atol is None else max(atol, t)
            kwargs["prob_atol"] = atol if atol is not None and atol > 1e-4 else None
        return args, kwargs


def _array(x: Any, name: str) -> np.ndarray:
    from lossctl.io.memory import as_data

    data, _ = as_data(x, name)
    if isinstance(data, np.ndarray):
        return data
    # Arrow data: one column, read as the engine reads it.
    from lossctl.io.sources import Request, arrow_to_numpy

    table = data if hasattr(data, "num_rows") else data.read_all()
    if table.num_columns != 1:
        from lossctl.errors import InputError

        raise InputError(name, f"{name}: a table of {table.num_columns} columns; pass one column.")
    col = table.column(0).combine_chunks()
    return arrow_to_numpy(col, Request(name, None, matrix=True), name, table.column_names[0], 0)


def docstring(spec) -> str:
    """A numpydoc docstring from the registry's entry."""
    lines = [spec.summary, "", f"Per sample: {spec.formula}", "", "Parameters", "----------"]
    for r in spec.inputs:
        lines.append(f"{r.name.replace('-', '_')} : array_like, shape {r.shape}" + (", optional" if r.optional else ""))
        lines.append(f"    {r.help}")
    for p in spec.params:
        rng = p.describe_range()
        lines.append(f"{p.dest} : {p.type}, default {p.default!r}")
        if rng:
            rng = f" Must be {rng}." if p.type != "choice" else f" One of {rng[len('one of '):]}."
        lines.append(f"    {p.help}{rng}")
    lines += [
        "",
        "Returns",
        "-------",
        "numpy.ndarray, shape (N,)",
        "    Per-sample values (float64). The headline over a dataset: " + spec.headline + ".",
        "",
        "Notes",
        "-----",
        f"Gradient (``.grad``): {spec.gradient}",
        "",
        *(f"- {p}" for p in spec.properties),
        "",
        f"Used for: {spec.used_for}",
        "",
        "References",
        "----------",
        f"Reference: {spec.reference}.",
        f"Paper: {spec.paper}",
    ]
    from lossctl.api import _api_wording

    return _api_wording("\n".join(lines))  # (keywords, not command-line flags)
