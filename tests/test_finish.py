"""The finishing stage: its config, the three ways to finish, the best epoch kept, the choice among finalists."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nas.errors import UserError
from nas.evaluation.accuracy import accuracy_and_loss
from nas.finish.finetune import (
    FinishConfig,
    choose_after_finishing,
    finish_steps,
    finish_subnet,
    scratch_steps,
)
from nas.runs.files import load_supernet
from nas.training.config import TrainConfig
from nas.training.train import train_standalone
from search_spaces import SubnetModel
from tests.helpers import few_digits, same_weights, tiny_supernet


@pytest.fixture(scope="module")
def data():
    return few_digits(192)  # 3 steps an epoch at batch size 64


@pytest.fixture(scope="module")
def supernet(trained_run):
    return load_supernet(trained_run)


@pytest.fixture(scope="module")
def arch(supernet):
    return supernet.space.smallest()


def finish(supernet, arch, data, **config):
    """`finish_subnet`, fine-tuning unless `how` says otherwise."""
    return finish_subnet(supernet, arch, data, FinishConfig(**{"how": "finetune", **config}), show_progress=False)


@pytest.mark.parametrize(("change", "message"), [
    ({"how": "retrain"}, r"how must be one of \['inherit', 'finetune', 'scratch'\], got 'retrain'"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"steps": 2.5}, "steps must be an integer, got 2.5"),
    ({"steps": 0}, "steps must be >= 1"),
    ({"steps": 10, "epochs": 2}, r"steps and epochs are alternatives: give one, not both \(got 10 and 2\)"),
    ({"budget": 0}, "budget must be > 0"),
    ({"patience": -1}, "patience must be >= 0"),
    ({"warmup_epochs": -1}, "warmup_epochs must be >= 0"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
    ({"select": "test_acc"}, "select must be one of"),
    ({"augment": "yes"}, "augment must be true or false"),
    ({"seed": -1}, r"seed must be in \[0, 2\*\*63\)"),
])
def test_config_errors_name_the_field(change, message):
    with pytest.raises(UserError, match=message):
        FinishConfig(**change)


def test_config_round_trips_and_refuses_unknown_keys():
    config = FinishConfig(how="scratch", epochs=3, augment=True)
    assert FinishConfig.from_dict(config.to_dict()) == config
    with pytest.raises(UserError, match=r"finish config: unknown keys \['lr_max'\]"):
        FinishConfig.from_dict({"lr_max": 1.0})


def test_budget_is_a_fraction_of_the_from_scratch_steps(data):
    assert scratch_steps(data) == 334 * 3  # the default budget: 40 epochs, at least 1,000 steps in whole epochs
    assert finish_steps(FinishConfig(how="finetune"), data) == 501
    assert finish_steps(FinishConfig(how="scratch"), data) == 1002  # from scratch: the whole default budget
    assert finish_steps(FinishConfig(how="finetune", budget=0.001), data) == 1
    assert finish_steps(FinishConfig(epochs=2), data) == 6
    assert finish_steps(FinishConfig(steps=7), data) == 7


def test_inherit_returns_the_inherited_weights_unchanged(supernet, arch, data):
    result = finish(supernet, arch, data, how="inherit")
    assert same_weights(result.model.state_dict(), supernet.extract(arch).state_dict())
    r = result.record
    assert (r.how, r.steps, r.best_step, r.seconds) == ("inherit", 0, 0, 0.0)
    assert (r.val_acc_after, r.val_loss_after, r.test_acc_after) == (r.val_acc_before, r.val_loss_before, r.test_acc_before)
    assert (r.val_acc_before, r.val_loss_before) == accuracy_and_loss(supernet.extract(arch), data.val)


def test_finetune_improves_validation_loss_and_leaves_the_supernet_alone(supernet, arch, data):
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    result = finish(supernet, arch, data, epochs=4, patience=0)
    r = result.record
    assert r.val_loss_after < r.val_loss_before and r.best_step > 0
    assert (r.val_acc_after, r.val_loss_after) == accuracy_and_loss(result.model, data.val)
    assert [h["step"] for h in result.history] == [3, 6, 9, 12] and r.steps == 12
    assert same_weights(supernet.state_dict(), before)
    assert not result.model.training


def test_the_best_epoch_is_kept(supernet, arch, data):
    # a learning rate warming up to a huge peak: the first epochs improve, the later ones get worse
    result = finish(supernet, arch, data, lr=0.12, epochs=5, warmup_epochs=5, patience=0, select="val_loss")
    losses = {h["step"]: h["val_loss"] for h in result.history}
    r = result.record
    assert 0 < r.best_step < r.steps == 15, losses  # the case is what it should be: the best in the middle
    assert r.best_step == min(losses, key=lambda step: losses[step]) and losses[r.best_step] < r.val_loss_before
    assert r.val_loss_after == losses[r.best_step] == accuracy_and_loss(result.model, data.val)[1]
    # with patience 1, the first epoch without improvement on the best so far ends training
    best, end = r.val_loss_before, None
    for step, loss in losses.items():
        if loss >= best:
            end = step
            break
        best = loss
    early = finish(supernet, arch, data, lr=0.12, epochs=5, warmup_epochs=5, patience=1, select="val_loss")
    assert early.record.steps == end and early.record.val_loss_after == best


def test_select_last_keeps_the_last_epoch(supernet, arch, data):
    result = finish(supernet, arch, data, lr=0.1, epochs=5, warmup_epochs=5, select="last")
    assert result.record.best_step == result.record.steps == 15 and len(result.history) == 5
    assert "val_loss" not in result.history[-1]  # no validation during training


def test_the_default_finishing_is_the_fine_tune_its_last_epoch_kept():
    assert (FinishConfig().how, FinishConfig().selection) == ("finetune", "last")
    assert FinishConfig(how="scratch").selection == "last" and FinishConfig(select="val_acc").selection == "val_acc"


def test_scratch_is_the_default_recipe_from_a_seeded_initialisation(supernet, arch, data):
    result = finish(supernet, arch, data, how="scratch", steps=6, seed=3)  # select "auto": the last epoch
    torch.manual_seed(3)
    model = SubnetModel(supernet.spec, arch)
    train_standalone(model, data, TrainConfig(seed=3), steps=6)
    assert same_weights(result.model.state_dict(), model.state_dict())


def test_scratch_ignores_the_inherited_weights(supernet, arch, data):
    a = finish(supernet, arch, data, how="scratch", steps=6)
    b = finish(tiny_supernet(seed=1), arch, data, how="scratch", steps=6)  # other weights, same architecture
    assert same_weights(a.model.state_dict(), b.model.state_dict())
    assert a.record.val_loss_before != b.record.val_loss_before  # the inherited weights did differ
    tuned = finish(supernet, arch, data, steps=6)
    assert not same_weights(a.model.state_dict(), tuned.model.state_dict())


@pytest.mark.parametrize("how", ["finetune", "scratch"])
def test_the_same_seed_gives_the_same_weights(supernet, arch, data, how):
    a = finish(supernet, arch, data, how=how, steps=6, augment=True)
    b = finish(supernet, arch, data, how=how, steps=6, augment=True)
    c = finish(supernet, arch, data, how=how, steps=6, augment=True, seed=1)
    assert same_weights(a.model.state_dict(), b.model.state_dict())
    assert not same_weights(a.model.state_dict(), c.model.state_dict())
    assert a.record.best_step == b.record.best_step


def test_stop_ends_training_with_the_best_weights_so_far(supernet, arch, data):
    result = finish_subnet(supernet, arch, data, FinishConfig(steps=30), show_progress=False, stop=lambda: True)
    assert result.record.stopped and result.record.steps == 1 and len(result.history) == 1


def test_a_fine_tune_can_start_from_given_weights(supernet, arch, data):
    start = supernet.extract(arch)
    with torch.no_grad():
        for p in start.parameters():
            p.mul_(0.5)  # not the inherited weights any more
    halved = {k: v.clone() for k, v in start.state_dict().items()}
    result = finish_subnet(supernet, arch, data, FinishConfig(how="finetune", steps=3, patience=0, select="last"),
                           show_progress=False, start=start)
    assert result.model is start and not same_weights(start.state_dict(), halved)  # trained in place
    inherited = finish(supernet, arch, data, how="inherit")
    assert result.record.val_acc_before == inherited.record.val_acc_before  # "before" stays the inherited weights'
    for how, other in (("scratch", arch), ("finetune", supernet.space.largest())):
        with pytest.raises(ValueError, match="start: a model of"):
            finish_subnet(supernet, other, data, FinishConfig(how=how, steps=1), show_progress=False, start=start)


def test_choose_after_finishing_by_accuracy_then_loss(supernet, arch, data):
    result = finish(supernet, arch, data, how="inherit")

    def scored(acc, loss):
        return dataclasses.replace(result, record=dataclasses.replace(result.record, val_acc_after=acc, val_loss_after=loss))

    assert choose_after_finishing([scored(0.9, 0.3), scored(0.95, 0.5), scored(0.9, 0.1)]) == 1
    assert choose_after_finishing([scored(0.9, 0.3), scored(0.9, 0.2), scored(0.9, 0.25)]) == 1  # tie: the loss
    assert choose_after_finishing([scored(0.9, 0.2), scored(0.9, 0.2)]) == 0  # full tie: the earliest
    assert choose_after_finishing([scored(0.9, float("nan")), scored(0.9, 5.0)]) == 1
    # a search that ranks by the loss (a small validation split) chooses by it too, then by accuracy
    assert choose_after_finishing([scored(0.9, 0.3), scored(0.95, 0.5), scored(0.9, 0.1)], by="val_loss") == 2
    assert choose_after_finishing([scored(0.9, 0.2), scored(0.95, 0.2)], by="val_loss") == 1
    assert choose_after_finishing([scored(0.9, float("nan")), scored(0.1, 5.0)], by="val_loss") == 1
    with pytest.raises(ValueError, match="at least one"):
        choose_after_finishing([])
