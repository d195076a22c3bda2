"""Pure NumPy loss kernels, one module per family. No I/O, no printing.

Calling convention (every kernel)::

    kernel(*inputs, **params) -> Result

``inputs`` are NumPy arrays with rows first (one row per sample), in the order
of the loss's input roles in the registry. ``params`` use the registry's
parameter names with ``-`` replaced by ``_``. A kernel returns per-sample values
as float64; invalid values raise :class:`lossctl.errors.InputError` naming the
role and the rows (relative to the arrays given), so the caller can name the
file, column and absolute row.

Each kernel has a gradient function with the same signature returning
``d loss_n / d pred_n`` with the prediction's shape (float64).
"""

from __future__ import annotations

from dataclasses import dataclass, field



@dataclass
class Result:
    """Per-sample output of a kernel.

    loss:       (n,) float64 per-sample values (0 at ignored rows, as PyTorch's ``reduction='none'``).
    num, den:   (n,) the headline mean is ``Σ num / Σ den`` over rows that are not ignored;
                ``None`` means ``num = loss`` and ``den = 1``. The headline sum is ``Σ num``.
    ignored:    (n,) bool, rows excluded from every statistic (e.g. ``ignore_index``), or None.
    columns:    extra per-sample output columns (``p_true``, ``pred_class`` ...).
    components: per-sample terms whose means the report shows (``entropy`` + ``kl`` = CE ...).
    """

    loss: np.ndarray
    num: np.ndarray | None = None
    den: np.ndarray | None = None
    ignored: np.ndarray | None = None
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    components: dict[str, np.ndarray] = field(default_factory=dict)


def __getattr__(name: str):
    """``lossctl.losses.cross_entropy`` and every other loss as a documented NumPy function
    (lossctl.library): per-sample values, ``.grad``, numpydoc from the catalogue."""
    if name.startswith("_"):
        raise AttributeError(name)
    import importlib.util

    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a kernel module (``contrastive``)
        return importlib.import_module(f"{__name__}.{name}")  # (its loss: ``contrastive_loss``)
    from lossctl import library

    if name == "names":
        return library.names
    return library.function(name)
