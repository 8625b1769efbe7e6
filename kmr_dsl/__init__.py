"""KMR: a declarative language for model-efficiency pipelines on PyTorch.

Stages, imported one way only (docs/design.md): parse (lark) -> ast -> core -> check
-> verify (sympy, z3) -> runtime (torch) -> search, proptest -> app -> cli. Importing
this package imports none of lark, z3, sympy or torch.
"""

__version__ = "0.1.0"
