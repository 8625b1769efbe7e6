"""Parse KMR source text into the surface AST (kmr_dsl.ast). The only package that imports lark.

Contract: `parse(text, file)` never raises on bad input; it returns the program built
from every declaration that parsed and one KMR1xx diagnostic per declaration that did
not. To report several syntax errors in one run, the text is cut into top-level
declarations (kmr_dsl.parse.source) and each is parsed on its own (kmr_dsl.parse.lalr),
with its line numbers kept, and built into AST nodes (kmr_dsl.parse.build); a
declaration that does not parse gets its message from kmr_dsl.parse.errors.
`parse_expr(text)` parses one expression. `MAX_NESTING` bounds how deeply expressions
nest (KMR109), for every later stage.
"""

from __future__ import annotations

import re

from lark import Tree
from lark.exceptions import UnexpectedInput, VisitError

from kmr_dsl import ast
from kmr_dsl.diagnostics import Diagnostic, KmrError, Span, error
from kmr_dsl.parse.build import AstBuilder
from kmr_dsl.parse.errors import diagnose
from kmr_dsl.parse.lalr import parser
from kmr_dsl.parse.source import split_declarations

# How deeply expressions may nest (operators, calls, `if`s, `not`s, unary minus inside
# one another). Every later stage (checker, verifier, runtime, formatter) walks
# expressions recursively within Python's default recursion limit; the deepest walker
# uses about four frames a level, so this leaves room for the frames around it.
# Measured in tests/parse/test_limits.py at the limit for every stage.
MAX_NESTING = 150
_NESTING_RULES = frozenset({"if_expr", "or_op", "and_op", "not_op", "compare", "add", "sub", "mul", "div",
                            "neg", "attribute", "call", "index", "list_lit"})
BOM = "\ufeff"


def _too_deep(tree: Tree) -> Tree | None:
    """The first expression node nested more than MAX_NESTING deep, or None (walked
    with an explicit stack: the tree may be thousands of levels deep)."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in _NESTING_RULES:
            depth += 1
            if depth > MAX_NESTING:
                return node
        stack.extend((c, depth) for c in node.children if isinstance(c, Tree))
    return None


def _nesting_error(node: Tree, file: str, offset: int) -> Diagnostic:
    meta = node.meta
    line = (meta.line if not meta.empty else 1) + offset
    col = meta.column if not meta.empty else 1
    return error("KMR109", Span(file, line, col, line, col + 1),
                 f"expression nested too deep (limit {MAX_NESTING} levels)",
                 "operators, calls, `if`, `not` and unary `-` each add a level; a chain "
                 "`a + b + c` adds one per operator",
                 hint="write it flatter: `300 * size` for a repeated term, drop `not not` and `- -` pairs, "
                      "or split the expression over budget lines")


def parse(text: str, file: str = "<input>") -> tuple[ast.Program, list[Diagnostic]]:
    """Parse a whole file; never raises on malformed input."""
    decls: list = []
    diags: list[Diagnostic] = []
    if text.startswith(BOM):     # a UTF-8 byte order mark: a space, so columns stay those of the text
        text = " " + text[1:]
    for start, chunk in split_declarations(text):
        if not chunk.strip() or not re.sub(r"#[^\n]*", "", chunk).strip():
            continue
        try:
            tree = parser().parse(chunk)
            deep = _too_deep(tree)
            if deep is not None:
                diags.append(_nesting_error(deep, file, start - 1))
                continue
            builder = AstBuilder(file, start - 1)
            built = builder.transform(tree)
            if builder.errors:
                diags.extend(builder.errors)
                continue
            decls.extend(built)
        except UnexpectedInput as e:
            diags.append(diagnose(e, chunk, file, start - 1))
        except VisitError as e:  # a builder bug must still not reach the user as a traceback
            if isinstance(e.orig_exc, KmrError):      # a construct the grammar admits but the AST does not
                diags.append(e.orig_exc.diagnostic)
                continue
            diags.append(error("KMR101", Span(file, start, 1, start, 2), f"could not build the declaration: {e.orig_exc}"))
    lines = text.count("\n") + 1
    program = ast.Program(file, tuple(decls), Span(file, 1, 1, lines, 1))
    return program, diags


def parse_expr(text: str, file: str = "<expr>"):
    """Parse one expression (used by `--set` and tests); returns (expr or None, diags)."""
    program, diags = parse(f"meter __expr__ = {text}", file)
    if diags or not program.decls:
        return None, diags
    return program.decls[0].expr, []


__all__ = ["BOM", "MAX_NESTING", "parse", "parse_expr", "parser"]
