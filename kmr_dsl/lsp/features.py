"""Hover, completion and go-to-definition over an `Analysis` snapshot.

Contract: pure functions of (analysis, position[, full program]); torch- and
pygls-free; they never raise on a malformed document (the server wraps them anyway).
The texts shown are the declarations' own source (a rule's contract is exactly its
`requires`/`effect` clauses as written), so what the editor shows cannot drift from
what the checker and the verifier read. A meter's predicted value comes from the
verifier's cost model (`kmr_dsl.verify.predict`) over a program checked *with* model
facts; the server passes that program in once its background check has produced one.
"""

from __future__ import annotations

from dataclasses import dataclass

from kmr_dsl import ast
from kmr_dsl.lsp.analysis import KINDS, Analysis, Symbol

# completion item kinds (protocol numbers, so this module needs no lsprotocol)
FUNCTION, VARIABLE, FIELD, ENUM_MEMBER, CONSTANT, MODULE, KEYWORD, CLASS, PROPERTY = 3, 6, 5, 20, 21, 9, 14, 7, 10


@dataclass(frozen=True)
class Item:
    label: str
    kind: int
    detail: str = ""
    insert: str | None = None


# ---------------------------------------------------------------- hover

def hover(an: Analysis, line: int, char: int, full=None) -> str | None:
    """Markdown for the symbol under the cursor, or None."""
    found = an.word_at(line, char)
    if found is None:
        return None
    word = found[0]
    sym = an.symbols.get(word)
    if sym is None:
        return _hover_member(an, line, char, word)
    src = an.source_of(sym.decl.span)
    head = f"```kmr\n{src}\n```"
    if isinstance(sym.decl, ast.KnobDecl):
        return head + _knob_note(an, word)
    if isinstance(sym.decl, ast.RuleDecl):
        return head + f"\n\n(rule from `{_short(sym.file)}`)"
    if isinstance(sym.decl, (ast.BuiltinMeter, ast.DerivedMeter)):
        return head + _prediction_note(an, word, line, full)
    return head


def _knob_note(an: Analysis, name: str) -> str:
    knob = an.program.knobs.get(name) if an.program is not None else None
    if knob is None:
        return ""
    vals = knob.values()
    dom = (f"{len(vals)} values" if vals is not None else "continuous")
    return f"\n\ndefault `{knob.default_value()}` · {knob.type}, {dom}"


def _prediction_note(an: Analysis, meter: str, line: int, full) -> str:
    if full is None or not full.pipelines:
        return "\n\n(predicted value: once the model's facts are loaded)"
    pipeline = _pipeline_at(an, line, full)
    try:
        from kmr_dsl.verify import predict

        result = predict(full, pipeline).get(meter)
        base = predict(full, pipeline, baseline=True).get(meter)
    except Exception as exc:  # noqa: BLE001 - a prediction failure is shown, never raised
        return f"\n\n(no prediction: {type(exc).__name__})"
    if result is None:
        return "\n\n(empirical: measured by `kmr run`)"
    return (f"\n\npredicted at the default setting of `{pipeline}`: **{_num(result)}** "
            f"(baseline {_num(base)})")


def _pipeline_at(an: Analysis, line: int, full) -> str:
    for decl in an.closure.main.program.decls:
        if isinstance(decl, ast.PipelineDecl) and decl.span.line <= line + 1 <= decl.span.end_line:
            if decl.name in full.pipelines:
                return decl.name
    return next(iter(full.pipelines))


def _hover_member(an: Analysis, line: int, char: int, word: str) -> str | None:
    """An argument name or enum member inside a rule call: the parameter it belongs to."""
    rule = an.rule(an.enclosing_call(line, char) or "")
    if rule is None:
        return None
    for p in getattr(rule, "params", ()):
        members = getattr(p, "members", ()) or getattr(getattr(p, "type", None), "members", ())
        if p.name == word or word in members:
            return f"parameter of `{rule.name}`:\n```kmr\n{an.source_of(p.span)}\n```"
    return None


def _num(v) -> str:
    if v is None:
        return "?"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4g}"


def _short(label: str) -> str:
    return label.replace("\\", "/").split("/")[-1]


# ---------------------------------------------------------------- completion

def complete(an: Analysis, line: int, char: int, layer_names: tuple[str, ...] = ()) -> list[Item]:
    """Candidates at the cursor: in a string, layer names; in a rule call, its
    parameters and enum members first; everywhere, rules, knobs, meters, data, kinds."""
    if an.in_string(line, char):
        return [Item(n, FIELD, "layer") for n in layer_names]
    items: list[Item] = []
    callee = an.enclosing_call(line, char)
    rule = an.rule(callee) if callee else None
    if rule is not None:
        items += _rule_args(rule)
    if callee == "layers":
        items += [Item(k, CLASS, "layer kind") for k in KINDS]
    for name, sym in sorted(an.symbols.items()):
        items.append(_item(sym))
        if isinstance(sym.decl, ast.KnobDecl) and isinstance(sym.decl.type, ast.EnumType):
            items += [Item(m, ENUM_MEMBER, f"member of {name}") for m in sym.decl.type.members]
    seen, out = set(), []
    for it in items:
        if it.label not in seen:
            seen.add(it.label)
            out.append(it)
    return out


def _rule_args(rule) -> list[Item]:
    out = []
    for p in rule.params:
        detail = getattr(p, "type", "")
        if not isinstance(detail, str):
            detail = type(detail).__name__
        out.append(Item(p.name, PROPERTY, f"{rule.name}: {detail}", f"{p.name} = "))
        members = getattr(p, "members", ()) or getattr(getattr(p, "type", None), "members", ())
        out += [Item(m, ENUM_MEMBER, f"{rule.name}.{p.name}") for m in members]
    return out


_KIND = {ast.RuleDecl: FUNCTION, ast.KnobDecl: VARIABLE, ast.BuiltinMeter: PROPERTY,
         ast.DerivedMeter: PROPERTY, ast.ModelDecl: MODULE, ast.DataDecl: CONSTANT,
         ast.PipelineDecl: CLASS, ast.PropertyDecl: CLASS}


def _item(sym: Symbol) -> Item:
    kind = _KIND.get(type(sym.decl), VARIABLE)
    label = {"RuleDecl": "rule", "KnobDecl": "knob", "BuiltinMeter": "meter", "DerivedMeter": "meter",
             "ModelDecl": "model", "DataDecl": "data", "PipelineDecl": "pipeline",
             "PropertyDecl": "property"}.get(sym.kind, sym.kind)
    return Item(sym.name, kind, f"{label} ({_short(sym.file)})")


# ---------------------------------------------------------------- definition

def definition(an: Analysis, line: int, char: int):
    """(file label, Span) of what the cursor names: a declaration or an imported file."""
    target = an.import_at(line, char)
    if target is not None:
        from kmr_dsl.diagnostics import Span

        return target, Span(target, 1, 1, 1, 1)
    found = an.word_at(line, char)
    if found is None:
        return None
    sym = an.symbols.get(found[0])
    if sym is None:
        return None
    return sym.file, an.name_span(sym)
