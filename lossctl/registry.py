"""The loss catalogue's index: collects the declarations, looks losses up.

Each loss is declared next to its kernel, in its family module under ``lossctl/losses/``
(``@loss(...)`` from :mod:`lossctl.losses.spec`: inputs, parameters with their whole valid
range, formula, gradient text, references, example). This module imports the family
modules listed in ``MODULES`` (cheap: they import NumPy only when a kernel runs), checks the
declarations once, and answers ``get`` / ``names`` / ``suggest`` / ``register`` / ``describe``
for the CLI (``compute NAME``, ``list``, ``explain``, completion), the Python API and plugins.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from lossctl.errors import UsageError
from lossctl.losses.spec import (  # noqa: F401 - the catalogue's types, importable from here
    INPUT_ORDER_RULE,
    LossSpec,
    Param,
    Role,
    parse_name_list,
    parse_number_list,
)

FAMILIES = (
    "classification",
    "divergence",
    "distillation-rl",
    "regression",
    "contrastive",
    "detection",
    "generative",
)

# The family modules under lossctl/losses/, in the order `lossctl list` shows their losses; any
# other public module there (a new family) is collected after them, in name order.
MODULES = ("classification", "calibration", "softmax", "divergence", "gaussian", "rl", "regression", "contrastive", "detection", "generative")


def _modules() -> list[str]:
    import pkgutil

    import lossctl.losses

    found = sorted(m.name for m in pkgutil.iter_modules(lossctl.losses.__path__) if not m.name.startswith("_"))
    return list(MODULES) + [m for m in found if m not in MODULES and m != "spec"]


def _collect() -> tuple[LossSpec, ...]:
    """Every ``@loss`` declaration of the family modules, in module then source order."""
    specs: list[LossSpec] = []
    for name in _modules():
        module = importlib.import_module(f"lossctl.losses.{name}")
        for obj in list(vars(module).values()):
            spec = obj.__dict__.get("__loss__") if callable(obj) and hasattr(obj, "__dict__") else None
            if isinstance(spec, LossSpec) and spec.kernel == f"{module.__name__}:{obj.__name__}":
                specs.append(spec)
    for spec in specs:
        _check(spec)
    return tuple(specs)


def _check(spec: LossSpec) -> None:
    """A declaration is checked once, at import: a mistake fails every test, not one run."""
    where = f"loss {spec.name!r}"
    if spec.family not in FAMILIES:
        raise RuntimeError(f"{where}: unknown family {spec.family!r}")
    seen = set()
    for p in spec.params:
        if p.dest in seen:
            raise RuntimeError(f"{where}: parameter {p.name!r} declared twice")
        seen.add(p.dest)
    if spec.pred_index >= len(spec.inputs):
        raise RuntimeError(f"{where}: pred_index {spec.pred_index} beyond its inputs")


LOSSES: tuple[LossSpec, ...] = _collect()



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
