"""The kernel contract is declared on each loss (LossSpec.kernel_options), not sniffed by the
engine: the declaration must say exactly which optional keywords each kernel takes."""

import inspect

import pytest

from lossctl import registry

OPTIONAL = {"prob_atol", "extras", "batch_size"}


@pytest.mark.parametrize("name", sorted({registry.get(n).name for n in registry.names()}))
def test_declared_kernel_options_match_the_kernel(name):
    spec = registry.get(name)
    kernel = set(inspect.signature(spec.load_kernel()).parameters)
    grad = set(inspect.signature(spec.load_grad()).parameters)
    assert set(spec.kernel_options) == kernel & OPTIONAL
    # the gradient takes prob_atol / batch_size where the kernel does, never extras
    assert grad & OPTIONAL == set(spec.kernel_options) - {"extras"}
