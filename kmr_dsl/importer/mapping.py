"""Each recipe modifier as KMR steps: one table entry per modifier.

Contract: `map_recipe(recipe) -> (steps, diagnostics)`. `MODIFIERS` maps a modifier's
name to a handler `(modifier, Ctx) -> list[StepOut]`; a new KMR rule is one new entry
(or one changed entry). A handler reads options with `cx.take(opts, NAME)`; after it
returns, every option it did not take is reported (KMR532, at the option's key), and
options listed in `EXECUTION_ONLY` (how llm-compressor schedules its work, with no
effect on the result) are reported as notes (KMR534). So nothing in a recipe is
dropped without a located diagnostic. A modifier with no entry is KMR531.

Steps name the rules of the KMR 0.2 contract (quantize, gptq, awq, smoothquant,
sparsegpt, prune_gradually, finetune, qat); whether this installation has them is
decided later (emit.py), from the standard library itself. Shared pieces live in
context.py (Ctx, selectors) and schemes.py (quantization schemes).
"""

from __future__ import annotations

import re

from kmr_dsl.diagnostics import Diagnostic, warning
from kmr_dsl.importer.context import DATA, EXECUTION_ONLY, Ctx, Enum, Selector, StepOut, layer_pattern, selector
from kmr_dsl.importer.recipe import Modifier, Recipe, Stage
from kmr_dsl.importer.schemes import QuantSpec, activation_args, quant_args, quant_specs

def _step(cx: Ctx, mod: Modifier, rule: str, args, sel: Selector | None) -> StepOut:
    return StepOut(rule, list(args), sel, mod.span, f"{mod.name} in {cx.stage.name}")


# ---------------------------------------------------------------- modifiers

def quantization(mod: Modifier, cx: Ctx) -> list[StepOut]:
    opts = mod.options
    if "start_epoch" in (opts.value or {}) or cx.recipe.flavour == "sparseml":
        return _qat(mod, cx)
    if cx.take(opts, "kv_cache_scheme") is not None:
        cx.approx(opts.keys["kv_cache_scheme"], "KV-cache quantization has no KMR equivalent")
    steps = []
    for spec, sel in quant_specs(cx, opts, mod.span):
        if cx.pending_awq is not None and spec.activations is None:
            steps += _awq_steps(cx, spec, sel)
            continue
        steps.append(_step(cx, mod, "quantize", quant_args(spec, False), sel))
    return steps


def gptq(mod: Modifier, cx: Ctx) -> list[StepOut]:
    opts = mod.options
    damp = cx.take(opts, "dampening_frac", cx.take(opts, "percdamp"))
    actorder = cx.take(opts, "actorder")
    steps = []
    for spec, sel in quant_specs(cx, opts, mod.span):
        args = quant_args(spec, True) + [("calibration", Enum(DATA))]
        if damp is not None:
            args.append(("dampening", float(damp)))
        if actorder not in (None, False, "none"):
            args.append(("act_order", True))
        steps.append(_step(cx, mod, "gptq", args, sel))
        if spec.activations is not None:  # GPTQ sets the weights; the activations are quantized after
            scheme = [("scheme", Enum("static"))] if spec.activations == "static" else []
            # gptq has no `symmetric`: with asymmetric weights its step is left as a comment
            # (KMR533) and this one quantizes the float weights as the recipe asks
            symmetric = [] if spec.symmetric else [("symmetric", False)]
            steps.append(_step(cx, mod, "quantize", [("bits", 8)] + scheme + symmetric + activation_args(spec), sel))
    return steps


def awq(mod: Modifier, cx: Ctx) -> list[StepOut]:
    opts = mod.options
    if cx.node(opts, "mappings") is not None:
        cx.approx(opts.keys["mappings"], "AWQ mappings: KMR's awq scales the input channels of each selected "
                  "Linear itself (no explicit smooth/balance pairs)")
    if cx.node(opts, "duo_scaling") is not None:
        cx.approx(opts.keys["duo_scaling"], "`duo_scaling` has no KMR equivalent (activation-only scaling)")
    specs = quant_specs(cx, opts, mod.span)
    if not specs:  # the weights come from the next quantization modifier of the stage
        cx.pending_awq = mod
        return []
    return [s for spec, sel in specs for s in _awq_steps(cx, spec, sel, mod)]


