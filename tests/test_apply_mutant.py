"""The mutant writer puts a method's mutant into its own class, not the first method of that name."""
from __future__ import annotations

import pytest

# libcst comes with mutmut (the `mutation` extra, in the lock)
cst = pytest.importorskip("libcst")

from benchmarks.apply_mutant import replace_function  # noqa: E402

SOURCE = '''\
class Base:
    def norm(self, x):
        """abstract"""


class Linf(Base):
    def norm(self, x):
        return max(x)


class L2(Base):
    def norm(self, x):
        return sum(v * v for v in x) ** 0.5


def norm(x):
    return 0
'''


def _function(code: str):
    return cst.parse_module(code).body[0]


def test_a_methods_mutant_replaces_that_class_method_only():
    mutated = replace_function(SOURCE, "L2", "norm", _function("def xǁL2ǁnorm__mutmut_3(self, x):\n    return None\n"))
    namespace: dict = {}
    exec(mutated, namespace)
    assert namespace["L2"]().norm([3, 4]) is None
    assert namespace["Linf"]().norm([3, 4]) == 4 and namespace["norm"]([1]) == 0
    assert mutated.replace("        return None\n", "        return sum(v * v for v in x) ** 0.5\n") == SOURCE


def test_a_functions_mutant_replaces_the_top_level_function_only():
    mutated = replace_function(SOURCE, None, "norm", _function("def x_norm__mutmut_1(x):\n    return 1\n"))
    namespace: dict = {}
    exec(mutated, namespace)
    assert namespace["norm"]([1]) == 1 and namespace["L2"]().norm([3, 4]) == 5.0


def test_a_missing_class_or_function_is_an_error():
    with pytest.raises(LookupError, match="no function 'norm' in class L3"):
        replace_function(SOURCE, "L3", "norm", _function("def f(self):\n    pass\n"))
    with pytest.raises(LookupError, match="no function 'size' in the module's top level"):
        replace_function(SOURCE, None, "size", _function("def f():\n    pass\n"))
