"""The one Registry every extension point uses: decorator registration, listing order, refusals."""

from __future__ import annotations

import pytest

from pursuhint.distill.methods import METHODS
from pursuhint.errors import PursuhintError
from pursuhint.infra.registry import Registry


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


def test_names_are_listed_as_registered():
    reg: Registry = Registry("thing")
    for name in ("z", "c", "a"):
        reg.register(name, name)
    assert reg.names() == list(reg) == ["z", "c", "a"]
    with pytest.raises(PursuhintError, match="valid: z, c, a$"):
        reg.get("x")


def test_the_built_in_methods_are_listed_as_the_package_imports_them():
    assert METHODS.names()[:14] == ["fitnet", "at", "nst", "vid", "sp", "pkt", "rkd", "cc", "kd_only", "none", "crd",
                                    "dkd", "reviewkd", "semckd"]


def test_convert_turns_what_is_registered_into_the_entry_kept():
    reg: Registry = Registry("thing", convert=lambda f: ("wrapped", f), check=lambda name, entry: None)

    @reg.register("f")
    def f():
        return 1

    assert f() == 1 and reg.get("f") == ("wrapped", f)  # the decorator gives back the function itself
