"""Lines infeasible only together through a many-knob group: a decoupled Lagrangian
certificate, proposed in floats and checked in exact rational arithmetic.

Contract: `refute(lines, knobs)` returns a `Certificate` proving that no setting meets
every line (`g_i <= 0` / `g_i < 0`), or None (nothing concluded). `check(lines, knobs,
cert)` re-derives everything the certificate rests on from the lines alone and returns
the certified positive minimum, or None when the certificate does not hold.

The argument (atoms.py gives the shape). With the lines over atoms, for each setting c
of the case knobs each line is `const_i(c) + sum over terms`; terms that share an atom
form a *group* (one per layer shape: an atom is a layer's count, equal layers share
it). For weights y >= 0, any real setting x has

    sum_i y_i g_i(x) = y.const(c) + sum over groups T of psi_T(atoms of T at x),
                    psi_T = sum_i y_i (line i's terms in T)

and each atom at x lies in its proved range. So if, for every c, y.const(c) plus the
sum over groups of a lower bound of psi_T over its atom's range is positive, the lines
cannot hold together (a setting meeting them makes the sum <= 0). This drops the
coupling between layers (each count may move on its own) but keeps the coupling between
lines (one count read by `size` and `nonzero`), which is what makes `size` small and
`nonzero` large at once impossible.

Finding y: floats only — each group's parts sampled along its atom's range, and y
maximising the decoupled bound by a cutting-plane LP (Kelley; the bound is concave in
y). Proving: each group's atom range is split into boxes (best-first, exact interval
evaluation: atoms.ival) until its lower bound is within a share of the slack; the
certificate lists y and every box. `check` re-atomizes the lines (the atom ranges
re-proved), re-evaluates every box's exact enclosure, checks the boxes cover each atom's
range, and sums. Nothing is exponential in the knobs: the work is (case settings) x
(groups) x (boxes), each group one atom.

The lines' constants and groups per case setting, and each atom's range over a box:
atom_groups.py; the float proposal of y: multipliers.py.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from kmr_dsl.verify.algebra import frac
from kmr_dsl.verify.atom_groups import Shape, atoms_over, prepare
from kmr_dsl.verify.atoms import NotAtomic, ival
from kmr_dsl.verify.multipliers import propose
from kmr_dsl.verify.numeric import Unevaluable

MAX_BOXES = 400      # boxes one group's lower bound may use


@dataclass
class Certificate:
    multipliers: list[Fraction] | None   # y, one per line, for the "lagrangian" cases
    bound: Fraction | None               # their certified least value of sum y_i g_i (> 0)
    proofs: list                         # per case setting: ("split", [(lo, hi, line)]) |
                                         # ("lagrangian", {atom index: [(lo, hi), ...]}) | ("constant", line)
    cases: list[dict]                    # the case settings, {knob name: value}
    atoms: int
    free: int                            # free knobs the atoms read

    def lines_used(self) -> list[int]:
        used = {i for i, y in enumerate(self.multipliers or ()) if y}
        for kind, what in self.proofs:
            if kind == "split":
                used |= {i for _, _, i in what}
            elif kind == "constant":
                used.add(what)
        return sorted(used)

    def to_json(self, lines) -> dict:
        return {"kind": "decoupled", "checked": True, "lines": [ln.text for ln in lines],
                "multipliers": None if self.multipliers is None else [str(v) for v in self.multipliers],
                "bound": None if self.bound is None else str(self.bound),
                "cases": [{"setting": c, "proof": kind, "pieces": len(what) if kind == "split" else
                           sum(len(b) for b in what.values()) if kind == "lagrangian" else 1}
                          for c, (kind, what) in zip(self.cases, self.proofs)],
                "atoms": self.atoms, "summary": self.summary(lines),
                "note": "the lines read their free knobs only through per-layer counts (atoms) whose ranges are "
                        "proved by monotonicity; per setting of the case knobs, either each count's range is split "
                        "into pieces on each of which one line's exact minimum is positive, or sum of multiplier x "
                        "(left - right) over the lines, each count ranging on its own, is at least `bound` > 0; "
                        "checked in exact rational arithmetic"}

    def summary(self, lines) -> str:
        def at(idx):
            shown = [", ".join(f"{k} = {v}" for k, v in self.cases[k].items()) for k in idx]
            return "; ".join(x for x in shown if x) or "every setting"
        parts = []
        split = [k for k, (kind, _) in enumerate(self.proofs) if kind != "lagrangian"]
        lagr = [k for k, (kind, _) in enumerate(self.proofs) if kind == "lagrangian"]
        if split:
            pieces = sum(len(w) if kind == "split" else 1 for kind, w in (self.proofs[k] for k in split))
            parts.append(f"at {at(split)}: the count's range splits into {pieces} piece(s), on each of which one "
                         "line's exact minimum is positive")
        if lagr:
            weights = " + ".join(f"{float(y):.4g} x (`{ln.text}`)" for y, ln in zip(self.multipliers, lines) if y)
            parts.append(f"at {at(lagr)}: {weights}, each line as left - right and each count ranging on its own, "
                         f"is at least {float(self.bound):.4g} > 0")
        return (f"certificate (checked in exact arithmetic): the lines read {self.free} knobs only through "
                f"{self.atoms} per-layer count(s), each proved monotone in every knob; " + "; ".join(parts))


def _decoupled(lines, knobs, box=None, shape=None):
    if shape is None:
        shape = prepare(lines, knobs)
        if shape is None:
            return None
    atoms = atoms_over(shape, box)
    if atoms is None:
        return None
    return shape, atoms, shape.cases


def _psi_lower(bags: list, y: list[Fraction], a, lo: Fraction, hi: Fraction) -> Fraction:
    """An exact lower bound of sum_i y_i (line i's terms) with the atom in [lo, hi]."""
    env = {a: (lo, hi)}
    total = Fraction(0)
    for yi, bag in zip(y, bags):
        if yi:
            for t, m in bag.items():
                tlo, thi = ival(t, env)
                total += yi * m * tlo          # y_i, m > 0: the low end
    return total


def _group_bound(parts: list, y: list[Fraction], a, atom, target: Fraction):
    """Boxes covering the atom's range and their least exact lower bound of sum y_i part_i,
    refined best-first until that bound reaches `target` (or MAX_BOXES)."""
    step = 1 if atom.integer else 0

    def lower(lo, hi):
        return _psi_lower(parts, y, a, lo, hi)

    heap = [(lower(atom.lo, atom.hi), atom.lo, atom.hi)]
    done = []
    while heap and heap[0][0] < target and len(heap) + len(done) < MAX_BOXES:
        lb, lo, hi = heapq.heappop(heap)
        if hi - lo <= step:
            if lo == hi or not step:
                done.append((lb, lo, hi))
                continue
        mid = (lo + hi) / 2
        if step:
            mid = Fraction(math.floor(mid))
            left, right = (lo, mid), (mid + 1, hi)
        else:
            left, right = (lo, mid), (mid, hi)
        for b in (left, right):
            heapq.heappush(heap, (lower(*b), *b))
    boxes = sorted([(lo, hi) for _, lo, hi in heap + done])
    return min(lb for lb, _, _ in heap + done), boxes


def _line_lower(consts, bags, a, lo, hi, i) -> Fraction:
    """An exact lower bound of line i with the atom in [lo, hi]."""
    env = {a: (lo, hi)}
    return consts[i] + sum((m * ival(t, env)[0] for t, m in bags[i].items()), Fraction(0))


def _split_case(consts, parts, atoms):
    """A proof for one case setting whose terms read one atom: its range cut into pieces,
    each with a line whose exact lower bound there is positive (None past MAX_BOXES)."""
    if not parts:
        bad = [i for i, k in enumerate(consts) if k > 0]
        return ("constant", bad[0]) if bad else None
    if len(parts) != 1:
        return None
    (a, bags), = parts.items()
    atom = atoms[a][1]
    stack, out = [(atom.lo, atom.hi)], []
    while stack:
        lo, hi = stack.pop()
        bad = next((i for i in range(len(consts)) if _line_lower(consts, bags, a, lo, hi, i) > 0), None)
        if bad is not None:
            out.append((lo, hi, bad))
            continue
        if lo == hi or (not atom.integer and hi - lo < (atom.hi - atom.lo) / 2 ** 40) \
                or len(out) + len(stack) >= MAX_BOXES:
            return None
        if atom.integer:
            mid = Fraction(math.floor((lo + hi) / 2))
            stack += [(mid + 1, hi), (lo, mid)]
        else:
            mid = (lo + hi) / 2
            stack += [(mid, hi), (lo, mid)]
    return ("split", sorted(out))


def refute(lines: list, knobs, box: dict | None = None, shape: Shape | None = None,
           checked: bool = True) -> Certificate | None:
    """`box` narrows the free knobs ({symbol: (lo, hi)}): the certificate then proves that no
    setting inside it meets the lines (atoms.atomize; boxsplit.py covers the domain with such boxes).
    `shape`: the lines' `prepare`, kept across boxes. `checked=False` skips the final `check`,
    for a caller that checks the whole proof itself (boxsplit.refute checks its tree)."""
    try:
        got = _decoupled(lines, knobs, box, shape)
        if got is None:
            return None
        shape, atoms, cases = got
        at = shape.at
        proofs = [_split_case(consts, parts, atoms) for _, consts, parts in cases]
        rest = [k for k, p in enumerate(proofs) if p is None]
        y, total = None, None
        if rest:
            tables: dict = {}
            proposed = propose(shape, atoms, rest, len(lines), tables)
            if proposed is None:
                return None
            y_norm, scale = proposed
            y = [Fraction(float(v)).limit_denominator(10 ** 6) / Fraction(float(s)).limit_denominator(10 ** 6)
                 for v, s in zip(y_norm, scale)]
            y = [v if v > 0 else Fraction(0) for v in y]
            if not any(y):
                return None
        for k in rest:
            _, consts, parts = cases[k]
            base = sum((yi * c for yi, c in zip(y, consts)), Fraction(0))
            # each group's share of the room left: its bound may fall that far below its
            # float minimum at the sampled points
            yf = np.array([float(v) for v in y])
            approx = {a: float((tables[(k, a)] @ yf).min()) for a in parts}
            room = float(base) + sum(approx.values())
            if not room > 0:
                return None
            share = room / (2 * max(1, len(parts)))
            per, bound = {}, base
            for a, ps in parts.items():
                j, atom = atoms[a]
                lb, bx = _group_bound(ps, y, a, atom, Fraction(approx[a] - share))
                per[j] = bx
                bound += lb
            if bound <= 0:
                return None
            proofs[k] = ("lagrangian", per)
            total = bound if total is None else min(total, bound)
        names = [{knobs.by_symbol[s].name: knobs.by_symbol[s].to_user(_value(knobs.by_symbol[s], v))
                  for s, v in c.items()} for c, _, _ in cases]
        cert = Certificate(y, total, proofs, names, len(at.atoms), len(at.free))
        return cert if not checked or check(lines, knobs, cert, box) else None
    except (NotAtomic, Unevaluable, ZeroDivisionError, OverflowError, RecursionError, ValueError):
        return None


def _value(kv, v):
    if kv.kind == "bool":
        return bool(v)
    return int(v) if kv.kind == "enum" else frac(v)


def check(lines: list, knobs, cert: Certificate, box: dict | None = None, shape: Shape | None = None) -> bool:
    """Does the certificate prove that no setting meets every line? Everything is
    re-derived from the lines: the atoms and their ranges re-proved, every piece's and
    box's exact enclosure re-evaluated, each atom's range checked to be covered, and the
    Lagrangian part's sum at least the bound it claims (and > 0). `shape`: the lines'
    `prepare`, made by the caller from the same lines (boxsplit.check, once for every leaf)."""
    y = cert.multipliers
    if y is not None and (len(y) != len(lines) or any(v < 0 for v in y) or not any(y)):
        return False
    try:
        got = _decoupled(lines, knobs, box, shape)
        if got is None or len(got[2]) != len(cert.proofs):
            return False
        _, atoms, cases = got
        total = None
        for (c, consts, parts), (kind, what) in zip(cases, cert.proofs):
            if kind == "constant":
                if parts or not (0 <= what < len(lines) and consts[what] > 0):
                    return False
                continue
            if kind == "split":
                if len(parts) != 1:
                    return False
                (a, bags), = parts.items()
                if not _covers([(lo, hi) for lo, hi, _ in sorted(what)], atoms[a][1]):
                    return False
                if not all(0 <= i < len(lines) and _line_lower(consts, bags, a, lo, hi, i) > 0 for lo, hi, i in what):
                    return False
                continue
            if kind != "lagrangian" or y is None or set(what) != {atoms[a][0] for a in parts}:
                return False
            bound = sum((yi * k for yi, k in zip(y, consts)), Fraction(0))
            for a, ps in parts.items():
                j, atom = atoms[a]
                bx = sorted(what[j])
                if not _covers(bx, atom):
                    return False
                bound += min(_psi_lower(ps, y, a, lo, hi) for lo, hi in bx)
            total = bound if total is None else min(total, bound)
        if total is not None and (total <= 0 or cert.bound is None or total < cert.bound):
            return False                              # not positive, or less than it claims
        return True
    except (NotAtomic, Unevaluable, ZeroDivisionError, OverflowError, RecursionError, TypeError, ValueError):
        return False


def _covers(boxes: list, atom) -> bool:
    """Do the boxes cover the atom's range (its whole values only, for a whole atom)?"""
    if not boxes or boxes[0][0] > atom.lo or boxes[-1][1] < atom.hi:
        return False
    reach = boxes[0][1]
    for lo, hi in boxes[1:]:
        if lo > reach + (1 if atom.integer else 0) or (atom.integer and lo != int(lo)):
            return False
        reach = max(reach, hi)
    return all(lo <= hi for lo, hi in boxes)


__all__ = ["Certificate", "check", "refute"]
