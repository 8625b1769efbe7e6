"""Walking, rewriting and dispatching on the IR of kmr_dsl.core.program.

Contract:
- `children(e)`, `nodes(e)` (pre-order, iterative: deep trees do not recurse) and
  `rewrite(e, f)` (bottom-up, each node replaced by `f(node)`) are the one way to walk
  an IR expression; a `Constraint` walks its two sides.
- `Dispatch(name)` is the one registry keyed by node class that every evaluator of the
  IR is built on (the numeric evaluator here in core, the verifier's sympy evaluator):
  `@table.register(P.Op)` adds a handler, `table(node, *args)` calls it, and a node
  class with no handler raises `Unsupported` — one error, naming the table and the
  class, for every evaluator.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from kmr_dsl.core import program as P


class Unsupported(TypeError):
    """An IR node an evaluator has no rule for."""


def children(e) -> tuple:
    if isinstance(e, P.Op):
        return e.args
    if isinstance(e, P.If):
        return (e.cond, e.then, e.orelse)
    if isinstance(e, P.Constraint):
        return (e.left, e.right)
    return ()


def nodes(e):
    """Every node of an expression, pre-order."""
    stack = [e]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


def rewrite(e, f):
    if isinstance(e, P.Op):
        e = replace(e, args=tuple(rewrite(a, f) for a in e.args))
    elif isinstance(e, P.If):
        e = replace(e, cond=rewrite(e.cond, f), then=rewrite(e.then, f), orelse=rewrite(e.orelse, f))
    return f(e)


class Dispatch:
    """Handlers keyed by IR node class: `table(node, *args)` -> `handler(node, *args)`."""

    def __init__(self, name: str):
        self.name = name
        self.handlers: dict[type, Callable] = {}

    def register(self, *classes: type):
        def add(handler: Callable) -> Callable:
            for cls in classes:
                self.handlers[cls] = handler
            return handler
        return add

    def __call__(self, node, *args):
        handler = self.handlers.get(type(node))
        if handler is None:
            raise Unsupported(f"{self.name}: no rule for {type(node).__name__}")
        return handler(node, *args)


__all__ = ["Dispatch", "Unsupported", "children", "nodes", "rewrite"]
