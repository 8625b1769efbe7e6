"""The KMR language server (`kmr lsp`).

Module map: analysis.py (one document's snapshot: parse, import closure, quick check;
torch-, z3- and pygls-free) -> features.py (hover, completion, definition over a
snapshot) -> server.py (pygls glue: diagnostics as you type, background verification
cancelled on edit, formatting through `kmr fmt`). Only server.py imports pygls and
lsprotocol (the `lsp` extra).
"""
