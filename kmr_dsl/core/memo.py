"""Typed caches: one named memo per thing remembered, instead of a shared bag of keys.

Contract: `Memo(name, key)` remembers `build()`'s result under a hashable key whose
shape `key` describes (for messages and tests); `ByIdentity(name, key)` remembers a
result per *object* (an IR node, a rule, a sympy expression, a state), keyed by its
identity plus an optional extra key, and keeps the object alive with the result so
that an id can never be reused for a different object while its entry exists. Both
count hits and misses (`hits`, `misses`), so a test can show that a cache is used,
and both may be bounded (`limit`: cleared when full, never grown without end).
"""

from __future__ import annotations

from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V")


class Memo(Generic[V]):
    def __init__(self, name: str, key: str, limit: int | None = None):
        self.name, self.key, self.limit = name, key, limit
        self._table: dict = {}
        self.hits = self.misses = 0

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        try:
            value = self._table[key]
        except KeyError:
            self.misses += 1
            value = build()
            if self.limit is not None and len(self._table) >= self.limit:
                self._table.clear()
            self._table[key] = value
            return value
        self.hits += 1
        return value

    def __len__(self) -> int:
        return len(self._table)

    def clear(self) -> None:
        self._table.clear()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} by {self.key}: {len(self)} kept, {self.hits} hits>"


class ByIdentity(Memo[V]):
    """A memo keyed by an object's identity (and an optional extra key)."""

    def get(self, obj, build: Callable[[], V], extra: Hashable = None) -> V:     # type: ignore[override]
        key = (id(obj), extra)
        hit = self._table.get(key)
        if hit is not None and hit[0] is obj:
            self.hits += 1
            return hit[1]
        self.misses += 1
        value = build()
        if self.limit is not None and len(self._table) >= self.limit:
            self._table.clear()
        self._table[key] = (obj, value)
        return value

    def find(self, obj, extra: Hashable = None, default=None):
        """The remembered value, or `default` (with `put`: no closure on hot paths)."""
        hit = self._table.get((id(obj), extra))
        if hit is not None and hit[0] is obj:
            self.hits += 1
            return hit[1]
        self.misses += 1
        return default

    def put(self, obj, value: V, extra: Hashable = None) -> V:
        if self.limit is not None and len(self._table) >= self.limit:
            self._table.clear()
        self._table[(id(obj), extra)] = (obj, value)
        return value


__all__ = ["ByIdentity", "Memo"]
