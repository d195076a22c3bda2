"""NumPy for the kernel modules, imported on first use.

The family modules hold both the kernels and the declarations that ``lossctl --help``,
``list`` and ``explain`` read; importing them must not cost a NumPy import. Each module
binds ``np = lazy(globals())``: the first attribute looked up on it imports NumPy and
rebinds the module's global ``np`` to the real module, so kernels pay nothing afterwards.
"""

from __future__ import annotations

from typing import Any


class _LazyNumpy:
    __slots__ = ("_globals",)

    def __init__(self, module_globals: dict[str, Any]) -> None:
        object.__setattr__(self, "_globals", module_globals)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):  # introspection (hasattr, copy, doctest)
            raise AttributeError(name)
        import numpy

        self._globals["np"] = numpy
        return getattr(numpy, name)

    def __repr__(self) -> str:
        return "<numpy, imported on first use>"


def lazy(module_globals: dict[str, Any]) -> Any:
    """A stand-in for ``numpy`` bound to the module whose ``globals()`` is given."""
    return _LazyNumpy(module_globals)
