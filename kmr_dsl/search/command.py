"""`kmr search FILE`: check, verify, configure, then hand over to execute_search.

Contract: `search_command(args, tools=None) -> int` (args from kmr_dsl.cli's `search`
parser; `tools`, a `Toolchain`, names the loader, verifier and session class to use:
the real ones by default, stand-ins in tests).
1. Load and check the file (malformed: its diagnostics, exit 2).
2. Verify the pipeline. REFUTED: print the verifier's diagnostics and do not search
   (exit 1). UNKNOWN: warn and search anyway, since every setting is still checked
   against the analytic budget before it runs (a found setting exits 0, none exits 3).
3. Configure the strategy from the pipeline's `search` clause, overridden by
   --strategy, --max-steps and --seed (options: `max_steps` or its synonym `n`, `seed`,
   `batch`, `grid`; budgeted also `refine` and `spend`, tpe also `storage`). Bad options: KMR223.
4. Run it (local session, or Ray tasks with --backend ray) and write OUT
   (default `out/<pipeline>-search` under the current folder).
Trials use training seed 0 (like `kmr run`); the search seed drives only the strategy.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from kmr_dsl.app import load_checked, pick_pipeline, solver_options
from kmr_dsl.diagnostics import KmrError, Span, error, has_errors, render_all, warning
from kmr_dsl.core.evaluate import meter_refs
from kmr_dsl.runtime.context import default_threads
from kmr_dsl.search.backends import SESSION_SEED, LocalBackend, RayBackend, TaskSpec
from kmr_dsl.search.driver import Limits
from kmr_dsl.search.execute import SearchInfo, execute_search
from kmr_dsl.search.problem import ProgramProblem, meter_label
from kmr_dsl.search.space import GRID

STRATEGIES = ("budgeted", "random", "tpe")
DEFAULT_STEPS = 20
COMMON = {"max_steps": int, "seed": int, "batch": int, "grid": int}
SPECIFIC = {"budgeted": {"refine": bool, "spend": bool}, "random": {}, "tpe": {"storage": str}}


def _bad(span: Span, message: str, hint: str) -> KmrError:
    return KmrError(error("KMR223", span, message, hint=hint))


def configure(search_clause, args, span: Span) -> tuple[str, dict]:
    """(strategy, options) with CLI overrides applied and every option checked."""
    strategy = search_clause.strategy if search_clause is not None else "budgeted"
    raw = dict(search_clause.options) if search_clause is not None else {}
    if getattr(args, "strategy", None):
        if args.strategy not in STRATEGIES:
            raise KmrError(error("KMR502", Span.unknown("kmr search"), f"unknown strategy `{args.strategy}`",
                                 hint=f"use one of: {', '.join(STRATEGIES)}"))
        if args.strategy != strategy:
            # options of the program's strategy that the new one does not know are dropped
            raw = {k: v for k, v in raw.items() if k in COMMON or k == "n" or k in SPECIFIC[args.strategy]}
        strategy = args.strategy
    if strategy not in STRATEGIES:
        raise _bad(span, f"unknown search strategy `{strategy}`", f"use one of: {', '.join(STRATEGIES)}")
    if "n" in raw:
        if "max_steps" in raw:
            raise _bad(span, "give `n` or `max_steps`, not both", "they are the same run budget")
        raw["max_steps"] = raw.pop("n")
    allowed = {**COMMON, **SPECIFIC[strategy]}
    options = {}
    for name, value in raw.items():
        if name not in allowed:
            raise _bad(span, f"`{strategy}` has no option `{name}`", f"options: n/max_steps, {', '.join(sorted(set(allowed) - {'max_steps'}))}")
        want = allowed[name]
        if want is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise _bad(span, f"option `{name}` must be an integer, not {value!r}", f"write {name} = 20")
        if want is bool and not isinstance(value, bool):
            raise _bad(span, f"option `{name}` must be true or false", f"write {name} = true")
        options[name] = value.member if hasattr(value, "member") else value
    if getattr(args, "max_steps", None) is not None:
        options["max_steps"] = args.max_steps
    if getattr(args, "seed", None) is not None:
        options["seed"] = args.seed
    options.setdefault("max_steps", DEFAULT_STEPS)
    options.setdefault("seed", 0)
    for name in ("max_steps", "batch"):
        if name in options and options[name] < 1:
            raise _bad(span, f"option `{name}` must be at least 1", f"write {name} = 20")
    if options.get("grid", GRID) < 2:
        raise _bad(span, "option `grid` must be at least 2", "write grid = 11")
    return strategy, options


def make_strategy(strategy: str, options: dict, out_dir: Path | None = None, span: Span | None = None):
    from kmr_dsl.search.budgeted import Budgeted
    from kmr_dsl.search.sampling import RandomSearch, TPESearch

    common = {"seed": options["seed"], **({"batch": options["batch"]} if "batch" in options else {})}
    if strategy == "budgeted":
        return Budgeted(max_steps=options["max_steps"], refine=options.get("refine", True),
                        spend=options.get("spend", True), **common)
    if strategy == "random":
        return RandomSearch(n=options["max_steps"], **common)
    return TPESearch(n=options["max_steps"], storage=options.get("storage", "memory"), journal_dir=out_dir,
                     span=span, **common)


def witness_of(report) -> dict | None:
    """The feasibility witness of a verify report (knob instance -> value), if any."""
    results = sorted(getattr(report, "results", ()), key=lambda r: getattr(r, "kind", "") != "feasibility")
    for r in results:
        w = getattr(r, "witness", None)
        if w:
            return dict(w)
    return None


def shown_and_units(program, pipeline) -> tuple[list[str], dict[str, str]]:
    """The meters the budget and objective read (not baselines), and their dimensions."""
    refs = [r for line in pipeline.budget for r in meter_refs(line)]
    if pipeline.objective is not None:
        refs += meter_refs(pipeline.objective.expr)
    shown, units = [], {}
    for r in refs:
        if r.baseline:
            continue
        label = meter_label(r)
        if label not in shown:
            shown.append(label)
        meter = program.meters.get(r.name)
        units[label] = getattr(meter, "dim", "number")
    return shown, units


@dataclass(frozen=True)
class Toolchain:
    """What `kmr search` takes from the other stages. The defaults are the real ones;
    a test passes stand-ins (a hand-built program, a fake verifier, a fake session)."""

    load: Callable = load_checked                 # (path, trust=) -> (program, diags, sources)
    verifier: Any = None                          # verify, is_feasible, predict, predict_layers; None: kmr_dsl.verify
    session: Callable | None = None               # PipelineSession's signature; None: PipelineSession

    def verify_module(self):
        if self.verifier is not None:
            return self.verifier
        import kmr_dsl.verify

        return kmr_dsl.verify

    def session_class(self):
        if self.session is not None:
            return self.session
        from kmr_dsl.runtime.session import PipelineSession

        return PipelineSession


def search_command(args, tools: Toolchain | None = None) -> int:
    tools = tools or Toolchain()
    program, diags, sources = tools.load(args.file, trust=args.trust)
    if program is None or has_errors(diags):
        print(render_all(diags, sources), file=sys.stderr)
        return 2
    if args.time_limit is not None and args.time_limit <= 0:
        raise KmrError(error("KMR502", Span.unknown("kmr search"), "--time-limit must be a positive number of seconds",
                             hint="for example --time-limit 600"))
    name = pick_pipeline(program, args.pipeline, args.file)
    pipeline = program.pipelines[name]
    span = pipeline.search.span if pipeline.search is not None else pipeline.span
    strategy_name, options = configure(pipeline.search, args, span)

    verifier = tools.verify_module()
    report = verifier.verify(program, name, **solver_options(args))
    vdiags = list(diags) + list(getattr(report, "diagnostics", ()))
    if report.exit_code in (1, 2):
        print(render_all(vdiags, sources), file=sys.stderr)
        print(f"{args.file}: pipeline `{name}` is refuted by verification; not searching", file=sys.stderr)
        return report.exit_code
    verification = "unknown" if report.exit_code == 3 else "verified"
    if verification == "unknown":
        vdiags.append(warning("KMR303", span, "verification is UNKNOWN; searching anyway",
                              "every setting is still checked against the analytic budget before it runs",
                              hint="raise --rlimit to let the verifier decide"))
    if vdiags:
        print(render_all(vdiags, sources), file=sys.stderr)

    local = {}
    threads = args.threads if args.threads is not None else default_threads(pipeline.model.facts)

    def session():
        if "s" not in local:
            local["s"] = tools.session_class()(program, name, trust=args.trust, seed=SESSION_SEED, threads=threads)
        return local["s"]

    problem = ProgramProblem(program, name, witness_of(report), grid=options.get("grid", GRID), verifier=verifier,
                             profiles=lambda: session().weight_profiles())
    out_dir = Path(args.out) if args.out else Path("out") / f"{name}-search"
    strategy = make_strategy(strategy_name, options, out_dir, span)
    shown, units = shown_and_units(program, pipeline)
    info = SearchInfo(pipeline=name, file=args.file, strategy=strategy_name, options=options,
                      seed=options["seed"], backend=args.backend, verification=verification,
                      shown=shown, units=units, span=span)

    if args.backend == "ray":
        spec = TaskSpec("kmr_dsl.app:program_session",
                        (("path", str(Path(args.file).resolve())), ("pipeline", name),
                         ("trust", bool(args.trust)), ("seed", SESSION_SEED), ("threads", threads)))
        backend = RayBackend(spec, address=args.address, span=span)
    else:
        backend = LocalBackend(session())

    def save_best(trial):
        model, outcome = backend.model_for(trial.setting), trial.outcome
        if model is None:   # Ray kept it in a worker, or it was read back from the journal
            outcome = session().evaluate(dict(trial.setting), report=True)
            model = session().last_model
        elif pipeline.report and outcome is not None:
            # the `report` items (the test split) are read on the chosen setting only
            outcome = replace(outcome, reported=tuple(session().reported(model, dict(trial.setting))))
        local["reported"] = list(outcome.reported) if outcome is not None else []
        return session().save(model, out_dir / "best", dict(trial.setting), outcome=outcome,
                              extra={"search": {"trial": trial.index, "journal": str(out_dir / "journal.jsonl")}})

    try:
        code, _ = execute_search(problem, strategy, backend, out_dir, info,
                                 Limits(options["max_steps"], args.time_limit),
                                 resume=args.resume, save_best=save_best, fmt=args.format,
                                 reported=lambda: local.get("reported"))
    finally:
        backend.close()
    return code
