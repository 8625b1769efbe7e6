"""Property tests for KMR programs (`kmr test`, spec section 8) and the pytest plugin.

Public API (each module imports what it needs; importing this package is free):
- `kmr_dsl.proptest.properties.run_property(program, prop, sessions, examples, seed)`
  tests a user `property`: Hypothesis draws knob settings, the pipeline runs, each
  `check` is judged, a failure is shrunk to a minimal setting (KMR507).
- `kmr_dsl.proptest.contracts.check_contract(rule, examples, seed)` tests a rule's
  contract on small generated models: the state after its implementation matches its
  `effect`s, it runs only where its `requires` holds, and the analytic meters agree
  with the verifier's cost model (KMR410 with the shrunk case when not).
- `kmr_dsl.proptest.runner.test_program(program, ...)` does both for a whole file;
  `kmr_dsl.proptest.command.test_command(args)` is `kmr test`.
- `kmr_dsl.proptest.plugin` is the pytest plugin (`pytest --kmr PATH`).

Module map: strategies (domains -> Hypothesis) and engine (run, shrink) have no torch;
properties (pipelines) and contracts -> apply (generated models, `models`) ->
expected (effects vs measured state) and costcheck (cost model vs meters); quantities
and runner format results; command and plugin are the two front ends.
docs/testing.md is the user's guide.
"""
