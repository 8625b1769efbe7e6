"""Operators of the expression language: their operand types and units.

Contract: `Operators` is mixed into `kmr_dsl.check.exprs.Lowerer` (it relies on its
`cx`, `lower` and `show`). Arithmetic needs numbers; `+`, `-`, comparisons and
min/max need one dimension on both sides (KMR212 otherwise, with a "write a unit" hint
when one side is a bare number); `*` and `/` combine dimensions (kmr_dsl.units).
`and`/`or`/`not` need bools, `<`/`<=`/`>`/`>=` numbers, `==`/`!=` also compare bools,
strings and enum members; an `if` needs a bool condition and branches of one type.
Other clashes are KMR219. An enum member written bare beside an enum knob
(`mode == fast`) is an `EnumLit` even though no declaration names it.
"""

from __future__ import annotations

from kmr_dsl import ast, units
from kmr_dsl.core import program as P
from kmr_dsl.check import types as T
from kmr_dsl.diagnostics import error


def _dim_words(dim) -> str:
    return "a plain number" if dim == units.NUMBER else units.dim_label(dim)


def _bare_number(node) -> bool:
    while isinstance(node, ast.Unary) and node.op == "-":
        node = node.operand
    return isinstance(node, ast.Number)


class Operators:
    def _Unary(self, e, scope):
        ir, ty = self.lower(e.operand, scope)
        want = "bool" if e.op == "not" else "num"
        if not ty.is_error and ty.kind != want:
            self.cx.report(error("KMR219", e.span, f"`{e.op}` needs {'a bool' if want == 'bool' else 'a number'}, "
                                 f"but {self.show(e.operand)} is {T.describe(ty)}"))
            ty = T.ERROR
        if e.op == "-" and isinstance(ir, P.Const) and ty.kind == "num":
            return P.Const(-ir.value, ir.dim, e.span), ty      # `-0.5` is a literal, not an operation
        return P.Op("not" if e.op == "not" else "neg", (ir,), e.span), ty

    def _Binary(self, e, scope):
        lir, lt = self.lower(e.left, scope)
        rir, rt = self.lower(e.right, scope)
        node = P.Op(e.op, (lir, rir), e.span)
        if lt.is_error or rt.is_error:
            return node, T.ERROR
        if e.op in ("and", "or"):
            for t, side in ((lt, e.left), (rt, e.right)):
                if t.kind != "bool":
                    self.cx.report(error("KMR219", side.span, f"`{e.op}` needs bools, but {self.show(side)} is {T.describe(t)}"))
                    return node, T.ERROR
            return node, T.BOOL
        for t, side in ((lt, e.left), (rt, e.right)):
            if t.kind != "num":
                self.cx.report(error("KMR219", side.span, f"`{e.op}` needs numbers, but {self.show(side)} is {T.describe(t)}"))
                return node, T.ERROR
        if e.op in ("+", "-"):
            return node, self._same_num(lt, rt, e.left, e.right, e.span, e.op)
        if e.op == "*":
            return node, T.num(units.mul(lt.dim, rt.dim), lt.integral and rt.integral)
        return node, T.num(units.div(lt.dim, rt.dim))

    def _same_num(self, lt, rt, lnode, rnode, span, op) -> T.Ty:
        """Both sides numbers of one dimension (sums, comparisons, min/max)."""
        if lt.is_error or rt.is_error:
            return T.ERROR
        for t, side in ((lt, lnode), (rt, rnode)):
            if t.kind != "num":
                self.cx.report(error("KMR219", side.span, f"`{op}` needs numbers, but {self.show(side)} is {T.describe(t)}"))
                return T.ERROR
        if lt.dim == rt.dim:
            return T.num(lt.dim, lt.integral and rt.integral)
        self.report_units(lt, rt, lnode, rnode, span, op)
        return T.ERROR

    def report_units(self, lt, rt, lnode, rnode, span, op) -> None:
        verb = "compare" if op in P.COMPARISONS else "combine"
        for t, other_t, node in ((lt, rt, lnode), (rt, lt, rnode)):
            if t.dim == units.NUMBER and _bare_number(node) and units.example_unit(other_t.dim):
                value = T.literal(node)[0] if isinstance(node, ast.Number) else None
                self.cx.report(error(
                    "KMR212", span, f"cannot {verb} {_dim_words(other_t.dim)} with the plain number {self.show(node)}",
                    f"the other side is {_dim_words(other_t.dim)}; a number without a unit is dimensionless",
                    hint=f"write the unit, e.g. {units.suggest(value, other_t.dim)}"))
                return
        self.cx.report(error(
            "KMR212", span, f"cannot {verb} {_dim_words(lt.dim)} with {_dim_words(rt.dim)}",
            f"{self.show(lnode)} is {_dim_words(lt.dim)}", f"{self.show(rnode)} is {_dim_words(rt.dim)}",
            hint="both sides of a comparison or sum need the same dimension (bytes, time or a plain number)"))

    def _Compare(self, e, scope):
        op, lir, rir, ty = self.comparison(e, scope)
        return P.Op(op, (lir, rir), e.span), ty

    def comparison(self, e: ast.Compare, scope):
        """(op, left IR, right IR, BOOL or ERROR) — budgets keep the two sides apart."""
        lir, lt = self._side(e.left, e.right, scope)
        rir, rt = self._side(e.right, e.left, scope, lt)
        if lt.is_error or rt.is_error:
            return e.op, lir, rir, T.ERROR
        if lt.kind == "num" and rt.kind == "num":
            return e.op, lir, rir, (T.BOOL if not self._same_num(lt, rt, e.left, e.right, e.span, e.op).is_error else T.ERROR)
        if e.op in ("==", "!=") and lt.kind == rt.kind and lt.kind in ("bool", "str"):
            return e.op, lir, rir, T.BOOL
        if e.op in ("==", "!=") and lt.kind == rt.kind == "enum":
            if set(lt.members) & set(rt.members):
                return e.op, lir, rir, T.BOOL
        if e.op in ("==", "!=") and {lt.kind, rt.kind} == {"data", "enum"} and \
                (lt if lt.kind == "enum" else rt).members == (P.NO_DATA,):
            return e.op, lir, rir, T.BOOL       # `calibration != none`: was the data given
        what = "order" if e.op not in ("==", "!=") else "compare"
        self.cx.report(error("KMR219", e.span, f"cannot {what} {T.describe(lt)} with {T.describe(rt)}",
                             f"{self.show(e.left)} is {T.describe(lt)}", f"{self.show(e.right)} is {T.describe(rt)}",
                             hint="`<`, `<=`, `>`, `>=` compare numbers; `==` and `!=` also compare bools and enum members"))
        return e.op, lir, rir, T.ERROR

    def _side(self, node, other, scope, other_ty: T.Ty | None = None):
        """An enum member written bare beside an enum knob (`mode == fast`) is an EnumLit."""
        if scope.kind == "pipeline" and isinstance(node, ast.Name) and self.cx.symbols.get(node.id) is None:
            ty = other_ty
            if ty is None and isinstance(other, ast.Name):
                knob = self.cx.knobs.get(other.id)
                ty = T.knob_ty(knob) if knob is not None and knob.type == "enum" else None
            if ty is not None and ty.kind == "enum" and node.id in ty.members:
                return P.EnumLit(node.id, node.span), ty
        return self.lower(node, scope)

    def _IfExpr(self, e, scope):
        cir, ct = self.lower(e.cond, scope)
        tir, tt = self.lower(e.then, scope)
        oir, ot = self.lower(e.orelse, scope)
        node = P.If(cir, tir, oir, e.span)
        if ct.is_error or tt.is_error or ot.is_error:
            return node, T.ERROR
        if ct.kind != "bool":
            self.cx.report(error("KMR219", e.cond.span, f"the condition of `if` must be a bool, not {T.describe(ct)}"))
            return node, T.ERROR
        if tt.kind == ot.kind == "num":
            ty = self._same_num(tt, ot, e.then, e.orelse, e.span, "if")
            return node, ty
        if tt.kind == ot.kind and tt.kind in ("bool", "str"):
            return node, tt
        if tt.kind == ot.kind == "enum":
            return node, T.enum(dict.fromkeys(tt.members + ot.members))
        self.cx.report(error("KMR219", e.span, f"the branches of `if` differ: {T.describe(tt)} and {T.describe(ot)}"))
        return node, T.ERROR


__all__ = ["Operators"]
