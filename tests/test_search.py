"""Strategies, Pareto utilities, budgets and training pieces."""

from __future__ import annotations

import json

import pytest
import torch

from nas.data.datasets import Split, TaskData
from nas.errors import RetryWarning, UserError
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.hardware.measure import LatencySettings
from nas.search.loop import MAX_REPEATS, Budget, run_search
from search_spaces import HybridSupernet, SearchSpace, SpaceConfig, get_space


def _two_subnets() -> SearchSpace:
    """A 1-D space of exactly two subnets (widths 8 and 16), trained in no time."""
    return SearchSpace(SpaceConfig.from_dict({
        "name": "two", "dims": 1, "in_channels": 3, "num_classes": 4, "input_size": 12, "resolutions": [12],
        "stem_widths": [8], "stages": [{"depths": [1], "widths": [8, 16], "strides": [1], "block_types": ["conv"]}],
        "kernels": [3], "expand_ratios": [2], "mixers": ["softmax"], "heads": [1], "mlp_ratios": [2],
        "head_dim": 4, "layout": "free"}))


def _evaluator(space: SearchSpace) -> Evaluator:
    """An untrained supernet of `space` evaluated on a few random inputs of its shape."""
    torch.manual_seed(0)
    supernet = HybridSupernet(space)
    spec = supernet.spec
    shape = (8, spec.in_channels) + (spec.input_size,) * spec.dims
    data = TaskData("fake", *(Split(torch.randn(shape), torch.arange(8) % spec.num_classes) for _ in range(3)),
                    num_classes=spec.num_classes, in_channels=spec.in_channels, input_size=spec.input_size,
                    dims=spec.dims, mean=(0.0,) * spec.in_channels, std=(1.0,) * spec.in_channels)
    return Evaluator(supernet, data, LatencySettings())


def test_search_says_when_the_strategy_proposes_only_evaluated_subnets(tmp_path):
    space = _two_subnets()
    assert space.size() == 2
    with pytest.warns(RetryWarning, match=f"none of {MAX_REPEATS} draws of a proposal of strategy 'random' was a "
                                          "subnet not evaluated yet; the search stops after 2 evaluations, short of "
                                          "its budget of 10 evaluations"):
        summary = run_search(_evaluator(space), tmp_path, budget=Budget(evaluations=10), limits=Limits(),
                             strategy="random", seed=0, objective="flops", show_progress=False)
    assert summary["evaluations"] == 2 and summary["retries_exhausted"] == {"prefilter": 0, "repeats": 1}


def test_search_counts_proposals_that_no_redraw_made_pass_the_prefilter(tmp_path):
    space = get_space("tiny")
    impossible = Limits(max_params=1)  # the prefilter (parameter count) rejects every subnet
    with pytest.warns(RetryWarning, match="passed the prefilter"), pytest.raises(UserError, match="none of the 2"):
        run_search(_evaluator(space), tmp_path, budget=Budget(evaluations=2), limits=impossible, strategy="random",
                   seed=0, objective="flops", show_progress=False, check_limits=False)
    summary = json.loads((tmp_path / "search.json").read_text())
    assert summary["evaluations"] == 2 and summary["feasible"] == 0
    assert summary["retries_exhausted"] == {"prefilter": 2, "repeats": 0}


@pytest.mark.parametrize("text, evaluations, seconds", [
    ("200", 200, None), ("90s", None, 90.0), ("10m", None, 600.0), ("1h", None, 3600.0), ("1.5h", None, 5400.0),
])
def test_budget_parse(text, evaluations, seconds):
    b = Budget.parse(text)
    assert (b.evaluations, b.seconds) == (evaluations, seconds)


@pytest.mark.parametrize("text", ["", "ten", "10x", "-5", "0", "0s", "5 minutes"])
def test_budget_rejects_malformed(text):
    with pytest.raises(UserError):
        Budget.parse(text)






