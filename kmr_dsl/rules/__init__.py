"""Python implementations of the standard rules (stdlib/std.kmr binds them with `impl`).

Contract: each module exposes `apply(model, layers, **arguments) -> model`, where
`layers` is the list of `(qualified_name, module)` pairs the step selected (use
`kmr_dsl.runtime.layers.select_layers` to build it) and `arguments` are resolved
values. The measured state after `apply` (`kmr_dsl.runtime.state.measure_state`)
equals the rule's `effect` in docs/design.md. Failures raise `KmrError` (KMR405).
Like the runtime, these modules import torch; importing this package does not.
"""
