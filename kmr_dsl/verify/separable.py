"""Budget lines as separable sums: components of knobs, each with a table or an affine form.

Contract: `separate(model, lines, decs)` takes lines `g_i op 0` (op `<=` or `<`) already
decomposed (decomposition.decompose) and returns a `Separable`, or None when some part of a
line is neither small and finite nor affine. A *component* is a set of knobs that
share a term in some line (union-find over every line at once, so `s[fc1]` and
`b[fc1]` form one component when `size` multiplies them even if `nonzero` reads only
`s[fc1]`); different components share no knob, so

    g_i = const_i + sum over components c of part_{i,c}(knobs of c)

and choosing a setting is choosing one point per component: a multiple-choice
knapsack with one resource per line. Components whose parts are equal up to renaming
of knobs of the same declaration (one per layer of equal shape) form one *class*,
evaluated once; a class is

- "table": every knob finite and the product of their domains at most TABLE_CAP
  points; `values(cls)` gives part values per point and line (float64, for the
  solver) and `exact_values` the same in rationals (for witnesses and certificates);
- "affine": each part is c_0 + sum c_j x_j with rational c and each knob stepped or a
  real interval (so `knob mem : int in [1 B, 1 GB]` is one integer variable, never
  enumerated).

Nothing here is exponential in the number of knobs or layers: a component's grid is
capped, and components are independent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import sympy as sp

from kmr_dsl.verify.algebra import frac
from kmr_dsl.verify.decomposition import find, join
from kmr_dsl.verify.intervals import ieval
from kmr_dsl.verify.numeric import evaluate

TABLE_CAP = 4096     # points of one component's grid


@dataclass
class Part:
    exprs: list             # the line's groups inside the component (their sum is the part)
    consts: list            # each group's float constants, pre-order (intervals.ieval)


@dataclass
class Component:
    symbols: tuple                       # knob symbols, in declaration order
    groups: dict                         # line position -> its decomposition.Group objects here
    _parts: dict | None = field(default=None, repr=False, compare=False)

    @property
    def parts(self) -> dict[int, Part]:
        """Line position -> part (absent: the line does not read it); made when first asked
        (only a class's representative is: 3,000 layers of a few classes build a few)."""
        if self._parts is None:
            self._parts = {i: Part([g.expr for g in gs], [g.consts for g in gs]) for i, gs in self.groups.items()}
        return self._parts


@dataclass
class Class:
    mode: str                            # "table" | "affine"
    members: list[Component]
    kvs: tuple                           # the representative's KnobVars
    sizes: tuple = ()                    # table: domain size per knob
    affine: list | None = None           # affine: per line, (const, [coef per knob]) as Fractions
    _float: np.ndarray | None = field(default=None, repr=False)
    _exact: dict | None = field(default=None, repr=False)
    _index: list | None = field(default=None, repr=False)
    # per line, (the shapes kept alive, the exact values of the class's part there by the
    # grid indices of the knobs it reads, {"float": its float64 column}, the positions of
    # those knobs): shared by every
    # class (of this or a later separation of the same model) whose part on some line has
    # the same knobs and group shapes and constants (`separate`); None: not shared
    _parts: list | None = field(default=None, repr=False)
    _flat: tuple | None = field(default=None, repr=False)
    _names: tuple | None = field(default=None, repr=False)

    @property
    def rep(self) -> Component:
        return self.members[0]

    @property
    def points(self) -> int:
        return math.prod(self.sizes)

    def member_symbols(self, knobs=None) -> tuple:
        """Every member's symbols, member after member, or with a KnobTable their knobs'
        names (made once: members are final once `separate` returns)."""
        if self._flat is None:
            self._flat = tuple(s for comp in self.members for s in comp.symbols)
        if knobs is None:
            return self._flat
        if self._names is None:
            self._names = tuple(knobs.by_symbol[s].name for s in self._flat)
        return self._names

    def index(self, point: tuple) -> int:
        """The grid index of exact knob values (inverse of `point`)."""
        if self._index is None:
            self._index = [{v: i for i, v in enumerate(kv.values)} for kv in self.kvs]
        p = 0
        for n, where, v in zip(self.sizes, self._index, point):
            p = p * n + where[v]
        return p

    def point(self, p: int) -> tuple:
        """Exact knob values of grid point p (row-major over the knobs)."""
        out = []
        for kv, n in zip(reversed(self.kvs), reversed(self.sizes)):
            p, r = divmod(p, n)
            out.append(kv.values[r])
        return tuple(reversed(out))


@dataclass
class Separable:
    lines: list                          # the Line objects, in the order given
    consts: list[Fraction]               # const_i
    classes: list[Class]
    # certificate.py's exact minima per class, by multiplier vector (the classes never change)
    minima: dict = field(default_factory=dict, repr=False, compare=False)


def _linear(e, pos: dict):
    """(const, {slot: coef}) when e is affine in the knobs of `pos`, else None.

    A linear walk (never sympy's expand: a product of 25 factors `(1 - k_i)` would expand
    to 2^25 terms): a product may have at most one factor that reads a knob.
    """
    if isinstance(e, sp.Rational):
        return frac(e), {}
    if isinstance(e, sp.Symbol):
        return (Fraction(0), {pos[e]: Fraction(1)}) if e in pos else None
    t = type(e)
    if t is sp.Add:
        const, coefs = Fraction(0), {}
        for a in e.args:
            part = _linear(a, pos)
            if part is None:
                return None
            const += part[0]
            for j, c in part[1].items():
                coefs[j] = coefs.get(j, Fraction(0)) + c
        return const, coefs
    if t is sp.Mul:
        scale, live = Fraction(1), None
        for a in e.args:
            part = _linear(a, pos)
            if part is None:
                return None
            if part[1]:
                if live is not None:
                    return None          # a product of two knob-dependent factors
                live = part
            else:
                scale *= part[0]
        if live is None:
            return scale, {}
        return scale * live[0], {j: scale * c for j, c in live[1].items()}
    return None


def _affine(exprs: list, symbols: tuple):
    """(const, [coef per symbol]) when the sum of `exprs` is affine with rational coefficients."""
    pos = {s: j for j, s in enumerate(symbols)}
    const, coefs = Fraction(0), [Fraction(0)] * len(symbols)
    for e in exprs:
        part = _linear(e, pos)
        if part is None:
            return None
        const += part[0]
        for j, c in part[1].items():
            coefs[j] += c
    return const, coefs


def separate(model, lines: list, decs: list) -> Separable | None:
    """Why ids: a group's symbols are the knobs' own objects (decomposition.term_info), so
    they are keyed by id, never hashed by sympy in Python; with a member's parts made
    only when asked (Component.parts), ~40% less time (3 lines x 3,000 layers)."""
    knobs = model.knobs
    parent: dict = {}           # id(symbol) -> id(symbol)
    for dec in decs:
        for g in dec.groups:
            join(parent, g.symbols)
    comps: dict = {}            # root -> {line position: its groups there}, positions ascending
    for i, dec in enumerate(decs):
        for g in dec.groups:
            root = find(parent, id(g.symbols[0]))
            comp = comps.get(root)
            if comp is None:
                comps[root] = {i: [g]}
            elif i in comp:
                comp[i].append(g)
            else:
                comp[i] = [g]
    classes: dict = {}
    # a part's exact values per grid point, by (knob declarations, the part's groups' shapes,
    # constants and knob positions): classes differing on one line (the size line's header
    # counts the layer's name) still share the others, and the optimistic lines of a
    # second separation (feasibility.check_feasibility) share every line but `size`'s.
    # Shapes are interned objects compared by identity: the entry keeps its shapes alive
    shared = getattr(model, "templates", None)
    shared = {} if shared is None else shared
    by_symbol = knobs.by_symbol
    for parts in comps.values():
        seen: dict = {}
        for gs in parts.values():
            for g in gs:
                for s in g.symbols:
                    seen.setdefault(id(s), s)
        # declaration order (KnobTable.sort_key: every symbol here is a knob's)
        ordered = sorted([(by_symbol[s], s) for s in seen.values()], key=_by_order)
        syms = tuple(s for _, s in ordered)
        pos = {id(s): j for j, s in enumerate(syms)}
        key = [tuple(id(kv.knob) for kv, _ in ordered)]
        for i, gs in parts.items():
            # shape and constants (exact: intervals.shape_of keeps inexact ones as Fractions)
            key.append((i, tuple((id(g.key), tuple(g.consts), tuple([pos[id(s)] for s in g.symbols]))
                                 for g in gs)))
        comp = Component(syms, parts)
        key = tuple(key)
        cls = classes.get(key)
        if cls is None:
            cls = classes[key] = _classify(comp, knobs, len(lines))
            if cls is None:
                return None
            if cls.mode == "table":
                cls._parts = [None] * len(lines)
                for i, part_key in key[1:]:
                    reads = tuple(sorted({j for _, _, at in part_key for j in at}))
                    cls._parts[i] = shared.setdefault(("separable: part values", key[0], part_key),
                                                      ([g.key for g in parts[i]], {}, {}, reads))
        else:
            cls.members.append(comp)
    return Separable(list(lines), [dec.const for dec in decs], list(classes.values()))


def _by_order(pair) -> int:
    return pair[0].order


def _classify(comp: Component, knobs, n_lines: int) -> Class | None:
    kvs = tuple(knobs.by_symbol[s] for s in comp.symbols)
    if all(kv.finite for kv in kvs):
        sizes = tuple(len(kv.values) for kv in kvs)
        if math.prod(sizes) <= TABLE_CAP:
            return Class("table", [comp], kvs, sizes)
    if not all(kv.kind in ("stepped", "real") for kv in kvs):
        return None
    forms = []
    for i in range(n_lines):
        part = comp.parts.get(i)
        form = (Fraction(0), [Fraction(0)] * len(kvs)) if part is None else _affine(part.exprs, comp.symbols)
        if form is None:
            return None
        forms.append(form)
    return Class("affine", [comp], kvs, affine=forms)


# ---------------------------------------------------------------- tables

def values(cls: Class, n_lines: int) -> np.ndarray:
    """float64 part values, shape (points, lines) (0 where a line does not read the class)."""
    if cls._float is not None:
        return cls._float
    n = cls.points
    idx = np.indices(cls.sizes).reshape(len(cls.sizes), -1)
    env = {}
    for j, (s, kv) in enumerate(zip(cls.rep.symbols, cls.kvs)):
        col = np.array([float(v) for v in kv.values])[idx[j]].reshape(1, n)
        env[s] = (col, col)
    out = np.zeros((n, n_lines))
    for i, part in cls.rep.parts.items():
        known = None if cls._parts is None or cls._parts[i] is None else cls._parts[i][2]
        col = None if known is None else known.get("float")
        if col is None:
            col = np.zeros(n)
            for g, consts in zip(cls.rep.groups[i], part.consts):
                cols = iter([np.array([[float(c)]]) for c in consts])
                lo, hi = ieval(g.expr, env, cols, False)
                col += np.broadcast_to(np.asarray(lo, dtype=float), (1, n)).reshape(n)
            if known is not None:
                known["float"] = col
        out[:, i] = col
    cls._float = out
    return out


def exact_values(cls: Class, n_lines: int, p: int) -> list[Fraction]:
    """Rational part values of grid point p, per line (members share them: equal up to renaming).

    A shared part is evaluated once per point of the knobs it reads (`nonzero` reads a
    layer's sparsity, not its bits: 19 points of 76), kept by their grid indices."""
    if cls._exact is None:
        cls._exact = {}
    row = cls._exact.get(p)
    if row is None:
        comp = cls.rep
        point = cls.point(p)
        at = _digits(cls.sizes, p)
        env = None
        row = [Fraction(0)] * n_lines
        shared = cls._parts
        for i, part in comp.parts.items():
            entry = None if shared is None else shared[i]
            known = sub = value = None
            if entry is not None:
                known, sub = entry[1], tuple([at[j] for j in entry[3]])
                value = known.get(sub)
            if value is None:
                if env is None:
                    # whole values as ints: exact, and int arithmetic is far cheaper than Fraction's
                    env = {s: v.numerator if type(v) is Fraction and v.denominator == 1 else v
                           for s, v in zip(comp.symbols, point)}
                value = sum((evaluate(e, env) for e in part.exprs), Fraction(0))
                if known is not None:
                    known[sub] = value
            row[i] = value
        cls._exact[p] = row
    return row


def _digits(sizes: tuple, p: int) -> list[int]:
    """The grid index of each knob at grid point p (row-major, as Class.point)."""
    out = []
    for n in reversed(sizes):
        p, r = divmod(p, n)
        out.append(r)
    out.reverse()
    return out


__all__ = ["Class", "Component", "Separable", "TABLE_CAP", "exact_values", "separate", "values"]
