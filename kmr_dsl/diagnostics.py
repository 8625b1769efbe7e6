"""One diagnostic type for every stage, the code registry, and its renderers.

Contract: every user-facing problem is a `Diagnostic` with a code from `CODES`, a
severity, a span (file, line, column; 1-based) and notes. Stages *collect*
diagnostics and return them; nothing here raises at the user. `KmrError` exists only
to carry one diagnostic out of deep code (a loader, an impl) to the stage that
collects it.

Codes are grouped by stage: 1xx syntax, 2xx names/types/units, 3xx proofs, 4xx
runtime, 5xx CLI and I/O. `docs/errors.md` documents each one (a test enforces it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Span:
    """A source region: 1-based line and column of its start and end (end exclusive)."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    @staticmethod
    def unknown(file: str = "<unknown>") -> "Span":
        """A whole-file (or command-line) location: rendered as just the file name."""
        return Span(file, 0, 0, 0, 0)

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    severity: Severity
    span: Span
    message: str
    notes: tuple[str, ...] = ()
    hint: str | None = None

    def to_json(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "file": self.span.file,
            "line": self.span.line,
            "col": self.span.col,
            "end_line": self.span.end_line,
            "end_col": self.span.end_col,
            "message": self.message,
            "notes": list(self.notes),
            "hint": self.hint,
        }


