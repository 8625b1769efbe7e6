"""Knob settings from the command line: `--set sparsity=0.5 --set bits=8`.

Contract: `parse_settings(program, pipeline, items, span)` starts from the defaults of
every knob instance the pipeline uses and applies each `KNOB=VALUE`; a family name sets
every instance (`--set s=0.3`), an instance name one (`--set 's[fc1]=0.3'`). Values are
parsed by the knob's type and must lie in its domain; anything else raises KmrError
KMR503 naming the knob and its domain. No torch here.
"""

from __future__ import annotations

from kmr_dsl.core.program import CheckedProgram, Knob, Pipeline
from kmr_dsl.diagnostics import KmrError, Span, error


def describe_domain(knob: Knob) -> str:
    if knob.type == "bool":
        return "{false, true}"
    if knob.type == "enum":
        return "{" + ", ".join(knob.members) + "}"
    d = knob.domain
    if d.values is not None:
        return "{" + ", ".join(str(v) for v in d.values) + "}"
    text = f"{'[' if d.lo_closed else '('}{d.lo}, {d.hi}{']' if d.hi_closed else ')'}"
    return text + (f" step {d.step}" if d.step is not None else "")


def parse_value(knob: Knob, text: str, span: Span):
    text = text.strip()
    bad = KmrError(error("KMR503", span, f"`{text}` is not a value of knob `{knob.name}`",
                         f"{knob.name} : {knob.type} in {describe_domain(knob)}",
                         hint=f"pass a value in {describe_domain(knob)}"))
    if knob.type == "bool":
        if text not in ("true", "false"):
            raise bad
        return text == "true"
    if knob.type == "enum":
        if text not in knob.members:
            raise bad
        return text
    try:
        value = int(text) if knob.type == "int" else float(text)
    except ValueError:
        raise bad from None
    if knob.domain is not None and not knob.domain.contains(value):
        raise bad
    return value


def parse_settings(program: CheckedProgram, pipeline: Pipeline, items: list[str], span: Span) -> dict:
    setting = program.default_setting(pipeline)
    instances = dict(program.knob_instances(pipeline))
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            raise KmrError(error("KMR503", span, f"`{item}` is not KNOB=VALUE", hint="write --set knob=value"))
        if name in instances:
            setting[name] = parse_value(instances[name], text, span)
        elif name in program.knobs and program.knobs[name].is_family and name in pipeline.knobs:
            knob = program.knobs[name]
            value = parse_value(knob, text, span)
            for inst in knob.instances():
                setting[inst] = value
        else:
            known = ", ".join(sorted(instances)) or "(none)"
            raise KmrError(error("KMR503", span, f"pipeline `{pipeline.name}` has no knob `{name}`",
                                 f"its knobs: {known}", hint="name one of the pipeline's knobs"))
    return setting


def format_setting(setting: dict) -> str:
    def show(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)
    return ", ".join(f"{k} = {show(v)}" for k, v in setting.items()) or "(no knobs)"
