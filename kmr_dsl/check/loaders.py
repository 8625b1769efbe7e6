"""`model` and `data` declarations -> LoaderSpec (program.ModelDecl / program.DataDecl).

Contract: `check_model(cx, decl, src)` / `check_data(cx, decl, src)` build the loader
call as data: literal arguments only (KMR211 otherwise), positional ones first, keyword
ones sorted by name, `base_dir` = the absolute folder of the declaring file. Loaders:
models `torch_module(path, trust = bool)`, `factory("pkg.module:function", weights =
"file", ...)`, `hf(path_or_package)`; data `sklearn(name, split = "train" | "val" | "test")`,
`tensors(path)`, `factory("pkg.module:function", ...)`. An unknown loader, or a data
loader for a model, is KMR221; the one required path or reference missing is KMR209;
extra positional arguments are KMR208; `split` outside train/val/test is KMR210. A list
literal argument (`input_shape = [1, 3, 32, 32]`) becomes a tuple (KMR242 when mixed). Other
keyword arguments are allowed and passed through (factory hands them to the function).
Model facts are not fetched here: only models a pipeline uses are loaded, on demand
(`Context.facts_for`).
"""

from __future__ import annotations

from pathlib import Path

from kmr_dsl import ast
from kmr_dsl.core import program as P
from kmr_dsl.check import types as T
from kmr_dsl.check.names import did_you_mean
from kmr_dsl.diagnostics import error
from kmr_dsl.facts import LoaderSpec

MODEL_LOADERS = {"torch_module": "a file saved with torch.save",
                 "factory": "\"pkg.module:function\"",
                 "hf": "a Hugging Face folder or package"}
DATA_LOADERS = {"sklearn": "a scikit-learn dataset name such as \"digits\"",
                "tensors": "a file holding an (inputs, targets) pair",
                "factory": "\"pkg.module:function\""}
SPLITS = ("train", "val", "test")
EXAMPLES = {"torch_module": 'torch_module("model.pt")', "hf": 'hf("path/to/folder")',
            "sklearn": 'sklearn("digits", split = "train")', "tensors": 'tensors("data.pt")'}


def _example(loader: str, what: str) -> str:
    if loader == "factory":
        return 'factory("digits_model:make_mlp", weights = "mlp.safetensors")' if what == "model" \
            else 'factory("my_data:load")'
    return EXAMPLES[loader]


def _folder(label: str) -> str:
    try:
        return str(Path(label).resolve().parent)
    except (OSError, RuntimeError):
        return str(Path(label).parent)


def _value(cx, arg: ast.Arg, loader: str):
    node = arg.value
    if isinstance(node, ast.ListLit):
        got = T.list_literal(node, cx.diags)
        return (None, False) if got is None else (got[0], True)
    if isinstance(node, ast.Unary) and node.op == "-" and isinstance(node.operand, (ast.Number, ast.Quantity)):
        folded = T.literal(node.operand)
        return -folded[0], True
    folded = T.literal(node)
    if folded is None:
        cx.report(error("KMR211", node.span, f"arguments of loader `{loader}` must be literals",
                        hint="write a string, number or true/false; names and expressions are not evaluated here"))
        return None, False
    return folded[0], True


def _spec(cx, call: ast.LoaderCall, src, table: dict, other: dict, what: str) -> LoaderSpec | None:
    if call.name not in table:
        notes = [f"`{call.name}` loads {'data' if what == 'model' else 'a model'}, not {'a model' if what == 'model' else 'data'}"] \
            if call.name in other else did_you_mean(call.name, table)
        cx.report(error("KMR221", call.span, f"unknown {what} loader `{call.name}`", *notes,
                        f"{what} loaders: " + ", ".join(table),
                        hint=f"load the {what} with one of: " + ", ".join(table)))
        return None
    args, kwargs, ok = [], {}, True
    for arg in call.args:
        value, good = _value(cx, arg, call.name)
        ok &= good
        if arg.name is None:
            if kwargs:
                cx.report(error("KMR208", arg.span, f"positional argument after a named one in `{call.name}`"))
                ok = False
            args.append(value)
        elif arg.name in kwargs:
            cx.report(error("KMR208", arg.span, f"argument `{arg.name}` of `{call.name}` is given twice"))
            ok = False
        else:
            kwargs[arg.name] = (value, arg)
    if not ok:
        return None
    # sklearn also accepts its dataset name as `name = "digits"`
    first = args[0] if args else (kwargs["name"][0] if call.name == "sklearn" and "name" in kwargs else None)
    if not args and first is None:
        cx.report(error("KMR209", call.span, f"`{call.name}` needs {table[call.name]} as its first argument",
                        hint=f"write e.g. `{_example(call.name, what)}`"))
        ok = False
    elif not isinstance(first, str):
        cx.report(error("KMR211", call.args[0].span, f"the first argument of `{call.name}` is {table[call.name]}, "
                        "a string"))
        ok = False
    elif call.name == "factory" and ":" not in first:
        cx.report(error("KMR211", call.args[0].span, f"\"{first}\" is not a reference of the form \"pkg.module:function\"",
                        hint='write e.g. factory("digits_model:make_mlp")'))
        ok = False
    for extra in call.args[1:len(args)]:
        cx.report(error("KMR208", extra.span, f"`{call.name}` takes one positional argument",
                        hint=f"name any other argument, as in `{_example(call.name, what)}`"))
        ok = False
    ok &= _kw_types(cx, call.name, kwargs)
    if not ok:
        return None
    return LoaderSpec(call.name, tuple(args), tuple(sorted((k, v) for k, (v, _) in kwargs.items())), _folder(src.label))


def _kw_types(cx, loader: str, kwargs: dict) -> bool:
    ok = True
    if "trust" in kwargs and not isinstance(kwargs["trust"][0], bool):
        cx.report(error("KMR211", kwargs["trust"][1].span, "`trust` is true or false"))
        ok = False
    if "weights" in kwargs and loader == "hf":
        if kwargs["weights"][0] is not False:
            cx.report(error("KMR211", kwargs["weights"][1].span, "`weights` of `hf` is `false` (the architecture "
                            "from config.json, no weights: checkable, not runnable)"))
            ok = False
    elif "weights" in kwargs and not isinstance(kwargs["weights"][0], str):
        cx.report(error("KMR211", kwargs["weights"][1].span, "`weights` is a file path (a string)"))
        ok = False
    if loader == "sklearn" and "split" in kwargs and kwargs["split"][0] not in SPLITS:
        value, arg = kwargs["split"]
        cx.report(error("KMR210", arg.span, f"split {T.fmt_value(value)!s} is not \"train\", \"val\" or \"test\"",
                        hint='write split = "train", "val" (for budgets and objectives) or "test" (for reporting)'))
        ok = False
    return ok


def check_model(cx, decl: ast.ModelDecl, src) -> P.ModelDecl | None:
    spec = _spec(cx, decl.loader, src, MODEL_LOADERS, DATA_LOADERS, "model")
    return None if spec is None else P.ModelDecl(decl.name, spec, None, decl.span)


def check_data(cx, decl: ast.DataDecl, src) -> P.DataDecl | None:
    spec = _spec(cx, decl.loader, src, DATA_LOADERS, MODEL_LOADERS, "data")
    return None if spec is None else P.DataDecl(decl.name, spec, decl.span)


__all__ = ["DATA_LOADERS", "MODEL_LOADERS", "check_data", "check_model"]