def error(code: str, span: Span, message: str, *notes: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(code, Severity.ERROR, span, message, tuple(notes), hint or default_hint(code))


def warning(code: str, span: Span, message: str, *notes: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(code, Severity.WARNING, span, message, tuple(notes), hint or default_hint(code))


class KmrError(Exception):
    """Carries one diagnostic from deep code to the stage that collects it."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


# code -> (title, default hint). The title is the one-line meaning documented in
# docs/errors.md; the hint is used when a stage gives none of its own.
CODES: dict[str, tuple[str, str]] = {
    # 1xx syntax
    "KMR101": ("syntax error", "check the line against the grammar in docs/language.md"),
    "KMR102": ("unclosed bracket or brace", "add the missing closing `}`, `)` or `]`"),
    "KMR103": ("unterminated string", "close the string with `\"` on the same line"),
    "KMR104": ("unexpected token", "remove the stray token or add the missing operator"),
    "KMR105": ("missing operand", "write an expression on both sides of the operator"),
    "KMR106": ("invalid character", "remove the character; identifiers are [A-Za-z_][A-Za-z0-9_]*"),
    "KMR107": ("unknown unit", "use one of B KB MB GB KiB MiB GiB us ms s % K M G"),
    "KMR108": ("missing declaration keyword", "start the line with import, model, data, knob, meter, rule, pipeline or property"),
    "KMR109": ("expression nested too deep", "write the expression flatter (see the note for the limit)"),
    # 2xx names, imports, types, units
    "KMR201": ("undefined name", "declare the name, import the file that does, or fix the spelling"),
    "KMR202": ("duplicate name", "rename one of the declarations; names are unique per file"),
    "KMR203": ("import not found", "fix the path; it is relative to the importing file"),
    "KMR204": ("import cycle", "break the cycle by moving shared declarations into a third file"),
    "KMR205": ("empty knob domain", "make the lower bound smaller than the upper bound"),
    "KMR206": ("default outside the knob's domain", "pick a default inside the domain"),
    "KMR207": ("step does not divide the range", "choose a step that divides hi - lo"),
    "KMR208": ("unknown argument", "use one of the rule's parameters"),
    "KMR209": ("missing argument", "pass the argument, or give the parameter a default"),
    "KMR210": ("argument outside the parameter's domain", "pass a value inside the parameter's domain"),
    "KMR211": ("argument of the wrong type", "pass a value of the parameter's type"),
    "KMR212": ("unit mismatch", "compare quantities of the same dimension (bytes, time, count, ratio)"),
    "KMR213": ("knob family indexed outside a matching for block", "index the family inside `for l in layers(...)` over the same selector"),
    "KMR214": ("selector matches no layer", "pick a kind or name pattern from the listed layers"),
    "KMR215": ("rule does not accept the selected layer kind", "select only kinds the rule lists in `accepts`"),
    "KMR216": ("model could not be loaded for checking", "fix the loader call; see the note for the loader's error"),
    "KMR217": ("pickle refused", "pass `trust = true` to torch_module or run with --trust if you trust the file"),
    "KMR218": ("invalid rule declaration", "fix the clause; see docs/language.md section 5"),
    "KMR219": ("type error in expression", "use operands of matching types"),
    "KMR220": ("selector on a whole-model rule", "drop the `on` selector; the rule acts on the whole model"),
    "KMR221": ("unknown loader", "use a loader from the contract (factory, torch_module, hf, sklearn, tensors)"),
    "KMR222": ("pipeline model is not a model", "name a `model` declaration in `pipeline NAME(MODEL)`"),
    "KMR223": ("invalid search or objective", "see docs/language.md for search strategies and objectives"),
    "KMR224": ("constant budget line", "compare a meter, e.g. `size <= 16 KB`, or remove the line"),
    "KMR225": ("derived meter defined in terms of itself", "define one of the meters in the cycle without the others"),
    "KMR226": ("selector on a step inside a for block", "drop `on ...`; the step applies to the loop's layer"),
    "KMR227": ("code outside the program's folder refused", "move the module next to the program, or pass `trust = true` / --trust if you trust it"),
    "KMR240": ("selector pattern matches nothing", "fix the `name` or `exclude` pattern, or drop it"),
    "KMR241": ("invalid regular expression in a pattern", "fix the expression after `re:`"),
    "KMR242": ("invalid list", "write a non-empty list whose items are all numbers or all strings"),
    "KMR245": ("rule cannot transform a tied layer", "leave layers tied to an embedding out of lowrank, lora, smoothquant and awq; quantize or prune them"),
    # 3xx proofs
    "KMR301": ("precondition may fail", "change the knob domain or reorder the steps so the precondition holds"),
    "KMR302": ("budget infeasible", "relax one of the conflicting budget lines or widen a knob bound"),
    "KMR303": ("verification unknown", "simplify the budget or raise the solver limit with --rlimit"),
    "KMR304": ("channels shrink with no consumer",
               "prune channels of hidden layers only (not the output layer), or use method = magnitude"),
    "KMR305": ("budget line divides by zero", "exclude 0 from the divisor's range"),
    "KMR306": ("fold leaves a reader of the normalization unselected",
               "select every Linear that reads the normalization, or none of them"),
    "KMR310": ("vacuous budget line", "tighten or remove the line; every setting meets it"),
    "KMR311": ("knob affects no analytic meter or precondition", "remove the knob or use it in a step"),
    "KMR312": ("default setting violates the budget", "change the defaults to a setting that meets the budget"),
    "KMR313": ("empirical line checked at run time", "nothing to fix; run `kmr run` to check it"),
    # 4xx runtime
    "KMR401": ("model file not found", "fix the path; it is relative to the program's folder"),
    "KMR402": ("model file has the wrong format", "pass a file saved with torch.save or safetensors as the loader expects"),
    "KMR403": ("data could not be loaded", "fix the data loader call"),
    "KMR404": ("shape mismatch", "make the data's feature size match the model's input"),
    "KMR405": ("rule implementation failed", "see the note for the implementation's error"),
    "KMR406": ("budget line failed at run time", "relax the budget or change the knob setting"),
    "KMR407": ("implementation not found", "fix the impl reference `module:function`"),
    "KMR408": ("meter could not be measured", "see the note; the meter may need data"),
    "KMR409": ("interrupted", "run again; nothing partial was written"),
    "KMR410": ("rule broke its contract", "fix the implementation or the rule's effect clause"),
    "KMR411": ("user code exited the process", "remove the sys.exit call; raise an exception to report a problem"),
    "KMR412": ("model has no weights", "load real weights to run; a meta-device model can only be checked"),
    # 5xx CLI and I/O
    "KMR500": ("internal error", "this is a bug in KMR; rerun with KMR_DEBUG=1 and report the traceback"),
    "KMR501": ("file not found", "check the path"),
    "KMR502": ("invalid command-line option", "see `kmr --help`"),
    "KMR503": ("invalid --set value", "write --set knob=value with a value in the knob's domain"),
    "KMR504": ("file not formatted", "run `kmr fmt FILE` to format it"),
    "KMR505": ("output folder not writable", "choose another --out folder"),
    "KMR506": ("optional dependency missing", "install the extra named in the message"),
    "KMR507": ("property failed", "see the shrunk failing setting"),
    "KMR508": ("search journal damaged or replaced", "nothing to fix: the search reruns what it cannot read back"),
    "KMR509": ("formatted file cannot be written", "make the file and its folder writable, or use `kmr fmt --check`"),
    "KMR510": ("file too large to format", "split the program into files joined by `import`"),
    "KMR520": ("layer cannot be exported to the format", "quantize the layer to 8 bits, or pass --dense to write float values"),
    "KMR521": ("model cannot be exported to ONNX", "the note names the operator ONNX lacks; replace it in the model's code"),
    "KMR522": ("export disagrees with the artifact", "report this with the artifact; nothing was written"),
    "KMR523": ("not a Hugging Face model", "use --format onnx, or build the model with the hf(...) loader"),
    "KMR530": ("not a recipe", "pass an llm-compressor or SparseML recipe.yaml"),
    "KMR531": ("modifier with no KMR equivalent", "express that step by hand, or leave it out knowingly"),
    "KMR532": ("recipe option with no KMR equivalent", "check the imported step; the option was not carried over"),
    "KMR533": ("imported step needs a newer KMR", "the step is written as a comment; a KMR with these features imports it"),
    "KMR534": ("recipe option with no effect on the result", "nothing to do: it only schedules llm-compressor's work"),
}


def default_hint(code: str) -> str | None:
    entry = CODES.get(code)
    return entry[1] if entry else None


# ---------------------------------------------------------------- rendering

def use_color(stream) -> bool:
    """Colour diagnostics on `stream`: a terminal, unless NO_COLOR is set or TERM=dumb."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


_COLORS = {Severity.ERROR: "\x1b[1;31m", Severity.WARNING: "\x1b[1;33m", Severity.NOTE: "\x1b[1;36m"}
_RESET = "\x1b[0m"


def _source_line(span: Span, sources: dict[str, str] | None) -> str | None:
    text = (sources or {}).get(span.file)
    if text is None:
        try:
            text = Path(span.file).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    lines = text.splitlines()
    if 1 <= span.line <= len(lines):
        return lines[span.line - 1]
    return None


def render(diag: Diagnostic, sources: dict[str, str] | None = None, color: bool = False) -> str:
    """`FILE:LINE:COL: error[KMRnnn]: message`, the source line, a caret, notes, hint."""
    sev = diag.severity.value
    head = f"{sev}[{diag.code}]"
    if color:
        head = f"{_COLORS[diag.severity]}{head}{_RESET}"
    out = [f"{diag.span}: {head}: {diag.message}"]
    line = _source_line(diag.span, sources) if diag.span.line > 0 else None
    if line is not None:
        num = str(diag.span.line)
        pad = " " * len(num)
        width = 1
        if diag.span.end_line == diag.span.line and diag.span.end_col > diag.span.col:
            width = diag.span.end_col - diag.span.col
        width = max(1, min(width, max(1, len(line) - diag.span.col + 1)))
        out.append(f" {pad} |")
        out.append(f" {num} | {line.expandtabs(1)}")
        out.append(f" {pad} | {' ' * (diag.span.col - 1)}{'^' * width}")
    for note in diag.notes:
        out.append(f"  = note: {note}")
    if diag.hint:
        out.append(f"  = help: {diag.hint}")
    return "\n".join(out)


def render_all(diags, sources=None, color=False) -> str:
    return "\n\n".join(render(d, sources, color) for d in diags)


def to_json(diags) -> str:
    return json.dumps([d.to_json() for d in diags], indent=2)


def has_errors(diags) -> bool:
    return any(d.severity is Severity.ERROR for d in diags)


def sort_key(d: Diagnostic):
    return (d.span.file, d.span.line, d.span.col, d.code)


__all__ = [
    "CODES", "Diagnostic", "KmrError", "Severity", "Span", "error", "warning",
    "render", "render_all", "to_json", "has_errors", "sort_key", "use_color",
]
