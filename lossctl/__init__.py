"""lossctl: how wrong are a model's outputs? Loss evaluation over files."""

__version__ = "0.1.0"


def console_main() -> None:
    """The `lossctl` console script: a Ctrl-C even while the CLI is still importing exits 130."""
    import sys

    try:
        from lossctl.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("lossctl: interrupted\n")
        raise SystemExit(130) from None
    main()