def _awq_steps(cx: Ctx, spec: QuantSpec, sel: Selector, mod: Modifier | None = None) -> list[StepOut]:
    mod = mod or cx.pending_awq
    cx.pending_awq = None
    return [_step(cx, mod, "awq", quant_args(spec, True) + [("calibration", Enum(DATA))], sel)]


# llm-compressor's DEFAULT_SMOOTHQUANT_MAPPINGS (modifiers/smoothquant/utils.py)
SMOOTHQUANT_DEFAULT_MAPPINGS = [[["re:.*q_proj", "re:.*k_proj", "re:.*v_proj"], "re:.*input_layernorm"],
                                [["re:.*gate_proj", "re:.*up_proj"], "re:.*post_attention_layernorm"]]


def smoothquant(mod: Modifier, cx: Ctx) -> list[StepOut]:
    opts = mod.options
    alpha = cx.take(opts, "smoothing_strength", 0.5)
    sel = selector(cx, opts, default=("Linear",))
    mappings = cx.take(opts, "mappings")
    if not mappings:
        # llm-compressor then picks them by the model's architecture: its default (Llama,
        # Mistral, Qwen2 and every architecture it does not list) unless Mixtral, Bloom or ChatGLM
        mappings = SMOOTHQUANT_DEFAULT_MAPPINGS
        cx.approx(mod.span, "SmoothQuantModifier without `mappings`: llm-compressor chooses them by the model's "
                  "architecture, which a recipe does not name",
                  "written as its default mappings (q/k/v_proj after input_layernorm, gate/up_proj after "
                  "post_attention_layernorm: Llama, Mistral, Qwen2 and unlisted architectures); a pattern that "
                  "matches no layer of the model is refused by `kmr check` (KMR240)")
    if mappings:  # [[balance layers], smooth layer]: the balance layers are what KMR selects
        names = []
        for m in mappings:
            if isinstance(m, list) and m:
                names += [layer_pattern(p) for p in (m[0] if isinstance(m[0], list) else [m[0]])]
        sel = Selector(sel.kinds, tuple(names), sel.exclude)
    cx.take(opts, "num_calibration_steps")
    return [_step(cx, mod, "smoothquant", [("alpha", float(alpha)), ("calibration", Enum(DATA))], sel)]


def sparsegpt(mod: Modifier, cx: Ctx) -> list[StepOut]:
    opts = mod.options
    amount = cx.take(opts, "sparsity", 0.5)
    structure = str(cx.take(opts, "mask_structure", "0:0"))
    # both damp H by this fraction of its mean diagonal, as KMR's `dampening` does
    damp = cx.take(opts, "dampening_frac", cx.take(opts, "percdamp"))
    for key in ("sparsity_profile", "owl_m", "owl_lmbda", "prune_n", "prune_m"):
        if cx.node(opts, key) is not None:
            cx.approx(opts.keys[key], f"`{key}` has no KMR equivalent (one sparsity for every selected layer)")
    args: list[tuple[str, object]] = [("amount", float(amount))]
    m = re.fullmatch(r"(\d+):(\d+)", structure)
    if m and m.group(1) != "0":
        args += [("n", int(m.group(1))), ("m", int(m.group(2)))]
    args.append(("calibration", Enum(DATA)))
    if damp is not None:
        args.append(("dampening", float(damp)))
    return [_step(cx, mod, "sparsegpt", args, selector(cx, opts))]


def constant_pruning(mod: Modifier, cx: Ctx) -> list[StepOut]:
    selector(cx, mod.options)
    for key in ("start_epoch", "end_epoch", "start", "end"):
        cx.take(mod.options, key)
    cx.note(mod.span, "ConstantPruningModifier: KMR's training rules always keep pruning masks (nothing to add)")
    return []


