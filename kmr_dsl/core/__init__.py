"""The torch-free core every stage shares: the checked program IR and its meaning.

Contract: importing anything in this package imports none of torch, z3, lark or
sympy (a test enforces it). What lives here is written once and used by the checker,
the verifier, the runtime, search and the property tests:
- `program`: the checked program IR (what the checker hands to every later stage);
- `walk`: walking and rewriting IR trees, and `Dispatch`, the one registry keyed by
  node class that every evaluator of the IR is built on;
- `evaluate`: the numeric evaluator of IR expressions (plain Python numbers);
- `state`: the abstract state's fields and layer kinds, and the analytic meters;
- `step`: one step's semantics (a rule's effects, the runtime's rounding of counts,
  consumers shrinking with their producer, rank following shape), written once over
  an arithmetic (`Ops`) that is plain numbers for the runtime side and sympy for the
  verifier.
"""
