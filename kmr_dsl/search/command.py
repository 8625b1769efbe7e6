"""`kmr search FILE`: check, verify, configure, then hand over to execute_search.

Contract: `search_command(args) -> int` (args from kmr_dsl.cli's `search` parser).
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
from pathlib import Path

from kmr_dsl.diagnostics import KmrError, Span, error, has_errors, render_all, warning
from kmr_dsl.evaluate import meter_refs
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


def _pick_pipeline(program, wanted: str | None, path: str) -> str:
    names = list(program.pipelines)
    if wanted is not None and wanted in program.pipelines:
        return wanted
    if wanted is None and len(names) == 1:
        return names[0]
    message = f"no pipeline named `{wanted}`" if wanted else "the file has several pipelines"
    if not names:
        message = "the file has no pipeline to search"
    raise KmrError(error("KMR502", Span.unknown(path), message, f"pipelines: {', '.join(names) or '(none)'}",
                         hint="pass one of the listed names to --pipeline"))


def _save(session, model, out_dir: Path, trial, outcome=None, reported=None):
    """session.save, with the trial's report beside the model when the session writes one."""
    import inspect

    if "outcome" not in inspect.signature(session.save).parameters:
        return session.save(model, out_dir, dict(trial.setting))
    if outcome is None:
        from kmr_dsl.runtime.session import Outcome

        outcome = Outcome(dict(trial.setting), dict(trial.meters), dict(trial.baseline), list(trial.lines),
                          trial.objective, trial.feasible, trial.seconds, reported=list(reported or []))
    return session.save(model, out_dir, dict(trial.setting), outcome=outcome,
                        extra={"search": {"trial": trial.index, "journal": str(out_dir.parent / "journal.jsonl")}})


def search_command(args) -> int:
    from kmr_dsl.cli import _solver_options, load_checked

    program, diags, sources = load_checked(args.file, trust=args.trust)
    if program is None or has_errors(diags):
        print(render_all(diags, sources), file=sys.stderr)
        return 2
    if args.time_limit is not None and args.time_limit <= 0:
        raise KmrError(error("KMR502", Span.unknown("kmr search"), "--time-limit must be a positive number of seconds",
                             hint="for example --time-limit 600"))
    name = _pick_pipeline(program, args.pipeline, args.file)
    pipeline = program.pipelines[name]
    span = pipeline.search.span if pipeline.search is not None else pipeline.span
    strategy_name, options = configure(pipeline.search, args, span)

    from kmr_dsl.verify import verify

    report = verify(program, name, **_solver_options(args))
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
            from kmr_dsl.runtime.session import PipelineSession

            local["s"] = PipelineSession(program, name, trust=args.trust, seed=SESSION_SEED, threads=threads)
        return local["s"]

    problem = ProgramProblem(program, name, witness_of(report), grid=options.get("grid", GRID),
                             profiles=lambda: session().weight_profiles())
    out_dir = Path(args.out) if args.out else Path("out") / f"{name}-search"
    strategy = make_strategy(strategy_name, options, out_dir, span)
    shown, units = shown_and_units(program, pipeline)
    info = SearchInfo(pipeline=name, file=args.file, strategy=strategy_name, options=options,
                      seed=options["seed"], backend=args.backend, verification=verification,
                      shown=shown, units=units, span=span)

    if args.backend == "ray":
        spec = TaskSpec("kmr_dsl.search.backends:program_session",
                        (("path", str(Path(args.file).resolve())), ("pipeline", name),
                         ("trust", bool(args.trust)), ("seed", SESSION_SEED), ("threads", threads)))
        backend = RayBackend(spec, address=args.address, span=span)
    else:
        backend = LocalBackend(session())

    def save_best(trial):
        model, outcome = backend.model_for(trial.setting), None
        if model is None:   # Ray kept it in a worker, or it was read back from the journal
            outcome = session().evaluate(dict(trial.setting), report=True)
            model = session().last_model
            local["reported"] = outcome.reported
        elif pipeline.report:
            # the `report` items (the test split) are read on the chosen setting only
            local["reported"] = session().reported(model, dict(trial.setting))
        return _save(session(), model, out_dir / "best", trial, outcome, local.get("reported"))

    try:
        code, _ = execute_search(problem, strategy, backend, out_dir, info,
                                 Limits(options["max_steps"], args.time_limit),
                                 resume=args.resume, save_best=save_best, fmt=args.format,
                                 reported=lambda: local.get("reported"))
    finally:
        backend.close()
    return code
