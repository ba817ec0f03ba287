"""The search: strategies (ask/tell), the loop that drives them, Pareto utilities."""
