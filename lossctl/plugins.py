"""User-defined losses: the ``@lossctl.loss`` decorator and plugin discovery.

A plugin loss is a NumPy function returning one value per sample (and optionally a gradient). Once
registered it is a loss like the built-ins: ``compute`` (CLI and API), ``--help``, ``list``,
``explain``, per-sample output, ``--grad`` (when given), group-by, CIs, ``compare``, ``check``,
``merge`` and ``--engine dask``. Its reports' signature names the plugin and its version.

Where plugins come from:

* the entry-point group ``lossctl.losses`` of installed packages (``NAME = "module:attr"``; when the
  entry point's name is the loss's name, only that package is imported to run it);
* ``--plugin MODULE`` (or a ``.py`` file) on the command line, and ``LOSSCTL_PLUGINS`` (several,
  separated by commas);
* ``@lossctl.loss`` in the caller's own code (the Python API).

A plugin that fails to import is an error naming it when one of its losses is asked for; while
listing losses it is a warning, and the built-ins are unaffected. ``lossctl --help`` never imports
plugins. A plugin's loss may not take the name of a built-in loss (or of another plugin's).
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from lossctl.errors import DataError, InputError, LossctlError, ParamError, UsageError, short_reason
from lossctl.losses._lazy import lazy

np = lazy(globals())  # NumPy on first use: `lossctl list` and `--help` load plugins' declarations without it

GROUP = "lossctl.losses"
ENV = "LOSSCTL_PLUGINS"

# Names the command line's `compute`/`compare` commands use for their own options: a parameter of a
# plugin's loss cannot take one (it would shadow the option).
RESERVED = frozenset(
    """baseline chunk-size ci ci-n csv-safe delimiter engine format grad grad-norm group-by hist html
    id-col input-format junit max max-abs-increase max-groups max-rel-increase min nan no-color no-header
    on-missing per-group per-sample precision prob-atol quiet reduction remote-timeout row-offset
    save-state scheduler score-only seed strict top workers plugin debug help version permutations labels
    correction alpha fail-if-worse max-delta max-rel-delta no-step-summary data per-sample-format
    test-alpha extras batch-size counts per-token normalize-by""".split()
)


@dataclass
class _Plugin:
    fn: Callable
    grad: Callable | None
    label: str  # "DISTRIBUTION VERSION" (or the module, when no installed distribution holds it)


_PLUGINS: dict[str, _Plugin] = {}
_LOADED_MODULES: set[str] = set()
_FAILED: dict[str, str] = {}  # plugin source -> why it did not load
_INSTALLED_DONE = False
_ENV_DONE: str | None = None


# ---------------------------------------------------------------------------
# The decorator
# ---------------------------------------------------------------------------


def loss(
    name: str,
    inputs: Any = ("pred", "target"),
    params: Any = None,
    reference: str = "",
    *,
    summary: str | None = None,
    formula: str | None = None,
    headline: str | None = None,
    grad: Callable | None = None,
    gradient: str | None = None,
    aliases: tuple[str, ...] = (),
    family: str = "plugin",
    paper: str = "",
    used_for: str = "",
    version: str | None = None,
    example: tuple[str, ...] = (),
):
    """Register a NumPy function as a lossctl loss.

    The function takes one array per input (rows first, in the order of ``inputs``: model outputs
    first, then references) and the parameters as keywords, and returns the per-sample values,
    shape (N,). ``inputs`` are role names (``"pred"``) or dicts with ``name``, ``shape``, ``help``,
    ``ndim`` (accepted numbers of dimensions, default (1, 2)), ``dtype`` (``float``, ``label`` or
    ``int``) and ``optional``. ``params`` maps each parameter's name to its default (type taken from
    it) or to a dict with ``type`` (float, int, bool, choice, floats), ``default``, ``help``,
    ``choices``, ``low``, ``high``. ``grad`` (or ``@fn.grad``) returns d loss_n / d pred_n with
    the model output's shape.

    Example::

        @lossctl.loss(name="scaled-l1", inputs=["pred", "target"], params={"scale": 1.0},
                      reference="scale * |pred - target|, mean over columns")
        def scaled_l1(pred, target, scale=1.0):
            d = np.abs(pred - target) * scale
            return d.mean(axis=1) if d.ndim == 2 else d
    """

    def register(fn: Callable) -> Callable:
        label = _label(fn, version)
        spec = _spec(name, inputs, params, reference, summary or _first_line(fn) or name, formula, headline,
                     gradient, aliases, family, paper, used_for, example, label, grad is not None)  # fmt: skip
        from lossctl import registry

        _PLUGINS[name] = _Plugin(fn, grad, label)
        try:
            registry.register(spec)
        except UsageError:
            del _PLUGINS[name]
            raise

        def set_grad(g: Callable) -> Callable:
            _PLUGINS[name].grad = g
            registry.register(_spec(name, inputs, params, reference, spec.summary, formula, headline, gradient,
                                    aliases, family, paper, used_for, example, label, True))  # fmt: skip
            return g

        fn.grad = set_grad  # type: ignore[attr-defined]
        fn.lossctl_name = name  # type: ignore[attr-defined]
        return fn

    return register


def _first_line(fn: Callable) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


_LOADING: list[tuple[str, str]] = []  # the distribution whose entry point is being loaded


def _label(fn: Callable, version: str | None) -> str:
    """"DISTRIBUTION VERSION" of the package defining ``fn`` (its module when none is installed)."""
    module = getattr(fn, "__module__", None) or "__main__"
    top = module.split(".")[0]
    if top.startswith("lossctl_plugin_"):  # a --plugin FILE.py
        top = top[len("lossctl_plugin_") :]
    if _LOADING and version is None:
        return f"{_LOADING[-1][0]} {_LOADING[-1][1]}"
    dist, ver = top, version
    if ver is None and module != "__main__":
        try:
            from importlib import metadata

            found = metadata.distribution(top)
            dist, ver = found.metadata["Name"] or top, found.version
        except Exception:  # noqa: BLE001 - not an installed distribution: the module names the plugin
            pass
    return f"{dist} {ver or 'unversioned'}"


def _role(r: Any):
    from lossctl.registry import Role

    if isinstance(r, Role):
        return r
    if isinstance(r, str):
        return Role(r, "(N,) or (N, D)", f"{r} (one row per sample).")
    if isinstance(r, dict):
        d = dict(r)
        name = d.pop("name")
        ndim = tuple(d.pop("ndim", (1, 2)))
        return Role(name, d.pop("shape", "(N,) or (N, D)"), d.pop("help", f"{name} (one row per sample)."),
                    ndim=ndim, **d)  # fmt: skip
    raise UsageError(f"a plugin loss's inputs are names or dicts; got {r!r}.")


_TYPES = {bool: "bool", int: "int", float: "float", str: "choice"}


def _param(name: str, given: Any):
    from lossctl.registry import Param

    if isinstance(given, Param):
        return given
    if isinstance(given, dict):
        d = dict(given)
        ptype = d.pop("type", _TYPES.get(type(d.get("default")), "float"))
        return Param(name, ptype, d.pop("default", None), d.pop("help", name), tuple(d.pop("choices", ())), **d)
    ptype = _TYPES.get(type(given))
    if ptype is None or ptype == "choice":
        raise UsageError(
            f"parameter {name!r}: give its default as a number or True/False, or a dict with type, default, choices."
        )
    return Param(name, ptype, given, name)


def _spec(name, inputs, params, reference, summary, formula, headline, gradient, aliases, family, paper,
          used_for, example, label, has_grad):  # fmt: skip
    from lossctl.registry import LossSpec

    where = f"The plugin {label}, loss {name!r}"
    if not isinstance(name, str) or not name or any(c.isspace() for c in name) or name.startswith("-"):
        raise UsageError(f"{where}: a loss name is one word, e.g. 'my-loss'.")
    roles = tuple(_role(r) for r in ([inputs] if isinstance(inputs, str) else inputs))
    if not roles:
        raise UsageError(f"{where}: needs at least one input.")
    if isinstance(params, dict):
        items = list(params.items())
    else:
        items = [(getattr(p, "name", None) or p["name"], p) for p in params or ()]
    ps = tuple(_param(k, v) for k, v in items)
    for p in ps:
        if p.name in RESERVED or p.dest.replace("_", "-") in RESERVED:
            raise UsageError(f"{where}: the parameter name {p.name!r} is one of lossctl's own options; rename it.")
    return LossSpec(
        name=name,
        family=family,
        summary=summary,
        inputs=roles,
        params=ps,
        kernel=f"lossctl.plugins:kernel:{name}",
        grad=f"lossctl.plugins:grad:{name}",
        reference=reference or f"defined by the plugin {label}",
        formula=formula or "as defined by the plugin's function",
        headline=headline or "the mean of the per-sample values",
        gradient=gradient or ("given by the plugin" if has_grad else "not provided by the plugin"),
        properties=(f"A plugin loss: {label}.",),
        used_for=used_for or "-",
        activation="as the plugin defines",
        paper=paper or "-",
        example=tuple(example) or tuple(r.name.upper() for r in roles if not r.optional),
        aliases=tuple(aliases),
        plugin=label,
    )


# ---------------------------------------------------------------------------
# Kernels: what the engine calls (``LossSpec.kernel`` = "lossctl.plugins:kernel:NAME")
# ---------------------------------------------------------------------------


def __getattr__(attr: str):
    kind, _, name = attr.partition(":")
    if kind not in ("kernel", "grad") or not name:
        raise AttributeError(attr)
    if name not in _PLUGINS:
        find(name)
    if name not in _PLUGINS:
        raise UsageError(f"the plugin loss {name!r} is not loaded (see --plugin and {ENV}).")
    return _kernel(name) if kind == "kernel" else _grad(name)


def _kernel(name: str) -> Callable:
    from lossctl.losses import Result

    def kernel(*arrays, **params):
        plugin = _PLUGINS[name]
        n = len(arrays[0])
        out = _called(name, plugin, plugin.fn, arrays, params)
        if isinstance(out, Result):
            values = out.loss
        else:
            values = out
            out = None
        a = np.asarray(values, dtype=np.float64)
        if a.shape != (n,):
            raise DataError(
                f"the plugin loss {name!r} ({plugin.label}) returned values of shape {a.shape} for {n} rows; "
                f"expected one value per sample, shape ({n},). This is a bug in the plugin."
            )
        return Result(loss=a) if out is None else out

    kernel.__signature__ = _signature(_PLUGINS[name].fn)  # (the engine passes what the function accepts)
    return kernel


def _grad(name: str) -> Callable:
    plugin = _PLUGINS[name]
    if plugin.grad is None:
        raise UsageError(f"the plugin loss {name!r} ({plugin.label}) defines no gradient, so --grad is not available.")

    def grad(*arrays, **params):
        g = np.asarray(_called(name, plugin, plugin.grad, arrays, params), dtype=np.float64)
        if g.shape != np.shape(arrays[0]):
            raise DataError(
                f"the plugin loss {name!r} ({plugin.label}) returned a gradient of shape {g.shape} for a prediction "
                f"of shape {np.shape(arrays[0])}; expected the prediction's shape. This is a bug in the plugin."
            )
        return g

    grad.__signature__ = _signature(plugin.grad)
    return grad


def _signature(fn: Callable) -> inspect.Signature:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return inspect.Signature([inspect.Parameter("arrays", inspect.Parameter.VAR_POSITIONAL),
                                  inspect.Parameter("params", inspect.Parameter.VAR_KEYWORD)])  # fmt: skip


def _called(name: str, plugin: _Plugin, fn: Callable, arrays, params):
    try:
        return fn(*arrays, **params)
    except (InputError, ParamError, LossctlError):
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's bug is one clear error naming it
        raise DataError(
            f"the plugin loss {name!r} ({plugin.label}) failed: {type(exc).__name__}: {short_reason(exc)}."
        ) from None


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------


def _entry_points():
    from importlib import metadata

    try:
        return list(metadata.entry_points(group=GROUP))
    except Exception:  # noqa: BLE001 - broken metadata of some package: no plugins from it
        return []


def _load_entry_point(ep) -> None:
    key = f"{ep.name} = {ep.value}"
    if key in _LOADED_MODULES:
        return
    dist = getattr(ep, "dist", None)
    who = f"{dist.name} {dist.version}" if dist is not None else ep.value
    try:
        _LOADING.append((dist.name, dist.version) if dist is not None else (ep.value.split(":")[0], "unversioned"))
        try:
            ep.load()
        finally:
            _LOADING.pop()
    except LossctlError as exc:
        _FAILED[key] = f"the plugin {who} (entry point {key}): {exc}"
        raise UsageError(_FAILED[key]) from None
    except Exception as exc:  # noqa: BLE001
        _FAILED[key] = (
            f"the plugin {who} (entry point {key} in group {GROUP}) failed to load: "
            f"{type(exc).__name__}: {short_reason(exc)}"
        )
        raise UsageError(_FAILED[key] + ".") from None
    _LOADED_MODULES.add(key)


def load_module(text: str, origin: str = "--plugin") -> None:
    """Import a plugin module (a dotted name, or a path to a .py file); failures name it."""
    text = text.strip()
    if text.endswith(".py") or os.sep in text:
        text = os.path.abspath(text)
    if not text or text in _LOADED_MODULES:
        return
    import importlib

    try:
        if text.endswith(".py") or os.sep in text:
            import importlib.util

            path = os.path.abspath(text)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no file {path}")
            modname = "lossctl_plugin_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
            spec = importlib.util.spec_from_file_location(modname, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[modname] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(text)
    except LossctlError as exc:
        raise UsageError(f"{origin} {text}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin's import error is one clear message
        raise UsageError(
            f"{origin} {text}: the plugin could not be imported ({type(exc).__name__}: {short_reason(exc)}). "
            "Expected an importable module (or a .py file) that registers losses with @lossctl.loss."
        ) from None
    _LOADED_MODULES.add(text)


def load_env() -> None:
    """The modules named in LOSSCTL_PLUGINS (comma-separated), once per value."""
    global _ENV_DONE
    value = os.environ.get(ENV, "")
    if value == _ENV_DONE:
        return
    _ENV_DONE = value
    for part in value.split(","):
        if part.strip():
            load_module(part, origin=ENV)


def load_installed() -> list[str]:
    """Every installed plugin (for listing losses): failures are returned as messages, not raised."""
    global _INSTALLED_DONE
    problems = []
    try:
        load_env()
    except UsageError as exc:
        problems.append(exc.message)
    if not _INSTALLED_DONE:
        _INSTALLED_DONE = True
        for ep in _entry_points():
            try:
                _load_entry_point(ep)
            except UsageError as exc:
                problems.append(exc.message)
    else:
        problems += [m for m in _FAILED.values() if m not in problems]
    return problems


def find(name: str):
    """The spec of the loss ``name`` from a plugin (None if no plugin has it); a plugin that is
    asked for and fails to load raises a UsageError naming it."""
    from lossctl import registry

    load_env()
    if name in registry.BY_NAME:
        return registry.BY_NAME[name]
    eps = _entry_points()
    for ep in eps:
        if ep.name == name:
            _load_entry_point(ep)
            if name in registry.BY_NAME:
                return registry.BY_NAME[name]
    failures = []
    for ep in eps:  # an entry point named otherwise may still register it
        try:
            _load_entry_point(ep)
        except UsageError as exc:
            failures.append(exc.message)
        if name in registry.BY_NAME:
            return registry.BY_NAME[name]
    if failures:
        raise UsageError(
            f"Unknown loss {name!r}; it may come from a plugin that failed to load: " + " ".join(failures)
        )
    return None


def take_cli_args(args: list[str]) -> list[str]:
    """Remove ``--plugin MODULE`` / ``--plugin=MODULE`` (anywhere before ``--``) and load them; the
    modules are also put in LOSSCTL_PLUGINS so that worker processes (--engine dask) load them."""
    out: list[str] = []
    modules: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out += args[i:]
            break
        if a == "--plugin":
            if i + 1 >= len(args):
                raise UsageError("--plugin needs a module name (or a .py file).")
            modules.append(args[i + 1])
            i += 2
            continue
        if a.startswith("--plugin="):
            modules.append(a.split("=", 1)[1])
            i += 1
            continue
        out.append(a)
        i += 1
    if modules:
        given = [m for m in os.environ.get(ENV, "").split(",") if m.strip()]
        for m in modules:
            load_module(m)
        os.environ[ENV] = ",".join(given + [os.path.abspath(m) if m.endswith(".py") else m for m in modules])
        load_env()
    return out