def gm_pruning(mod: Modifier, cx: Ctx) -> list[StepOut]:
    opts = mod.options
    final = cx.take(opts, "final_sparsity", 0.5)
    initial = cx.take(opts, "init_sparsity", 0.0)
    start, end = cx.take(opts, "start_epoch", 0.0), cx.take(opts, "end_epoch", 1.0)
    curve = str(cx.take(opts, "inter_func", "cubic"))
    if curve not in ("cubic", "linear"):
        cx.approx(opts.keys["inter_func"], f"`inter_func: {curve}`: KMR's curves are cubic and linear",
                  "written as cubic")
        curve = "cubic"
    method = "global" if cx.take(opts, "global_sparsity") else "magnitude"
    mask = cx.take(opts, "mask_type", "unstructured")
    if mask not in ("unstructured", None):
        cx.approx(opts.keys["mask_type"], f"`mask_type: {mask}`: gradual pruning in KMR is unstructured")
    if cx.stage.run_type == "oneshot" or (cx.recipe.flavour == "llm-compressor" and cx.stage.run_type != "train"):
        # one-shot (llm-compressor's MagnitudePruningModifier in a oneshot stage): no schedule
        if initial:
            cx.note(opts.keys["init_sparsity"], "`init_sparsity` of a one-shot pruning has no effect")
        args = [("amount", float(final))] + ([("method", Enum("global"))] if method == "global" else [])
        sel = selector(cx, opts, targets_key="params" if opts.get("params") is not None else "targets")
        return [_step(cx, mod, "prune", args, sel)]
    epochs = max(1, round((end or 0) - (start or 0)))
    args = [("final", float(final)), ("data", Enum(DATA))]
    if initial:
        args.append(("initial", float(initial)))
    args += [("epochs", epochs), ("curve", Enum(curve))]
    if method != "magnitude":
        args.append(("method", Enum(method)))
    sel = selector(cx, opts, targets_key="params" if opts.get("params") is not None else "targets")
    cx.stage_training = max(cx.stage_training, end or 0)
    return [_step(cx, mod, "prune_gradually", args, sel)]


def _qat(mod: Modifier, cx: Ctx) -> list[StepOut]:
    opts = mod.options
    start = max(0.0, cx.take(opts, "start_epoch", 0.0) or 0.0)  # SparseML: a negative start is the start
    for key in list(opts.value or {}):
        if key in ("submodules", "model_fuse_fn_name", "freeze_bn_stats_epoch", "disable_quantization_observer_epoch",
                   "quantize_embeddings", "quantize_linear_activations", "activation_bits", "exclude_module_types",
                   "scheme", "ignore", "targets", "end_epoch"):
            cx.taken.add(key)
            if key in ("freeze_bn_stats_epoch", "disable_quantization_observer_epoch", "model_fuse_fn_name"):
                cx.note(opts.keys[key], f"`{key}` is a schedule detail of SparseML's QAT")
    total = cx.epochs if cx.epochs is not None else (start or 0) + 1
    epochs = max(1, round(total - (start or 0)))
    return [_step(cx, mod, "qat", [("bits", 8), ("data", Enum(DATA)), ("epochs", epochs)], None)]


def epoch_range(mod: Modifier, cx: Ctx) -> list[StepOut]:
    start, end = cx.take(mod.options, "start_epoch", 0.0), cx.take(mod.options, "end_epoch", 1.0)
    cx.epochs = (end or 0) - (start or 0)
    return []


SCHEDULES = {"CosineAnnealingWarmRestarts": "cosine", "CosineAnnealingLR": "cosine", "StepLR": "step",
             "MultiStepLR": "step", "ConstantLR": "constant", "cosine": "cosine", "constant": "constant"}


def learning_rate(mod: Modifier, cx: Ctx) -> list[StepOut]:
    opts = mod.options
    cx.lr = cx.take(opts, "init_lr", cx.take(opts, "lr", cx.take(opts, "learning_rate")))
    cls = cx.take(opts, "lr_class", cx.take(opts, "lr_func"))
    cx.take(opts, "lr_kwargs")
    cx.take(opts, "start_epoch")
    cx.take(opts, "end_epoch")
    cx.take(opts, "final_lr")
    if cls is not None:
        cx.schedule = SCHEDULES.get(str(cls))
        if cx.schedule is None:
            cx.approx(opts.keys.get("lr_class", opts.keys.get("lr_func", mod.span)),
                      f"learning-rate schedule `{cls}` has no KMR equivalent (constant, cosine, step)",
                      "written as constant")
    return []


