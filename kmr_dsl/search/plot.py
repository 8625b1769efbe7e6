"""OUT/pareto.png: cost against quality for every trial that ran.

Contract: `pareto_plot(result, path, cost, quality_name, direction)` draws, for each
trial that ran, the cost meter (x axis: the first analytic meter of the budget, e.g.
`size`) against the objective (y axis): feasible trials filled, failing ones hollow;
the Pareto front of the feasible trials (less cost, better objective) as a step line;
the best trial as a star; and the budget's bounds on either axis as dashed lines.
matplotlib is imported here only, with the Agg backend (no display needed). Returns
the path written, or None when there is nothing to draw (no cost meter or no trial
with both values).
"""

from __future__ import annotations

from pathlib import Path


def pareto_front(points: list[tuple[float, float, int]], direction: str | None) -> list[tuple[float, float, int]]:
    """Points (cost, objective, index) no other point beats on both; sorted by cost."""
    sign = -1.0 if direction == "minimize" else 1.0
    front, best_q = [], None
    for c, q, i in sorted(points, key=lambda p: (p[0], -sign * p[1], p[2])):
        if best_q is None or sign * q > best_q:
            front.append((c, q, i))
            best_q = sign * q
    return front


def _bounds(trial, label: str) -> list[float]:
    """Values the budget bounds `label` by: the other side of each line with one side
    equal to the trial's reading of `label` (e.g. 16000 for `size <= 16 KB`)."""
    value = trial.meters.get(label)
    out = []
    for line in trial.lines:
        left, right = line.left, line.right
        if left is None or right is None or value is None:
            continue
        if abs(left - value) <= 1e-9 * max(1.0, abs(value)):
            out.append(right)
        elif abs(right - value) <= 1e-9 * max(1.0, abs(value)):
            out.append(left)
    return out


def pareto_plot(result, path: Path, cost: str | None, quality_name: str, direction: str | None) -> Path | None:
    ran = [t for t in result.trials if t.ran and t.objective is not None and cost and cost in t.meters]
    if not ran:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    feas = [t for t in ran if t.feasible]
    fail = [t for t in ran if not t.feasible]
    if fail:
        ax.scatter([t.meters[cost] for t in fail], [t.objective for t in fail], facecolors="none",
                   edgecolors="tab:gray", label="fails budget")
    if feas:
        ax.scatter([t.meters[cost] for t in feas], [t.objective for t in feas], color="tab:blue", label="meets budget")
        front = pareto_front([(t.meters[cost], t.objective, t.index) for t in feas], direction)
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:green", label="Pareto front")
    if result.best is not None and cost in result.best.meters:
        ax.scatter([result.best.meters[cost]], [result.best.objective], marker="*", s=220, color="tab:orange",
                   zorder=5, label=f"best (#{result.best.index})")
    sample = result.best or ran[0]
    for x in sorted(set(_bounds(sample, cost))):
        ax.axvline(x, color="tab:red", linestyle="--", linewidth=1)
    for y in sorted(set(_bounds(sample, quality_name))):
        ax.axhline(y, color="tab:red", linestyle="--", linewidth=1)
    ax.set_xlabel(cost)
    ax.set_ylabel(f"{quality_name} ({direction or 'objective'})")
    ax.set_title("search trials: cost against quality (dashed: budget bounds)")
    ax.legend(loc="best", fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

