"""The one Registry every extension point uses: decorator registration, listing order, refusals."""

from __future__ import annotations

import pytest

from pursuhint.distill.methods import METHODS
from pursuhint.distill.methods.registry import LISTING
from pursuhint.errors import PursuhintError
from pursuhint.registry import Registry


def test_the_decorator_registers_and_returns_the_object():
    reg: Registry = Registry("thing")

    @reg.register("one")
    def one():
        return 1

    assert one() == 1 and reg.get("one") is one and reg.names() == ["one"] and "one" in reg and len(reg) == 1
    with pytest.raises(ValueError, match="thing 'one' is already registered"):
        reg.register("one", one)
    with pytest.raises(PursuhintError, match=r"unknown thing 'onee' \(did you mean 'one'\?\); valid: one"):
        reg.get("onee")


def test_a_listing_order_puts_the_listed_names_first_and_the_rest_as_registered():
    reg: Registry = Registry("thing", order=("a", "b", "c"))
    for name in ("z", "c", "a", "y", "b"):  # registered out of the listing order, with two unlisted names
        reg.register(name, name)
    assert reg.names() == list(reg) == ["a", "b", "c", "z", "y"]
    with pytest.raises(PursuhintError, match="valid: a, b, c, z, y$"):
        reg.get("x")


def test_the_built_in_methods_are_listed_in_the_benchmarks_order():
    # Registered at their definitions, module by module; listed as they always were.
    assert METHODS.names()[:len(LISTING)] == list(LISTING)
    assert set(LISTING) <= set(METHODS.names())


def test_convert_turns_what_is_registered_into_the_entry_kept():
    reg: Registry = Registry("thing", convert=lambda f: ("wrapped", f), check=lambda name, entry: None)

    @reg.register("f")
    def f():
        return 1

    assert f() == 1 and reg.get("f") == ("wrapped", f)  # the decorator gives back the function itself
