"""Expressions built once and instantiated over other knob symbols.

Contract: `Template(expr, symbols)` compiles an expression built by
kmr_dsl.verify.algebra over `symbols`; calling it with other symbols (one per template
symbol, in order) gives the expression built over those, node for node as algebra's
constructors would leave it (unevaluated), without folding or comparing again. The cost
model (verify/cost.py) and stepping (verify/stepping.py) share one layer's terms, clauses
and effects with every layer of the same shape this way.
"""

from __future__ import annotations

from operator import is_

import sympy as sp
from sympy.core.relational import Relational
from sympy.functions.elementary.piecewise import ExprCondPair
from sympy.logic.boolalg import And, Not, Or

from kmr_dsl.verify.algebra import _apply, _lattice, _new

_ASSOC = (sp.Add, sp.Mul)
_LATTICE = (And, Or, sp.Min, sp.Max)
_PLAIN = (Relational, Not, ExprCondPair, sp.Piecewise)
# instantiations of one template walked before its plan is compiled to a function:
# compiling costs 7-10 walks of the same plan and saves about a third of each later
# one (measured: a 25-knob program's large templates, each instantiated once or twice,
# spent a quarter of `verify` compiling when every template was compiled), and a
# 3,000-layer model instantiates each of its templates about a thousand times
GENERATE_AFTER = 32


class Template:
    """An expression over some symbols, to be built again over others: what building it
    over the new symbols gives (algebra's nodes, unevaluated), in one pass over the
    nodes that depend on the symbols (constant subtrees are shared, never visited).

    Why: layers of the same shape get the same cost terms up to their knobs
    (verify/cost.py builds one layer's and instantiates it for the others); building
    is every fold and comparison again, instantiating one constructor call per node.
    """

    def __init__(self, expr, symbols: tuple):
        self.expr, self.symbols = expr, tuple(symbols)
        self._plan: list = []                 # (class, how, argument refs) in post-order
        self._root = self._compile(expr, {s: i for i, s in enumerate(self.symbols)}, {})
        self._build = None                    # the plan as a function, once reused (_generate)
        self._calls = 0

    def _compile(self, e, index: dict, seen: dict):
        """A ref: an int (the position of a rebuilt value) or the node itself (constant)."""
        args = e._args
        if not args:
            return index.get(e, e) if isinstance(e, sp.Symbol) else e
        hit = seen.get(id(e))
        if hit is not None:
            return hit
        refs = tuple(self._compile(a, index, seen) for a in args)
        if not any(type(r) is int for r in refs):
            ref = e
        else:
            t = type(e)
            how = 0 if t in _ASSOC else 1 if t in _LATTICE else 2 if isinstance(e, _PLAIN) else 3
            self._plan.append((t, how, refs))
            ref = len(self.symbols) + len(self._plan) - 1
        seen[id(e)] = ref
        return ref

    def _generate(self):
        """The plan as one Python function of the new symbols: one constructor call per
        node, no loop or dispatch (measured: instantiation about 1.5x faster than walking
        the plan; a 3,000-layer model instantiates each template about a thousand times).
        The source is made of
        generated names only (v3 = C1((v0, K2), True)): constants and classes are
        passed in the function's namespace, never written into its text."""
        names: dict = {"L": _lattice, "N": _new, "P": _apply}
        consts: dict = {}

        def const(x, prefix="K"):
            name = consts.get(id(x))
            if name is None:
                name = consts[id(x)] = f"{prefix}{len(consts)}"
                names[name] = x
            return name

        n = len(self.symbols)
        body = []
        for i, (t, how, refs) in enumerate(self._plan):
            args = ", ".join(f"v{r}" if type(r) is int else const(r) for r in refs)
            if how == 0:
                call = f"{const(t._from_args, 'C')}(({args},), True)"
            elif how == 1:
                call = f"L({const(t, 'C')}, {args})"
            elif how == 2:
                call = f"N({const(t, 'C')}, {args})"
            elif t is sp.floor or t is sp.ceiling:
                call = f"P({const(t, 'C')}, {args})"
            else:
                call = f"{const(t, 'C')}({args}, evaluate=False)"      # Pow
            body.append(f"    v{n + i} = {call}")
        root = self._root
        body.append(f"    return {f'v{root}' if type(root) is int else const(root)}")
        params = ", ".join(f"v{i}" for i in range(n))
        source = f"def instantiate({params}):\n" + "\n".join(body) + "\n"
        exec(compile(source, "<kmr template>", "exec"), names)       # noqa: S102 - generated names only
        return names["instantiate"]

    def __call__(self, symbols: tuple):
        """The expression over `symbols` (one per template symbol, in the same order)."""
        if all(map(is_, symbols, self.symbols)):       # identity: sympy's == is slow
            return self.expr
        if self._build is not None:
            return self._build(*symbols)
        if not self._plan:
            root = self._root
            return symbols[root] if type(root) is int else root
        self._calls += 1
        if self._calls >= GENERATE_AFTER:
            self._build = self._generate()
            return self._build(*symbols)
        return self._walk(symbols)

    def _walk(self, symbols: tuple):
        """The plan interpreted: no compilation, for a template instantiated only a few times."""
        vals = list(symbols)
        for t, how, refs in self._plan:
            args = tuple([vals[r] if type(r) is int else r for r in refs])
            if how == 0:
                vals.append(t._from_args(args, True))
            elif how == 1:
                vals.append(_lattice(t, *args))
            elif how == 2:
                vals.append(_new(t, *args))
            elif t is sp.floor or t is sp.ceiling:
                vals.append(_apply(t, *args))
            else:
                vals.append(t(*args, evaluate=False))      # Pow
        root = self._root
        return vals[root] if type(root) is int else root


__all__ = ["Template"]
