"""Named registries: users add their own models, similarities, clusterings and methods in one file."""

from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

from ..errors import PursuhintError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name → object mapping with a decorator to add entries and a clear error for unknown names.

    >>> SIMS = Registry("similarity")
    >>> @SIMS.register("mine")
    ... def mine(x, y): ...
    """

    def __init__(self, kind: str, error: type[PursuhintError] = PursuhintError,
                 check: Callable[[str, T], None] | None = None,
                 convert: Callable[[Any], T] | None = None) -> None:
        self.kind = kind
        self.error = error
        self.check = check  # raises if an entry lacks what its users rely on (called on register)
        self.convert = convert  # what is registered → the entry kept (a similarity's pair function → a Measure)
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` under ``name`` (as ``convert`` makes it, if given); used bare as a decorator when ``obj``
        is omitted. What is decorated (or ``obj``) comes back unchanged."""

        def add(item: Any) -> Any:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            entry = self.convert(item) if self.convert is not None else item
            if self.check is not None:
                self.check(name, entry)
            self._items[name] = entry
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The entry called ``name``, or a PursuhintError listing the valid names."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise self.error(unknown_name_message(self.kind, name, self.names())) from None

    def names(self) -> list[str]:
        """The registered names, in the order they were registered (a package's built-ins, then plugins)."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def did_you_mean(name: object, valid: Sequence[str], prefix: str = "") -> str:
    """`` (did you mean 'cka_linear'?)`` for the closest valid name (with ``prefix``, e.g. a key's section), or ""."""
    close = difflib.get_close_matches(name, list(valid), n=1) if isinstance(name, str) else []
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""


def unknown_name_message(kind: str, name: object, valid: list[str]) -> str:
    """``unknown similarity 'cka' (did you mean 'cka_linear'?); valid: r2_cca, cka_linear``."""
    return f"unknown {kind} {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}"
