"""lossctl: how wrong are a model's outputs? Loss evaluation over files and in-memory data.

Python API (imported on first use, so ``import lossctl`` stays light)::

    import lossctl
    report = lossctl.compute("cross-entropy", logits, labels, label_smoothing=0.1)
    report.value, report.ci, report.to_dict()
    from lossctl import losses
    losses.cross_entropy(logits, labels)  # per-sample values
"""

__version__ = "0.1.0"

_LAZY = {
    "compute": "lossctl.api",
    "check": "lossctl.api",
    "Report": "lossctl.api",
    "CheckResult": "lossctl.api",
    "CompareResult": "lossctl.api",
    "loss": "lossctl.plugins",
    "LossctlError": "lossctl.errors",
    "DataError": "lossctl.errors",
    "InputError": "lossctl.errors",
    "ParamError": "lossctl.errors",
}


def __getattr__(name: str):
    import importlib

    if name in ("losses", "compare"):  # (the module lossctl.compare is callable as lossctl.api.compare)
        return importlib.import_module("lossctl." + name)
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lossctl' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | {"losses", "compare"})


def console_main() -> None:
    """The `lossctl` console script: a Ctrl-C even while the CLI is still importing exits 130."""
    import sys

    try:
        from lossctl.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("lossctl: interrupted\n")
        raise SystemExit(130) from None
    main()
