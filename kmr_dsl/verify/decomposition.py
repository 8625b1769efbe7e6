"""Budget lines split into groups of terms that share knobs, for the bounds and the knapsack.

Contract: `decompose(expr, knobs, memo)` returns a `Decomposition`: the constant and the
connected components ("these terms share a knob", union-find) of a sum of terms, each a
`Group` with its interned shape key and constants, which verify/bounds.py evaluates in
batches and verify/separable.py turns into per-layer tables. A term's walk (its symbols,
shape and constants: `term_info`) is kept per term object in `memo`; `instance_info`
(a layer's term built from a template, verify/cost.py) and `scaled_info` (a negated or
scaled shared term, as every `>=` line makes) derive it without a walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import sympy as sp

from kmr_dsl.verify.algebra import NotModelled, frac
from kmr_dsl.verify.intervals import exact_comparisons, shape_of
from kmr_dsl.verify.knobs import KnobTable

@dataclass
class Group:
    expr: object
    symbols: tuple            # knob symbols, in order of first appearance
    key: tuple                # shape key (interned): groups with the same key evaluate as one batch
    consts: list              # constants in pre-order
    # a group of several terms: per term (interned shape, positions of its symbols in
    # `symbols`, number of its constants), for intervals.ieval_sum; () for one term
    parts: tuple = ()
    decls: tuple | None = None  # id of each symbol's knob declaration (decompose; None: unknown)

    def shape(self) -> tuple:
        return self.key, self.consts


@dataclass
class Decomposition:
    const: Fraction
    groups: list[Group]
    symbols: frozenset
    exact_compare: bool = False     # precise bounds are sound (intervals.exact_comparisons)


# Shapes are interned: equal shapes are one object, so later stages (batches here, the
# knapsack's classes) compare and hash them by identity instead of re-hashing a nested
# tuple per group (thousands of groups per line). An identity stays valid while a group
# holds its shape; clearing the table only splits later batches, never merges unequal ones.
_SHAPES: dict = {}


def _intern(shape):
    hit = _SHAPES.get(shape)
    if hit is None:
        if len(_SHAPES) > 65536:
            _SHAPES.clear()
            _ADD_KEYS.clear()
        hit = _SHAPES[shape] = shape
    return hit


def decompose(expr, knobs: KnobTable, memo: dict | None = None) -> Decomposition:
    """Split `expr` into a constant and groups of terms that share knobs (union-find).

    Each term is walked once (its symbols, shape and constants together); `memo` keeps
    those per term object, so decomposing `size` after `size - 16000` walks nothing twice.

    Why ids: the union-find (`join`) and the groups' symbol lists key symbols by id
    (term_info gives each knob's own symbol object, so equal symbols are one object), and
    a group of several terms finds its interned key and parts by its terms' shape
    identities (_add_key): a sympy symbol hashes in Python and a shape is a
    nested tuple hashed whole each time; measured ~35% of a 3,000-layer `size` line's
    decomposition (12,000 terms in 3,000 groups).
    """
    memo = {} if memo is None else memo
    terms = list(expr.args) if type(expr) is sp.Add else [expr]
    const = Fraction(0)
    parent: dict = {}           # id(symbol) -> id(symbol)
    owned = []
    get = memo.get
    for t in terms:
        if isinstance(t, sp.Rational):
            const += frac(t)
            continue
        info = get(id(t))
        if info is None or info[0] is not t:
            info = term_info(t, knobs, memo)
        if not info[3]:
            raise NotModelled("a constant term that did not fold")
        join(parent, info[3])
        owned.append(info)
    buckets: dict = {}
    for info in owned:
        root = find(parent, id(info[3][0]))
        hit = buckets.get(root)
        if hit is None:
            buckets[root] = [info]
        else:
            hit.append(info)
    groups = []
    for infos in buckets.values():
        if len(infos) == 1:
            t, shape, consts, syms = infos[0][:4]
            groups.append(Group(t, syms, shape, consts, (), infos[0][5]))
            continue
        slot: dict = {}
        for info in infos:
            for s, d in zip(info[3], info[5]):
                if id(s) not in slot:
                    slot[id(s)] = (len(slot), s, d)
        syms = tuple(s for _, s, _ in slot.values())
        key, parts = _add_key(infos, slot)
        e = sp.Add._from_args(tuple(info[0] for info in infos), True)
        groups.append(Group(e, syms, key, [c for info in infos for c in info[2]], parts,
                            tuple(d for _, _, d in slot.values())))
    return Decomposition(const, groups, frozenset([s for info in owned for s in info[3]]),
                         all(info[4] for info in owned))


def join(parent: dict, symbols) -> None:
    """Put `symbols` in one set of the union-find `parent` (id(symbol) -> id(symbol); a
    symbol not in it yet is its own set first). decompose and separable.separate share it."""
    first = id(symbols[0])
    if first not in parent:
        parent[first] = first
    for s in symbols[1:]:
        i = id(s)
        if i not in parent:
            parent[i] = i
        a, b = find(parent, first), find(parent, i)
        if a != b:
            parent[b] = a


def find(parent: dict, s: int) -> int:
    """The root of `s`'s set in the union-find `parent` (halving the path on the way)."""
    while parent[s] != s:
        parent[s] = parent[parent[s]]
        s = parent[s]
    return s


# (id(shape), slots) per term of a group -> (the group's interned key, its parts, the
# shapes kept alive): the ids are of live objects, so a hit is those very shapes; cleared
# with _SHAPES, so a key found here is the one _intern would return
_ADD_KEYS: dict = {}


def _add_key(infos: list, slot: dict) -> tuple:
    """The interned shape key and the `parts` of a group of several terms (decompose)."""
    pos = [tuple([slot[id(s)][0] for s in info[3]]) for info in infos]
    sig = tuple([(id(info[1]), p) for info, p in zip(infos, pos)])
    hit = _ADD_KEYS.get(sig)
    if hit is not None:
        return hit[0], hit[1]
    key = _intern(("Add", tuple((info[1], p) for info, p in zip(infos, pos))))
    parts = tuple((info[1], p, len(info[2])) for info, p in zip(infos, pos))
    if len(_ADD_KEYS) > 65536:
        _ADD_KEYS.clear()
    _ADD_KEYS[sig] = (key, parts, [info[1] for info in infos])
    return key, parts


def term_info(t, knobs: KnobTable, memo: dict) -> tuple:
    """(term, shape, constants, symbols, exact comparisons, the symbols' declarations' ids)
    of one term, remembered in `memo` (_info)."""
    info = memo.get(id(t))
    if info is None or info[0] is not t:
        info = scaled_info(t, memo)
        if info is not None:
            return info
        slots: dict = {}
        consts: list = []
        compared: list = []
        shape = _intern(shape_of(t, slots, consts, compared))
        kvs = []
        for s in slots:
            kv = knobs.by_symbol.get(s)
            if kv is None:
                raise NotModelled(f"`{s}` is not a knob of this pipeline")
            kvs.append(kv)
        info = memo[id(t)] = _info(t, shape, consts, kvs, exact_comparisons(compared, knobs))
    return info


def _info(t, shape, consts: list, kvs, exact: bool) -> tuple:
    """A term's info: its symbols are the knobs' own objects (decompose keys them by id),
    with their declarations' ids (definedness.py keys terms by them)."""
    return (t, shape, consts, tuple(kv.symbol for kv in kvs), exact, tuple(id(kv.knob) for kv in kvs))


def scaled_info(t, memo: dict) -> tuple | None:
    """The info of `c * u` (a constant times a term already in `memo`) from u's, as
    shape_of would compute it (the constant first in pre-order; u's slots, constants and
    comparisons unchanged: a constant adds none), remembered in `memo`; None when `t` is
    not such a product. Never walks a term.

    Why: a `>=` line is `right - left`, each of its 3,000 per-layer terms the negation
    of a term the cost model shared (cost.py, instance_info): walking each again cost
    ~0.1 s for that line at 3,000 layers."""
    if type(t) is not sp.Mul:
        return None
    args = t.args
    if len(args) != 2 or not isinstance(args[0], sp.Rational):
        return None
    base = memo.get(id(args[1]))
    if base is None or base[0] is not args[1]:
        return None
    consts: list = []
    head = shape_of(args[0], {}, consts)
    info = memo[id(t)] = (t, _intern(("Mul", (head, base[1]))), consts + base[2]) + base[3:]
    return info


def instance_info(t, model_term, mapping: dict, knobs: KnobTable, memo: dict) -> None:
    """Remember `t`'s term info as `model_term`'s with its symbols mapped: `t` is
    `model_term` built again over other knobs of the same declarations (verify/template.py,
    as verify/cost.py does per layer shape), so its shape and constants are the same and
    no walk of `t` is needed. Nothing is remembered when `model_term` has no info."""
    try:
        base = term_info(model_term, knobs, memo)
    except NotModelled:
        return
    kvs = [knobs.by_symbol.get(mapping.get(s, s)) for s in base[3]]
    if None not in kvs:
        memo[id(t)] = _info(t, base[1], base[2], kvs, base[4])


__all__ = ["Decomposition", "Group", "decompose", "find", "instance_info", "join", "scaled_info", "term_info"]
