"""Every adapter is used through :class:`runtimes.base.Runtime` alone: no public hook outside the base.

The harness calls adapters only through the base class's methods; a public method that one adapter
adds and the harness probes for with ``hasattr`` is an undeclared interface. Importing an adapter
module needs none of its runtime's packages (they are imported inside methods), so this runs anywhere.
"""
from __future__ import annotations

import inspect

import pytest

from quantbench.runtimes import Runtime, get_runtime_class, list_runtimes


def _public(cls: type) -> set[str]:
    """Public methods and declared attributes (class constants an adapter keeps for itself are not hooks)."""
    methods = {name for name, value in inspect.getmembers(cls) if not name.startswith("_") and callable(value)}
    return methods | {name for name in getattr(cls, "__annotations__", {}) if not name.startswith("_")}


@pytest.mark.parametrize("name", list_runtimes())
def test_adapter_adds_no_public_hook_beyond_the_base(name):
    cls = get_runtime_class(name)
    assert issubclass(cls, Runtime)
    extra = _public(cls) - _public(Runtime)
    assert extra == set(), f"{name} adds public members the base does not declare: {sorted(extra)}"


@pytest.mark.parametrize("name", list_runtimes())
def test_optional_hooks_answer_with_the_declared_types(name):
    cls = get_runtime_class(name)
    assert isinstance(cls.requirements(), str)
    assert isinstance(cls.option_types(), dict)
    assert set(cls.option_types()) <= set(cls.option_names())
    assert isinstance(cls.option_names(), tuple)


def test_the_check_sees_an_undeclared_hook():
    class Leaky(Runtime):
        name = "leaky"

        @classmethod
        def availability(cls):  # pragma: no cover - never called
            raise AssertionError

        def _activate_impl(self, artifact):  # pragma: no cover
            pass

        def _infer_impl(self, staged):  # pragma: no cover
            pass

        def warmup_hint(self) -> int:  # the undeclared public hook
            return 3

    assert _public(Leaky) - _public(Runtime) == {"warmup_hint"}
