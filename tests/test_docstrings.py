"""Every docstring example in the package runs and prints what it says."""

import doctest
import importlib
import pkgutil

import pytest

import bayescount

MODULES = sorted(m.name for m in pkgutil.iter_modules(bayescount.__path__, "bayescount.") if m.name != "bayescount.__main__")


@pytest.mark.parametrize("name", ["bayescount", *MODULES])
def test_docstring_examples(name):
    if name == "bayescount.singlecell":
        pytest.importorskip("anndata")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
