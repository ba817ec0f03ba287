"""Pareto utilities (all objectives minimized): non-dominated sorting with constraint domination,
crowding distance and environmental selection (NSGA-II, Deb et al., 2002), 2-D hypervolume (and the
accuracy-cost front's, with its reference point) and hypervolume improvement, and the front plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nas.runs.files import write_atomically


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def constrained_dominates(fa: np.ndarray, va: float, fb: np.ndarray, vb: float) -> bool:
    """Deb's rule: feasible beats infeasible; among infeasible, smaller violation wins."""
    if va <= 0 and vb <= 0:
        return dominates(fa, fb)
    if va <= 0 or vb <= 0:
        return va <= 0
    return va < vb


MATRIX_LIMIT = 512  # above, two objectives are sorted without the n x n domination matrix


def domination_matrix(objectives: np.ndarray, violations: np.ndarray | None = None) -> np.ndarray:
    """`D[i, j]` is True when point i constraint-dominates point j (vectorized `constrained_dominates`)."""
    f = np.asarray(objectives, dtype=float)
    n = len(f)
    v = np.zeros(n) if violations is None else np.maximum(np.asarray(violations, dtype=float), 0.0)
    le = np.all(f[:, None, :] <= f[None, :, :], axis=2)
    lt = np.any(f[:, None, :] < f[None, :, :], axis=2)
    feasible = v <= 0
    both = feasible[:, None] & feasible[None, :]
    return np.where(both, le & lt, np.where(feasible[:, None] | feasible[None, :], feasible[:, None] & ~feasible[None, :],
                                            v[:, None] < v[None, :]))


def non_dominated_sort(objectives: np.ndarray, violations: np.ndarray | None = None) -> list[list[int]]:
    """Fronts of indices, best first. `violations` (>0 means infeasible) enables constraint domination."""
    n = len(objectives)
    if n == 0:
        return []
    if n > MATRIX_LIMIT and np.shape(objectives)[1] == 2:
        return _sort_2d(np.asarray(objectives, dtype=float), violations)
    dom = domination_matrix(objectives, violations)
    counts = dom.sum(axis=0)  # how many points dominate each point
    fronts, remaining = [], np.ones(n, dtype=bool)
    current = np.flatnonzero(counts == 0)
    while current.size:
        fronts.append(current.tolist())
        remaining[current] = False
        counts = counts - dom[current].sum(axis=0)
        current = np.flatnonzero(remaining & (counts == 0))
    return fronts


def _sort_2d(f: np.ndarray, violations: np.ndarray | None) -> list[list[int]]:
    """The same fronts as the matrix method for two objectives, in O(n x fronts) time and O(n) memory
    (a long search's tens of thousands of evaluations would need gigabytes as an n x n matrix).
    Feasible points in lexicographic order each join the first front whose last point does not
    dominate them (Zhang et al.'s ENS: that point has the front's lowest second objective); then one
    front per distinct violation, smallest first (Deb's rule)."""
    v = np.zeros(len(f)) if violations is None else np.maximum(np.asarray(violations, dtype=float), 0.0)
    feasible = np.flatnonzero(v <= 0)
    order = feasible[np.lexsort((f[feasible, 1], f[feasible, 0]))]
    fronts: list[list[int]] = []
    last: list[tuple[float, float]] = []
    for i in order:
        x, y = f[i]
        for k, (lx, ly) in enumerate(last):
            if not (ly < y or (ly == y and lx < x)):  # not dominated by front k
                fronts[k].append(int(i))
                last[k] = (x, y)
                break
        else:
            fronts.append([int(i)])
            last.append((x, y))
    infeasible = np.flatnonzero(v > 0)
    for level in np.unique(v[infeasible]):
        fronts.append(infeasible[v[infeasible] == level].tolist())
    return [sorted(front) for front in fronts]


def crowding_distance(objectives: np.ndarray) -> np.ndarray:
    n, m = objectives.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(objectives[:, k], kind="stable")
        span = objectives[order[-1], k] - objectives[order[0], k]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (objectives[order[2:], k] - objectives[order[:-2], k]) / span
    return dist


class Selection(NamedTuple):
    """The chosen points (indices into the pool, in selection order), with the front each belongs to
    (0 = best) and its crowding distance within that front, aligned with `indices`."""

    indices: list[int]
    rank: list[int]
    crowding: list[float]


def environmental_selection(objectives: np.ndarray, violations: np.ndarray | None, k: int) -> Selection:
    """NSGA-II's environmental selection of `k` of n points: whole fronts, best first (constraint
    domination when `violations` is given), each in index order; the first front that does not fit
    is cut by crowding distance, largest first (lower index first on ties). When all points fit
    (n <= k), all are kept in their order."""
    f = np.asarray(objectives, dtype=float)
    n = len(f)
    rank, crowding = np.zeros(n, dtype=int), np.zeros(n)
    chosen: list[int] = []
    for r, front in enumerate(non_dominated_sort(f, violations)):
        if len(chosen) >= k:
            break
        rank[front] = r
        crowding[front] = crowding_distance(f[front])
        if len(chosen) + len(front) <= k:
            chosen += front
        else:
            chosen += [front[i] for i in np.argsort(-crowding[front], kind="stable")[: k - len(chosen)]]
    if n <= k:
        chosen = list(range(n))
    return Selection(chosen, [int(rank[i]) for i in chosen], [float(crowding[i]) for i in chosen])


def pareto_indices(objectives: np.ndarray) -> list[int]:
    """Indices of the non-dominated points (duplicates of a point kept once), sorted by objective 0."""
    if len(objectives) == 0:
        return []
    front = non_dominated_sort(objectives)[0]
    unique: dict[tuple, int] = {}
    for i in front:
        unique.setdefault(tuple(objectives[i]), i)
    return sorted(unique.values(), key=lambda i: tuple(objectives[i]))


