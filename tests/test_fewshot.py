"""Few-shot supernets: the sub-spaces of a decision, sampling within one, the copies' steps, and
the split training that routes each subnet to its copy (nas.training.subspace, nas.training.fewshot)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from benchmarks.ranking_fidelity import parse_rule
from nas.data.datasets import Split, TaskData, load_data
from nas.errors import FieldError, UserError
from nas.training.checkpoint import read_checkpoint
from nas.training.config import TrainConfig
from nas.training.fewshot import FewShotConfig, copy_steps, train_fewshot
from nas.training.sampling import UniformSampler, make_sampler
from nas.training.subspace import DECISIONS, Subspace, shares
from nas.training.train import train_supernet
from search_spaces import HybridSupernet, SearchSpace, SpaceConfig, get_space
from tests.helpers import same_weights

SEQ = get_space("seq")
MICRO = SpaceConfig.from_dict({  # the `seq` layout at a size that trains in a second, for `digit_rows`
    "name": "micro-fewshot", "dims": 1, "in_channels": 1, "num_classes": 10, "input_size": 64, "resolutions": [64],
    "stem_widths": [8], "stages": [{"depths": [1, 2], "widths": [8], "strides": [1],
                                    "block_types": ["conv", "attn"]}],
    "kernels": [3], "expand_ratios": [2], "mixers": ["softmax", "linear", "window"], "heads": [1],
    "mlp_ratios": [2], "head_dim": 4, "window": 4, "layout": "free",
})


def test_mixer0_partitions_the_seq_space_by_the_first_layer():
    share = shares(SEQ, "mixer0")
    assert list(share) == ["conv", "softmax", "linear", "window"]
    assert sum(share.values()) == pytest.approx(1.0)
    assert share["conv"] == pytest.approx(0.5, abs=0.03)  # conv or attention, then one of three mixers
    assert all(s == pytest.approx(1 / 6, abs=0.03) for c, s in share.items() if c != "conv")
    assert shares(SEQ, "type0") == {"conv": share["conv"], "attn": pytest.approx(1 - share["conv"])}
    rng = np.random.default_rng(0)
    for arch in (SEQ.sample(rng) for _ in range(50)):  # every subnet lies in exactly one sub-space
        assert sum(Subspace("mixer0", c).contains(arch) for c in share) == 1
    with pytest.raises(FieldError, match=r"^by must be one of"):
        Subspace("mixer9", "conv")


def test_uniform_sampling_within_a_subspace_draws_only_from_it():
    within = Subspace("mixer0", "linear")
    sampler = UniformSampler(SEQ, num_random=4, seed=0, within=within)
    drawn = [d.arch for _ in range(25) for d in sampler.draws()]
    assert all(within.contains(a) for a in drawn) and len(set(drawn)) > 90  # still random inside it
    again = make_sampler("uniform", SEQ, num_random=4, seed=0, within=within)
    assert [d.arch for d in again.draws()] == drawn[:4]  # reproducible from its seed
    with pytest.raises(UserError, match="for the uniform rule"):
        make_sampler("sandwich", SEQ, num_random=2, seed=0, within=within)


def test_copies_share_the_remaining_steps_in_proportion_or_each_get_them_all():
    share = {"conv": 0.5, "softmax": 1 / 6, "linear": 1 / 6, "window": 1 / 6, "pool": 0.0}
    equal = copy_steps(405, share, "equal")
    assert list(equal) == ["conv", "softmax", "linear", "window"]  # a choice no subnet makes has no copy
    assert sum(equal.values()) == 405 and equal["conv"] in (202, 203)
    assert all(abs(n - 67.5) < 1 for c, n in equal.items() if c != "conv")
    assert copy_steps(405, share, "each") == dict.fromkeys(equal, 405)


@pytest.mark.parametrize(("fields", "field"), [({"split": 1.0}, "split"), ({"split": "half"}, "split"),
                                               ({"by": "depth"}, "by"), ({"compute": "more"}, "compute"),
                                               ({"schedule": "cyclic"}, "schedule"),
                                               ({"schedule": "continue"}, "schedule")])
def test_fewshot_config_names_the_field_it_refuses(fields, field):
    with pytest.raises(FieldError, match=f"^{field} must be"):
        FewShotConfig(**fields)


def test_the_benchmark_rule_carries_fewshot_and_recipe_fields(capsys):
    config, fewshot = parse_rule("fewshot:split=0.25:by=type0:compute=each:num_random=4:lr=0.003", TrainConfig(), 1)
    assert (config.sampling, config.num_random, config.lr) == ("uniform", 4, 0.003)
    assert fewshot == FewShotConfig(split=0.25, by="type0", compute="each")
    assert parse_rule("uniform:num_random=4", TrainConfig(), 1) == (TrainConfig(sampling="uniform", num_random=4), None)
    with pytest.raises(SystemExit, match="by must be one of"):
        parse_rule("fewshot:by=depth", TrainConfig(), 1)
    with pytest.raises(SystemExit, match=re.escape("split=0.5")):  # a few-shot field is no other rule's
        parse_rule("uniform:split=0.5", TrainConfig(), 1)


def digit_rows(n: int) -> TaskData:
    """The digits as sequences of 64 pixels (quicker to load than mnist1d): `n` training rows."""
    data = load_data("digits")

    def rows(split: Split, stop: int | None = None) -> Split:
        return Split(split.x[:stop].flatten(2), split.y[:stop])

    return dataclasses.replace(data, train=rows(data.train, n), val=rows(data.val), test=rows(data.test),
                               input_size=64, dims=1)


@pytest.mark.parametrize("compute", ["equal", "each"])
def test_each_copy_trains_its_subspace_and_serves_its_subnets(compute):
    data = digit_rows(128)
    space = SearchSpace(MICRO)
    torch.manual_seed(0)
    base = HybridSupernet(space)
    config = TrainConfig(steps=16, batch_size=32, sampling="uniform", num_random=1, warmup_epochs=0)
    model, summary = train_fewshot(base, data, config, FewShotConfig(split=0.5, by="mixer0", compute=compute))
    assert summary["base_steps"] == 8 and set(model.copies) == {"conv", "softmax", "linear", "window"}
    assert summary["steps"] == 8 + (8 if compute == "equal" else 4 * 8)
    first = {name: copy.slots[0][0] for name, copy in model.copies.items()}  # the first layer's weights
    # a copy never draws the first layer's other block type: those weights stay the one-shot supernet's
    assert same_weights(first["linear"].conv.state_dict(), base.slots[0][0].conv.state_dict())
    assert same_weights(first["conv"].attn.state_dict(), base.slots[0][0].attn.state_dict())
    assert not same_weights(first["conv"].conv.state_dict(), base.slots[0][0].conv.state_dict())
    rng = np.random.default_rng(1)
    x = data.val.x[:4]
    for arch in (space.sample(rng) for _ in range(6)):
        choice = DECISIONS["mixer0"].choice(arch)
        assert model.copy_for(arch) is model.copies[choice]
        torch.testing.assert_close(model(x, arch), model.copies[choice](x, arch))
        torch.testing.assert_close(model.extract(arch).eval()(x), model.eval()(x, arch))


def test_continued_copies_resume_the_one_shot_schedule_where_it_paused(tmp_path):
    data = digit_rows(128)
    space = SearchSpace(MICRO)
    config = TrainConfig(steps=16, batch_size=32, sampling="uniform", num_random=1, warmup_epochs=0)
    torch.manual_seed(0)
    base = HybridSupernet(space)
    fewshot = FewShotConfig(split=0.5, by="mixer0", compute="each", schedule="continue")
    model, summary = train_fewshot(base, data, config, fewshot, workdir=tmp_path)
    assert summary["base_steps"] == 8 and summary["steps"] == 8 + 4 * 8
    # the one-shot supernet trained exactly as far as a plain run of the whole schedule paused at step 8
    torch.manual_seed(0)
    plain = HybridSupernet(space)
    assert train_supernet(plain, data, config, checkpoint=tmp_path / "plain.safetensors", pause_at=8,
                          show_progress=False) == {"paused_at": 8}
    assert same_weights(base.state_dict(), plain.state_dict())
    # each copy went on from there, in its sub-space, to the schedule's end: its checkpoint says step 16
    for choice, copy in model.copies.items():
        assert read_checkpoint(tmp_path / f"fewshot-{choice}.safetensors")[1]["progress"]["step"] == 16
        assert not same_weights(copy.state_dict(), base.state_dict())
    with pytest.raises(ValueError, match="needs a workdir"):
        train_fewshot(HybridSupernet(space), data, config, fewshot)
