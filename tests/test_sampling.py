"""Best-of-k sampling (`best_of`): k candidates per random slot, drawn deterministically; the
training step trains the candidate with the lowest loss on its batch, with no other effect. The
progressive rule: its phases in order, the last one the uniform rule, and exact resume."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas.data.datasets import Split
from nas.errors import FieldError, UserError
from nas.training.checkpoint import CHECKPOINT_FILE
from nas.training.config import TrainConfig
from nas.training.parallel import DataParallel
from nas.training.sampling import PHASES, Draw, ProgressiveSampler, make_sampler, phase_config
from nas.training.train import _step_losses, train_supernet
from search_spaces import SearchSpace, get_space
from search_spaces.arch import ArchError
from tests.helpers import few_digits, max_weight_diff, stop_training_after, tiny_supernet

SPACE = get_space("tiny")
RULES = ["uniform", "sandwich", "complexity"]


@pytest.fixture(scope="module")
def digits():
    data = few_digits(32)
    return dataclasses.replace(data, val=Split(data.val.x[:16], data.val.y[:16]))  # evaluated after every epoch


def test_best_of_one_draws_what_the_rules_drew_before():
    """best_of=1 is the rules as they were: one subnet per slot, from the same generator calls."""
    rng = np.random.default_rng(5)
    uniform = make_sampler("uniform", SPACE, num_random=3, seed=5, best_of=1).draws()
    assert uniform == [Draw(SPACE.sample(rng), "label") for _ in range(3)]
    rng = np.random.default_rng(5)
    sandwich = make_sampler("sandwich", SPACE, num_random=2, seed=5).draws()
    assert sandwich == [Draw(SPACE.largest(), "teacher"), Draw(SPACE.smallest(), "student"),
                        *(Draw(SPACE.sample(rng), "student") for _ in range(2))]
    complexity = make_sampler("complexity", SPACE, num_random=2, seed=5).draws()
    assert all(not d.rivals and d.candidates == (d.arch,) for d in complexity)


@pytest.mark.parametrize("rule", RULES)
def test_best_of_k_gives_k_candidates_to_each_random_slot_only(rule):
    plain = make_sampler(rule, SPACE, num_random=2, seed=3)
    sampler = make_sampler(rule, SPACE, num_random=2, seed=3, best_of=3)
    for _ in range(4):
        draws, roles = sampler.draws(), [d.role for d in plain.draws()]
        assert [d.role for d in draws] == roles  # the same slots
        fixed = {"uniform": 0, "sandwich": 2, "complexity": 1}[rule]  # the largest (and smallest) first
        assert all(len(d.candidates) == 1 for d in draws[:fixed])
        assert all(len(d.candidates) == 3 and len(set(d.candidates)) == 3 for d in draws[fixed:])
    if rule == "uniform":  # the candidates are the generator's draws in order, slot after slot
        rng = np.random.default_rng(3)
        again = make_sampler(rule, SPACE, num_random=2, seed=3, best_of=3).draws()
        assert [a for d in again for a in d.candidates] == [SPACE.sample(rng) for _ in range(6)]


@pytest.mark.parametrize("rule", RULES)
def test_best_of_k_sampler_state_resumes_the_same_candidates(rule):
    a = make_sampler(rule, SPACE, num_random=2, seed=7, best_of=2)
    for _ in range(3):
        a.draws()
    b = make_sampler(rule, SPACE, num_random=2, seed=99, best_of=2)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert [a.draws() for _ in range(3)] == [b.draws() for _ in range(3)]


def _grads(supernet) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in supernet.named_parameters() if p.grad is not None}
    supernet.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("distilled", [False, True])
def test_the_step_trains_the_candidate_with_the_lowest_batch_loss(distilled, digits):
    """A label slot judged by cross-entropy, a distilled student by its KL to the teacher: the
    gradients are those of the lowest-loss candidate alone, and judging changes no weight or buffer."""
    supernet = tiny_supernet()
    x, y = torch.as_tensor(digits.train.x[:32]), torch.as_tensor(digits.train.y[:32])
    config = TrainConfig(distill=distilled)
    teacher = Draw(SPACE.largest(), "teacher")
    role = "student" if distilled else "label"
    archs = [SPACE.sample(np.random.default_rng(s)) for s in range(3)]
    with torch.no_grad():
        probs = F.softmax(supernet(x, teacher.arch), dim=1)
        losses = [F.kl_div(F.log_softmax(supernet(x, a), dim=1), probs, reduction="batchmean") if distilled
                  else F.cross_entropy(supernet(x, a), y, label_smoothing=config.label_smoothing) for a in archs]
    order = sorted(range(3), key=lambda i: -float(losses[i]))  # the best candidate last, not first
    ranked = [archs[i] for i in order]
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    head = [teacher] if distilled else []
    _step_losses(supernet, x, y, [*head, Draw(ranked[0], role, tuple(ranked[1:]))], config)
    chosen = _grads(supernet)
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())
    for arch, expected in ((ranked[-1], True), (ranked[0], False)):
        _step_losses(supernet, x, y, [*head, Draw(arch, role)], config)
        alone = _grads(supernet)
        same = chosen.keys() == alone.keys() and all(torch.allclose(chosen[k], alone[k]) for k in chosen)
        assert same == expected, arch


def test_best_of_k_training_resumes_to_the_same_weights(tmp_path, digits):
    data = digits
    config = TrainConfig(epochs=2, batch_size=16, warmup_epochs=0, sampling="uniform", num_random=1, best_of=2)
    straight = tiny_supernet()
    train_supernet(straight, data, config, show_progress=False)
    ckpt = tmp_path / CHECKPOINT_FILE
    stop_training_after(4, data, config, ckpt)  # polled after each step and at each epoch's end: mid-epoch 2
    resumed = tiny_supernet(seed=1)
    train_supernet(resumed, data, config, checkpoint=ckpt, resume=True, show_progress=False)
    assert max_weight_diff(straight, resumed) == 0.0


def test_best_of_is_checked_and_refused_in_data_parallel_training(digits):
    with pytest.raises(FieldError, match="best_of must be >= 1, got 0"):
        TrainConfig(best_of=0)
    parallel = DataParallel(rank=0, world=1, all_reduce=lambda t: None, epoch_end=lambda h: None)
    config = TrainConfig(steps=1, best_of=2)
    with pytest.raises(FieldError, match="best_of must be 1 in data-parallel training"):
        train_supernet(tiny_supernet(), digits, config, show_progress=False, parallel=parallel)


def _in(config, arch) -> bool:
    try:
        SearchSpace(config).validate(arch)
        return True
    except ArchError:
        return False


@pytest.mark.parametrize("name", ["tiny", "seq"])
def test_progressive_phases_unlock_one_dimension_after_another(name):
    """Each phase draws inside its sub-space and, across its draws, outside the previous one's (the
    dimension it unlocks varies); the first draws full-size subnets of varied operations."""
    space = get_space(name)
    sampler = make_sampler("progressive", space, num_random=4, seed=1, total_steps=160)
    assert sampler.starts == (40, 80, 120)
    phases = [[d.arch for _ in range(40) for d in sampler.draws()] for _ in PHASES]
    for p, archs in enumerate(phases):
        assert all(_in(phase_config(space.config, p), a) for a in archs), PHASES[p]
        if p:
            assert not all(_in(phase_config(space.config, p - 1), a) for a in archs), PHASES[p]
    largest = space.largest()
    first = phases[0]
    assert all(a.stem_width == largest.stem_width and [s.depth for s in a.stages] == [s.depth for s in largest.stages]
               and [s.width for s in a.stages] == [s.width for s in largest.stages] for a in first)
    assert len({tuple(type(b).__name__ + getattr(b, "mixer", "") for b in a.blocks) for a in first}) > 1
    assert phase_config(space.config, len(PHASES) - 1) == space.config


def test_progressive_last_phase_draws_what_the_uniform_rule_draws():
    sampler = ProgressiveSampler(SPACE, num_random=3, seed=4, total_steps=8, phase_share=0.25)
    for _ in range(6):
        sampler.draws()
    rng = np.random.default_rng()
    rng.bit_generator.state = sampler.rng.bit_generator.state
    assert [d.arch for d in sampler.draws()] == [SPACE.sample(rng) for _ in range(3)]


def test_progressive_sampler_resumes_in_its_phase():
    a = make_sampler("progressive", SPACE, num_random=2, seed=7, total_steps=12, phase_share=0.3, best_of=2)
    for _ in range(5):
        a.draws()
    b = make_sampler("progressive", SPACE, num_random=2, seed=99, total_steps=12, phase_share=0.3, best_of=2)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.phase == a.phase == 1
    assert [a.draws() for _ in range(7)] == [b.draws() for _ in range(7)]  # across two phase changes
    other = make_sampler("progressive", SPACE, num_random=2, seed=7, total_steps=13)
    with pytest.raises(UserError, match="spans 12 steps, this run's 13"):
        other.load_state_dict(a.state_dict())


def test_progressive_training_resumes_to_the_same_weights(tmp_path, digits):
    """4 steps, one per phase; stopped after step 3 (mid-epoch 2), resumed in the last phase."""
    config = TrainConfig(epochs=2, batch_size=16, warmup_epochs=0, sampling="progressive", num_random=1)
    straight = tiny_supernet()
    train_supernet(straight, digits, config, show_progress=False)
    ckpt = tmp_path / CHECKPOINT_FILE
    stop_training_after(4, digits, config, ckpt)
    resumed = tiny_supernet(seed=1)
    train_supernet(resumed, digits, config, checkpoint=ckpt, resume=True, show_progress=False)
    assert max_weight_diff(straight, resumed) == 0.0


def test_progressive_options_are_checked():
    for share in (0.0, 1 / 3, 0.5, -0.1):
        with pytest.raises(FieldError, match="phase_share must be in \\(0, 1/3\\)"):
            TrainConfig(sampling="progressive", phase_share=share)
    with pytest.raises(FieldError, match="phase_share must be a finite number"):
        TrainConfig.from_dict({"phase_share": "0.2"})
    with pytest.raises(UserError, match="needs the run's total steps"):
        make_sampler("progressive", SPACE, num_random=2, seed=0)
    with pytest.raises(FieldError, match="total_steps must be >= 1, got 0"):
        make_sampler("progressive", SPACE, num_random=2, seed=0, total_steps=0)


@pytest.mark.parametrize("rule", ["uniform", "complexity", "progressive"])
def test_a_rule_that_needs_random_subnets_refuses_none(rule):
    # these rules once trained one random subnet a step when given none, without a word
    with pytest.raises(FieldError, match=f"num_random must be >= 1 with the {rule} rule, got 0"):
        TrainConfig(sampling=rule, num_random=0)
    with pytest.raises(FieldError, match="num_random must be >= 1"):
        make_sampler(rule, get_space("tiny"), num_random=0, seed=0, total_steps=10)
    assert TrainConfig(sampling="sandwich", num_random=0).num_random == 0  # the largest and smallest still train
