"""The torch runtime: loaders, introspection, state measurement, meters, artifacts.

Contract: this package (with `kmr_dsl.rules`) is the only place that imports torch,
and it does so in its submodules only: importing `kmr_dsl.runtime` itself is cheap,
so the CLI can name it without paying for torch until a submodule is used.

Modules: `loaders` (models and data from a LoaderSpec), `user_code` (importing the
program's factories and impls under the trust model), `data` (Dataset), `introspect`
(ModelFacts from a real model), `layers` (logical layers, masks, channel links),
`modules` and `int8_kernels` (the compressed layer types), `quant` (symmetric
quantization and bit packing), `state` (the measured abstract state), `meters`,
`training`, `forward`, `context` (seed, progress, baseline), `codec` + `artifact` (the
saved model).
"""