def resolved_front_indices(merit: np.ndarray, cost: np.ndarray, resolution: float) -> list[int]:
    """Indices of the points (merit maximized, cost minimized) that no other point beats at a cost
    `resolution` (relative) can resolve: point j beats i when j's merit is at least i's, j's cost is
    not resolvably higher (cost_j <= cost_i * (1 + resolution)), and j is better in one of the two:
    more merit, or a resolvably lower cost (cost_j * (1 + resolution) < cost_i). Costs within the
    resolution are ties, so the front does not change with noise below it; at resolution 0 this is
    the plain front (`pareto_indices`, duplicates kept). The relation has no cycles, so a non-empty
    set has a non-empty front. Sorted by cost. O(n log n)."""
    merit, cost = np.asarray(merit, dtype=float), np.asarray(cost, dtype=float)
    if not resolution >= 0:
        raise ValueError(f"resolution must be >= 0, got {resolution!r}")
    if len(cost) == 0:
        return []
    order = np.argsort(cost, kind="stable")
    sorted_cost, best = cost[order], np.maximum.accumulate(merit[order])  # best merit among the k cheapest
    scale = 1.0 + resolution
    # more merit at a cost not resolvably higher
    within = np.searchsorted(sorted_cost, cost * scale, side="right")
    beaten = best[within - 1] > merit
    # as much merit at a resolvably lower cost
    cheaper = np.searchsorted(sorted_cost * scale, cost, side="left")  # those with cost_j * scale < cost_i
    beaten |= (cheaper > 0) & (best[np.maximum(cheaper, 1) - 1] >= merit)
    return sorted(np.flatnonzero(~beaten).tolist(), key=lambda i: (cost[i], -merit[i]))


def hypervolume_2d(objectives: np.ndarray, reference: np.ndarray) -> float:
    """Area dominated by the points (minimization) and bounded by `reference`."""
    pts = objectives[np.all(objectives < reference, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[np.argsort(pts[:, 0], kind="stable")]
    area, best_y = 0.0, reference[1]
    for x, y in pts:
        if y < best_y:
            area += (reference[0] - x) * (best_y - y)
            best_y = y
    return float(area)


def front_hypervolume(accuracy: np.ndarray, cost: np.ndarray, reference: tuple[float, float], *,
                      normalize: bool = False) -> float:
    """Hypervolume of (accuracy maximized, cost minimized) points: the area they dominate up to the
    `reference` point (accuracy, cost); points with no more accuracy or no less cost add nothing.
    `normalize`: as a fraction of the box between the reference point and (accuracy 1, cost 0)."""
    accuracy, cost = np.asarray(accuracy, dtype=float), np.asarray(cost, dtype=float)
    if len(accuracy) == 0:
        return 0.0
    hv = hypervolume_2d(np.column_stack([-accuracy, cost]), np.array([-reference[0], reference[1]]))
    return hv / ((1.0 - reference[0]) * reference[1]) if normalize else hv


def hypervolume_reference(limit: float | None, *, accuracy: float = 0.0,
                          without_limit: Callable[[], float] | None = None) -> tuple[float, float]:
    """The hypervolume's reference point (accuracy, cost): the cost objective's limit, so that every
    feasible subnet counts; without a limit, `without_limit()` (a cost the subnets of interest stay
    under, chosen by the caller)."""
    if limit is not None:
        return accuracy, float(limit)
    if without_limit is None:
        raise ValueError("hypervolume_reference: no limit, and no cost to use without one")
    return accuracy, float(without_limit())


def hypervolume_improvement(front: np.ndarray, points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """For each row of `points` (n, 2), the 2-D hypervolume it adds to `front` (m, 2), both minimized,
    within the box bounded by `ref`: the integral over x of the height between the point and the
    front's staircase."""
    if len(points) == 0:
        return np.zeros(0)
    order = np.argsort(front[:, 0], kind="stable")
    fx, fy = front[order, 0], np.minimum.accumulate(front[order, 1])  # staircase: lowest y so far
    lo = np.concatenate([[-np.inf], fx])  # interval j = [lo_j, hi_j) has height h_j
    hi = np.concatenate([fx, [np.inf]])
    h = np.minimum(np.concatenate([[ref[1]], fy]), ref[1])
    px, py = points[:, :1], points[:, 1:2]
    width = np.clip(np.minimum(hi, ref[0]) - np.maximum(lo, px), 0.0, None)  # (n, m + 1)
    height = np.clip(h - py, 0.0, None)
    return (width * height).sum(axis=1)


def plot_front(path: Path, *, cost: np.ndarray, accuracy: np.ndarray, feasible: np.ndarray, front: list[int],
               chosen: int | None, limit: float | None, xlabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ax.scatter(cost[feasible], accuracy[feasible], s=12, c="tab:blue", alpha=0.45, label="evaluated (feasible)")
    if (~feasible).any():
        ax.scatter(cost[~feasible], accuracy[~feasible], s=14, c="tab:red", marker="x", alpha=0.6,
                   label="evaluated (breaks a limit)")
    if front:
        ax.step(cost[front], accuracy[front], where="post", c="black", lw=1.2)
        ax.scatter(cost[front], accuracy[front], s=26, c="black", label="Pareto front")
    if chosen is not None:
        ax.scatter([cost[chosen]], [accuracy[chosen]], s=160, marker="*", c="gold", edgecolors="black",
                   zorder=5, label="chosen subnet")
    if limit is not None:
        ax.axvline(limit, ls="--", c="tab:red", lw=1, label=f"limit {limit:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation accuracy (inherited weights)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    try:
        write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
