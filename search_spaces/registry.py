"""One registry idiom for everything chosen by name: spaces, mixers, strategies, predictors,
sampling rules, datasets.

A `Registry` maps names to objects. Classes and functions register with a decorator
(`@STRATEGIES.register` takes the class's `name` attribute; `@DATASETS.register("digits")` names it);
data registers with `add`. A duplicate name is an error, and so is an unknown one, which lists the
choices in the registry's own error type. Names are listed sorted, or in registration order where
that order carries meaning (`ordered=True`: the token mixers, whose order is that of the encodings).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar, cast, overload

T = TypeVar("T")


class _Named(Protocol):
    name: str


class Registry(Generic[T]):
    def __init__(self, kind: str, error: type[Exception] = ValueError, *, ordered: bool = False):
        self.kind = kind  # what the entries are, for messages: "strategy", "space", ...
        self.error = error  # raised for an unknown name
        self.ordered = ordered  # list names in registration order instead of sorted
        self._entries: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
        if name in self._entries:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._entries[name] = obj
        return obj

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: T) -> T: ...

    def register(self, name: str | T) -> Callable[[T], T] | T:
        """Decorator: `@reg.register("name")`, or bare `@reg.register` for a class with a `name` attribute."""
        if isinstance(name, str):
            return lambda obj: self.add(name, obj)
        return self.add(cast(_Named, name).name, name)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise self.error(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return self._entries[name]

    def remove(self, name: str) -> T:
        """Unregister `name` (a plugin or a test that registered an entry for a while)."""
        obj = self.get(name)
        del self._entries[name]
        return obj

    def names(self) -> list[str]:
        return list(self._entries) if self.ordered else sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
