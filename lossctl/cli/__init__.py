"""The ``lossctl`` command line: argument handling only (the faces layer).

``lossctl compute NAME`` has one subcommand per registered loss (and alias),
generated from ``lossctl.registry``: one positional source per input role, one
option per parameter, and the shared run options of ``lossctl.options``. Errors of
every kind meet at one boundary, :func:`main`, which maps them to the documented
exit codes. NumPy and pyarrow are imported only when a command runs, so ``--help``
is fast.

Modules: ``commands`` (the command tree), ``groups`` (click groups: suggestions,
switches, lazily built loss commands), ``schema`` (Typer options derived from the
option schema and the loss declarations), ``run`` (command bodies), ``catalogue``
(``list`` and ``explain`` rendering), ``console`` (streams), ``boundary`` (``main``).
"""

from __future__ import annotations

from lossctl.cli.boundary import _flag, main
from lossctl.cli.commands import EXIT_CODES_HELP, app
from lossctl.cli.groups import click
from lossctl.errors import EXIT_CHECK, EXIT_DATA, EXIT_USAGE


def __getattr__(name: str):
    """``COMMON_OPTIONS`` and ``COMPARE_OPTIONS`` (the Typer options derived from the option
    schema) are built on first use: ``lossctl --help`` needs neither."""
    if name in ("COMMON_OPTIONS", "COMPARE_OPTIONS"):
        from lossctl.cli import schema

        return getattr(schema, name)
    raise AttributeError(f"module 'lossctl.cli' has no attribute {name!r}")


__all__ = ["app", "main", "EXIT_CHECK", "EXIT_DATA", "EXIT_USAGE"]
