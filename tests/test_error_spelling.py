"""The core names options by their Python names (errors.opt); each face spells them."""

from lossctl import errors
from lossctl.errors import DataError, InputError, ParamError, opt, spell, spelling


def test_python_spelling_is_the_default():
    assert str(DataError(f"{opt('chunk_size')} must be at least 1.")) == "chunk_size must be at least 1."


def test_cli_spelling_inside_a_block_and_restored_after():
    with spelling(lambda n: "--" + n.replace("_", "-")):
        assert str(UsageLike()) == "use --per-sample PATH with --id-col"
        assert str(ParamError("alpha", f"{opt('alpha')} must be in [0, 1]")) == "--alpha must be in [0, 1]"
        assert str(InputError("pred", f"set {opt('prob_atol')}")) == "set --prob-atol"
    assert str(UsageLike()) == "use per_sample PATH with id_col"


def test_marks_in_data_are_not_options_and_text_without_marks_is_unchanged():
    assert spell("plain text -- with dashes") == "plain text -- with dashes"
    # a mark around something that is not a name is left alone (and shown escaped by visible())
    assert "\\x1f" in str(DataError("column \x1fa b\x1f"))


def UsageLike():
    return errors.UsageError(f"use {opt('per_sample')} PATH with {opt('id-col')}")
