"""KMR: a declarative language for model-efficiency pipelines on PyTorch.

Stages, imported one way only: parse (lark) -> ast -> check -> verify (sympy, z3)
-> runtime (torch) -> cli. Importing this package imports none of lark, z3, sympy
or torch.
"""

__version__ = "0.1.0"
