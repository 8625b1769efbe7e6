"""Lines infeasible only together through knobs shared by several layer shapes, where the
decoupled certificate (joint.py) has a gap: the free knobs' domain split into boxes, each
refuted by its own decoupled certificate, checked in exact arithmetic.

Contract: `refute(lines, knobs, meets)` returns a tree (a `Branch`, or one decoupled
certificate) proving that no setting meets every line, a `Witness` (a box shrunk to a
point held a setting `meets` accepts), or None (nothing concluded: the lines are not over
atoms, a point box is neither refuted nor met, or the tree outgrew MAX_LEAVES / the time).
`check(lines, knobs, tree)` re-derives everything from the lines and returns True only
when the tree proves infeasibility.

Why. joint.py lets each per-layer count range on its own inside its proved range. With
one shared prune amount acting on layers of several shapes, the counts move together,
so the decoupled relaxation reaches values no setting reaches (every shape's count
small at once is fine, but a window between two reachable values of `nonzero` is not met
by any single amount): no certificate over the whole box exists. Over a smaller box of
the free knobs the counts' proved ranges shrink (atoms are monotone: a range is the
values at two corners, atoms.py), and as a box narrows to a point they become exact. So
the domain is split, a knob at a time, until each box has a decoupled certificate.

Format. A node is a branch `(symbol, at, le, ge)`: the box's values of that free knob up
to `at` go to `le`, the rest to `ge` (for a finite knob `at` is one of its values and
`ge` starts at the next one: every value is on one side; for a real knob both sides
share `at`), or a leaf, a `joint.Certificate` for its box. `check` rebuilds each box from
the declared domains and the splits, so the leaves cover every setting, and re-checks
each leaf with `joint.check` over its box.

Work: each leaf one decoupled proof (case settings x counts x pieces); the split is
bisection of the knob with the most values left, so a box that must shrink to one value
of k knobs costs about k log2(values) leaves. Past MAX_LEAVES nothing is concluded. The
lines' atoms and case substitutions are prepared once (atom_groups.prepare) and only the
atoms' ranges are re-evaluated per box. Before the split, a witness search over the same
boxes (`_hunt`: float interval sums, no LP, at most HUNT_BOXES boxes) looks for a
setting that meets the lines, and each box without a certificate has its corners and
middle asked: a feasible budget the descent search missed ends here at once instead of
after the split (or Z3) ran out of time.
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass
from fractions import Fraction

from kmr_dsl.verify import atom_groups, joint
from kmr_dsl.verify.atoms import NotAtomic, atomize, ival
from kmr_dsl.verify.numeric import Unevaluable

MAX_LEAVES = 64        # decoupled proofs one tree may hold
TIME_BUDGET_S = 30.0   # wall time one search may take (then nothing is concluded; Z3 is asked)
REAL_SPLITS = 12       # bisections of a real knob's interval before it counts as a point
HUNT_BOXES = 256       # boxes the witness search before the split may visit


@dataclass
class Witness:
    """A point box without a proof held a setting that meets the lines ({knob name: value})."""
    setting: dict


@dataclass
class Branch:
    symbol: object
    at: Fraction
    le: object                 # Branch | joint.Certificate
    ge: object


def _domain(kv):
    """(ascending values, None) for a finite free knob (a stepped one stays a symbolic
    Lattice: `int in [1 B, 1 GB]` is never listed), (None, (lo, hi)) for a real one."""
    if kv.finite:
        return (kv.values if kv.kind == "stepped" else sorted(kv.values)), None
    return None, (Fraction(kv.lo), Fraction(kv.hi))


def _sides(kv, lo: Fraction, hi: Fraction, at: Fraction):
    """((lo, at), (next, hi)) for a split of [lo, hi] at `at`, or None when it is no split."""
    values, real = _domain(kv)
    if real is not None:
        return ((lo, at), (at, hi)) if lo < at < hi else None
    if at not in values or not lo <= at < hi:
        return None
    return (lo, at), (values[values.index(at) + 1], hi)


def refute(lines: list, knobs, meets=None) -> Branch | joint.Certificate | Witness | None:
    """`meets(setting)` ({knob name: value}, exact) is asked at a box shrunk to a point that
    has no proof, for each setting of the case knobs: one that meets every line ends the
    search with a Witness (the caller re-checks it)."""
    at = atomize([ln.expr for ln in lines], knobs) if all(ln.expr is not None for ln in lines) else None
    if at is None or not at.free:
        return None
    box = {}
    for s in at.free:
        kv = knobs.by_symbol[s]
        values, real = _domain(kv)
        box[s] = (values[0], values[-1]) if real is None else real
    leaves = [0, time.monotonic() + TIME_BUDGET_S]
    # the lines' atoms and case substitutions are the same in every box (only the atoms'
    # ranges change): prepared once, not per box
    probe = _Probe(meets, at.cases, set())
    shape = atom_groups.prepare(lines, knobs)
    try:
        if shape is not None:
            try:
                _hunt(knobs, box, probe, shape)
            except (NotAtomic, Unevaluable, ZeroDivisionError, OverflowError, ValueError, TypeError):
                pass                  # floats out of range (1e600 bytes): no witness search, the split as before
        tree = _node(lines, knobs, box, leaves, {s: 0 for s in at.free}, probe, shape)
    except _Found as found:
        return Witness(found.setting)
    return tree if tree is not None and check(lines, knobs, tree) else None


@dataclass
class _Probe:
    meets: object                # setting -> bool (exact), or None
    cases: tuple                 # case knob symbols
    tried: set                   # points already asked


class _Found(Exception):
    def __init__(self, setting):
        self.setting = setting


def _try_point(knobs, point: dict, probe: _Probe):
    """Raise _Found when a case setting at `point` ({free symbol: value}) meets the lines."""
    key = tuple(sorted((str(s), v) for s, v in point.items()))
    if probe.meets is None or key in probe.tried:
        return
    probe.tried.add(key)
    named = {knobs.by_symbol[s].name: v for s, v in point.items()}
    options = [[(knobs.by_symbol[c].name, v) for v in knobs.by_symbol[c].values] for c in probe.cases]
    for combo in itertools.islice(itertools.product(*options), 1 << 8):
        setting = {**named, **dict(combo)}
        if probe.meets(setting):
            raise _Found(setting)


def _mid(kv, lo, hi):
    """The box side's middle: a value of a finite knob, the midpoint of a real one."""
    values, _ = _domain(kv)
    return (lo + hi) / 2 if values is None else values[(values.index(lo) + values.index(hi)) // 2]


def _try_box(knobs, box, probe: _Probe):
    """A box without a certificate may hold a setting that meets the lines (a feasible budget
    the descent search missed): its low corner, middle and high corner are asked (exactly,
    by the caller's `meets`) before it is split, so a witness ends the search at once
    instead of after the split has narrowed to a point."""
    _try_point(knobs, {s: lo for s, (lo, _) in box.items()}, probe)
    _try_point(knobs, {s: _mid(knobs.by_symbol[s], lo, hi) for s, (lo, hi) in box.items()}, probe)
    _try_point(knobs, {s: hi for s, (_, hi) in box.items()}, probe)


def _ranges(shape, atoms, k: int) -> list:
    """Each line's enclosure (lo, hi) at case setting k with every atom in its range over the
    box (each atom on its own: a relaxation, as in joint.py), in floats: it only steers the
    witness search (a box dropped by a rounding error is a witness missed, never a proof)."""
    _, consts, parts = shape.cases[k]
    env = {a: (float(atom.lo), float(atom.hi)) for a, (_, atom) in atoms.items()}
    out = []
    for i, c in enumerate(consts):
        lo = hi = float(c)
        for bags in parts.values():
            for t, m in bags[i].items():
                tlo, thi = ival(t, env)
                lo, hi = lo + m * tlo, hi + m * thi
        out.append((lo, hi))
    return out


def _hunt(knobs, root: dict, probe: _Probe, shape) -> None:
    """A witness search before any certificate is sought (a feasible budget the descent search
    missed should not wait for the split): best-first over boxes of the free knobs, a box
    dropped when at every case setting some line's lower bound over it is positive (the
    atoms' ranges, each on its own: float interval sums, no LP), the most promising
    first (least excess of the lines' upper bounds, each line scaled by its range over the
    whole domain), down to points, each asked with `probe.meets` (exact). At most
    HUNT_BOXES boxes: it proves nothing, and a budget that cannot be met costs only those."""
    if probe.meets is None:
        return
    scale: list = []
    heap, count = [], itertools.count()

    def push(box, depth):
        atoms = atom_groups.atoms_over(shape, box)
        if atoms is None:
            return
        keys = []
        for k in range(len(shape.cases)):
            rs = _ranges(shape, atoms, k)
            if any(lo > 1e-9 * sc for (lo, _), sc in zip(rs, scale)):
                continue                        # no setting of this box meets the lines at case k
            keys.append(sum(max(hi, 0) / sc for (_, hi), sc in zip(rs, scale)))
        if keys:
            heapq.heappush(heap, (float(min(keys)), next(count), box, depth))

    atoms = atom_groups.atoms_over(shape, root)
    if atoms is None:
        return
    spans = [[hi - lo for lo, hi in _ranges(shape, atoms, k)] for k in range(len(shape.cases))]
    scale[:] = [max(max(col), 1.0) for col in zip(*spans)]
    push(root, {s: 0 for s in root})
    seen = 0
    while heap and seen < HUNT_BOXES:
        _, _, box, depth = heapq.heappop(heap)
        seen += 1
        pick = _widest(knobs, box, depth)
        if pick is None:
            _try_point(knobs, {s: lo if knobs.by_symbol[s].finite else _mid(knobs.by_symbol[s], lo, hi)
                               for s, (lo, hi) in box.items()}, probe)
            continue
        lo, hi = box[pick]
        at = _mid(knobs.by_symbol[pick], lo, hi)
        deeper = {**depth, pick: depth[pick] + 1}
        for side in _sides(knobs.by_symbol[pick], lo, hi, at):
            push({**box, pick: side}, deeper)


def _widest(knobs, box, depth):
    """The free knob to split: the finite one with the most values left, else a real one not
    yet split REAL_SPLITS times; None for a point (or as fine as it gets)."""
    pick, width = None, 1
    for s, (lo, hi) in box.items():
        values, _ = _domain(knobs.by_symbol[s])
        if values is not None:
            n = values.index(hi) - values.index(lo) + 1
            if n > width:
                pick, width = s, n
        elif lo < hi and depth[s] < REAL_SPLITS and pick is None:
            pick = s
    return pick


def _node(lines, knobs, box, leaves, depth, probe: _Probe, shape=None):
    # unchecked here: refute checks the whole tree (every leaf re-derived) before returning it
    cert = joint.refute(lines, knobs, box, shape, checked=False)
    if cert is not None:
        leaves[0] += 1
        return cert
    _try_box(knobs, box, probe)
    if leaves[0] >= MAX_LEAVES or time.monotonic() > leaves[1]:
        return None
    pick = _widest(knobs, box, depth)
    if pick is None:
        return None                  # a point (or as fine as it gets) with no proof: maybe met (asked above)
    lo, hi = box[pick]
    at = _mid(knobs.by_symbol[pick], lo, hi)
    (llo, lhi), (glo, ghi) = _sides(knobs.by_symbol[pick], lo, hi, at)
    deeper = {**depth, pick: depth[pick] + 1}
    le = _node(lines, knobs, {**box, pick: (llo, lhi)}, leaves, deeper, probe, shape)
    if le is None:
        return None
    ge = _node(lines, knobs, {**box, pick: (glo, ghi)}, leaves, deeper, probe, shape)
    if ge is None:
        return None
    return Branch(pick, at, le, ge)


def check(lines: list, knobs, tree) -> bool:
    at = atomize([ln.expr for ln in lines], knobs) if all(ln.expr is not None for ln in lines) else None
    if at is None:
        return False
    box = {}
    for s in at.free:
        values, real = _domain(knobs.by_symbol[s])
        box[s] = (values[0], values[-1]) if real is None else real
    # the lines' shape re-derived here from the lines (not the search's), once for every leaf
    shape = atom_groups.prepare(lines, knobs)
    if shape is None:
        return False
    try:
        return _check(lines, knobs, tree, box, shape)
    except (IndexError, TypeError, ValueError, RecursionError):
        return False


def _check(lines, knobs, node, box, shape) -> bool:
    if isinstance(node, joint.Certificate):
        return joint.check(lines, knobs, node, box, shape)
    if not isinstance(node, Branch) or node.symbol not in box:
        return False
    lo, hi = box[node.symbol]
    sides = _sides(knobs.by_symbol[node.symbol], lo, hi, Fraction(node.at))
    if sides is None:
        return False
    left, right = sides
    return (_check(lines, knobs, node.le, {**box, node.symbol: left}, shape)
            and _check(lines, knobs, node.ge, {**box, node.symbol: right}, shape))


def leaves(tree) -> list:
    if isinstance(tree, Branch):
        return leaves(tree.le) + leaves(tree.ge)
    return [tree]


def lines_used(tree) -> list[int]:
    return sorted({i for cert in leaves(tree) for i in cert.lines_used()})


def to_json(lines: list, knobs, tree) -> dict:
    def node(t):
        if isinstance(t, Branch):
            kv = knobs.by_symbol[t.symbol]
            return {"split": kv.name, "at": str(t.at), "le": node(t.le), "ge": node(t.ge)}
        return t.to_json(lines)
    found = leaves(tree)
    used = lines_used(tree)
    shown = "; ".join(f"`{lines[i].text}`" for i in used)
    summary = (f"certificate (checked in exact arithmetic): {shown} cannot hold together; the counts the lines "
               f"read move together with the knobs they share, so the knobs' domain is split into {len(found)} "
               f"box(es), in each of which the counts' proved ranges give a decoupled certificate "
               f"(`--format json` gives the tree)")
    return {"kind": "box-split", "checked": True, "lines": [ln.text for ln in lines], "leaves": len(found),
            "tree": node(tree), "summary": summary,
            "note": "each split sends a free knob's values up to `at` to `le` and the rest to `ge`; each leaf is a "
                    "decoupled certificate over its box, every count's range re-proved there; checked in exact "
                    "rational arithmetic"}


__all__ = ["Branch", "MAX_LEAVES", "Witness", "check", "leaves", "lines_used", "refute", "to_json"]
