"""The tables and plots of an ablation sweep: one row per search trial in, mean ± std over seeds out.

`summary.csv` groups the finished trials by sampling rule, method (strategy, with its predictor
family) and budget; `hypervolume.png` and `best_val_acc.png` show one panel per sampling rule
(shared y axis) and one line per method over the budgets, with error bars of one standard deviation.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nas.evaluation.limits import OBJECTIVE_LABELS
from nas.runs.files import write_atomically, write_text

METRICS = ("hypervolume", "best_val_acc", "test_acc")  # averaged over seeds in summary.csv


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each setting's finished trials."""
    keys = ["sampling", "method", "budget"]
    done = table[table["status"] == "done"]
    groups = done.groupby(keys, sort=False)
    summary = groups[list(METRICS)].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary["seeds"] = groups.size()
    return summary.reset_index()


def write_results(out: Path, table: pd.DataFrame, objective: str) -> pd.DataFrame:
    write_text(out / "results.csv", table.to_csv(index=False))
    summary = summarize(table)
    write_text(out / "summary.csv", summary.to_csv(index=False))
    cost = OBJECTIVE_LABELS[objective]
    plot_metric(summary, "hypervolume", "hypervolume (fraction of the box)", out / "hypervolume.png",
                title=f"hypervolume of validation accuracy vs {cost}, mean ± std over seeds")
    plot_metric(summary, "best_val_acc", "best feasible validation accuracy", out / "best_val_acc.png",
                title="most accurate subnet within the limits, mean ± std over seeds")
    return summary


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table, mean ± std over seeds."""
    head = ["sampling", "method", "budget", *METRICS, "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in summary.iterrows():
        cells = [str(row["sampling"]), str(row["method"]), str(row["budget"])]
        cells += [_mean_std(row[f"{m}_mean"], row[f"{m}_std"]) for m in METRICS] + [str(row["seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_std(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"


def plot_metric(summary: pd.DataFrame, metric: str, label: str, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = list(dict.fromkeys(summary["sampling"]))
    budgets = list(dict.fromkeys(summary["budget"]))
    fig, axes = plt.subplots(1, max(1, len(rules)), figsize=(1.5 + 4 * max(1, len(rules)), 4), dpi=120,
                             sharey=True, squeeze=False)
    for ax, rule in zip(axes[0], rules):
        for method, rows in summary[summary["sampling"] == rule].groupby("method", sort=False):
            ax.errorbar([budgets.index(b) for b in rows["budget"]], rows[f"{metric}_mean"],
                        yerr=rows[f"{metric}_std"].fillna(0.0), marker="o", capsize=3, label=method)
        ax.set_xticks(range(len(budgets)), [str(b) for b in budgets])
        ax.set_xlim(-0.5, len(budgets) - 0.5)
        ax.set_xlabel("budget (evaluations or time)")
        ax.set_title(f"sampling: {rule}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(label)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