MODIFIERS = {
    "QuantizationModifier": quantization,
    "GPTQModifier": gptq,
    "AWQModifier": awq,
    "SmoothQuantModifier": smoothquant,
    "SparseGPTModifier": sparsegpt,
    "ConstantPruningModifier": constant_pruning,
    "GMPruningModifier": gm_pruning,
    "MagnitudePruningModifier": gm_pruning,
    "GlobalMagnitudePruningModifier": gm_pruning,
    "EpochRangeModifier": epoch_range,
    "LearningRateModifier": learning_rate,
    "SetLearningRateModifier": learning_rate,
    "LearningRateFunctionModifier": learning_rate,
}


def map_recipe(recipe: Recipe) -> tuple[list[tuple[Stage, list[StepOut]]], list[Diagnostic]]:
    diags: list[Diagnostic] = []
    out = []
    for stage in recipe.stages:
        cx = Ctx(recipe, stage, diags)
        # ranges and learning rates first: SparseML lists them anywhere in the list
        order = sorted(stage.modifiers, key=lambda m: m.name not in ("EpochRangeModifier", "LearningRateModifier",
                                                                     "SetLearningRateModifier",
                                                                     "LearningRateFunctionModifier"))
        steps: list[StepOut] = []
        for mod in order:
            handler = MODIFIERS.get(mod.name)
            if handler is None:
                diags.append(warning("KMR531", mod.span, f"`{mod.name}` has no KMR equivalent",
                                     f"modifiers with one: {', '.join(sorted(MODIFIERS))}"))
                continue
            cx.taken = set()
            steps += handler(mod, cx)
            for key, span in mod.options.keys.items():
                if key in cx.taken:
                    continue
                if key in EXECUTION_ONLY:
                    cx.note(span, f"`{key}` of {mod.name} is an execution detail with no effect on the result")
                else:
                    diags.append(warning("KMR532", span, f"option `{key}` of {mod.name} has no KMR equivalent"))
        if cx.pending_awq is not None:
            diags.append(warning("KMR532", cx.pending_awq.span, "AWQModifier without a weight scheme, and no "
                                 "weight-only quantization after it in the stage to take one from"))
        steps += _training(cx, steps)
        out.append((stage, steps))
    return out, diags


def _training(cx: Ctx, steps: list[StepOut]) -> list[StepOut]:
    """Training the stage does beyond its steps: a `train` stage (llm-compressor), or
    the epochs of an EpochRangeModifier after gradual pruning ends (SparseML)."""
    extra = []
    train_args = [("lr", float(cx.lr))] if cx.lr else []
    if cx.schedule and cx.schedule != "constant":
        train_args.append(("schedule", Enum(cx.schedule)))
    for s in steps:
        if s.rule in ("prune_gradually", "qat"):
            s.args += train_args
    if cx.epochs is not None:
        remaining = round(cx.epochs - cx.stage_training)
        if remaining >= 1 and not any(s.rule == "qat" for s in steps):
            extra.append(StepOut("finetune", [("data", Enum(DATA)), ("epochs", remaining)] + train_args, None,
                                 cx.stage.span, f"EpochRangeModifier in {cx.stage.name}"))
    elif cx.stage.run_type == "train" and not any(s.rule in ("prune_gradually", "qat") for s in steps):
        cx.note(cx.stage.span, "a `train` stage: its epochs and learning rate are arguments of llm-compressor's "
                "train() call, not of the recipe; written as finetune's defaults")
        extra.append(StepOut("finetune", [("data", Enum(DATA))] + train_args, None, cx.stage.span,
                             f"run_type train in {cx.stage.name}"))
    return extra


__all__ = ["DATA", "MODIFIERS", "Enum", "Selector", "StepOut", "map_recipe"]
