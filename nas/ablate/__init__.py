"""Research ablations: `nas ablate CONFIG` sweeps as Ray Tune trials, their config and report."""
