"""The suite's rule (tests/conftest.py): a transformers deprecation that vlreg's code reaches fails the test."""

from __future__ import annotations

import warnings

import pytest

from tests.conftest import deprecated_by_transformers_for_vlreg


def function_in(module: str, source: str, **names):
    """The function ``f`` that ``source`` defines, as if it were written in the module named ``module``."""
    namespace = {"__name__": module, "warnings": warnings, **names}
    exec(source, namespace)
    return namespace["f"]


def test_a_transformers_deprecation_reached_from_vlreg_fails_the_test():
    deprecated = function_in("transformers.old_api", "def f():\n    warnings.warn('`x` is deprecated', FutureWarning)\n")
    use = function_in("vlreg.models.user", "def f():\n    deprecated()\n", deprecated=deprecated)
    with pytest.raises(FutureWarning, match="`x` is deprecated .*reached from vlreg's code"):
        use()


@pytest.mark.parametrize("issuer, caller, category, expected", [
    ("transformers.generation.utils", "vlreg.models.llms.causal", FutureWarning, True),
    ("transformers.utils.deprecation", "vlreg.interop.transformers_blip2", DeprecationWarning, True),
    ("transformers.generation.utils", "vlreg.models.llms.causal", UserWarning, False),  # not a deprecation
    ("transformers.generation.utils", "test_llms", FutureWarning, False),  # the test calls transformers itself
    ("torch.jit._script", "vlreg.models.encoders.timm_vit", DeprecationWarning, False),  # another library's
])
def test_which_warnings_count(issuer, caller, category, expected):
    check = function_in(issuer, "def f(category):\n    return check(category)\n", check=deprecated_by_transformers_for_vlreg)
    call = function_in(caller, "def f(category):\n    return issue(category)\n", issue=check)
    assert call(category) is expected
