"""Sampling rules: which subnets one supernet training step runs, and how each is trained.

- ``uniform``: ``num_random`` subnets drawn uniformly from the space, each trained on the labels
  (single-path one-shot, Guo et al. 2020, when ``num_random`` is 1); with ``within``, uniformly
  from one sub-space (`nas.training.subspace`: a copy of a few-shot supernet).
- ``sandwich``: the largest subnet on the labels, the smallest and ``num_random`` random subnets
  distilled from the largest one's predictions (BigNAS, Yu et al. 2020; AttentiveNAS).
- ``complexity``: complexity-aware sampling (ElasticViT, Tang et al. 2023): the largest subnet as
  teacher plus ``num_random`` subnets whose FLOPs lie in one band of the space's FLOPs range. The
  band moves by at most one step between consecutive training steps (a reflecting random walk),
  so consecutive updates come from subnets of similar size, while over the run every band of the
  range is visited.
- ``progressive``: progressive shrinking (Once-for-All, Cai et al. 2020) as a sampling rule. The run
  is cut into four phases by its progress (`phase_share` of the steps each for the first three, the
  rest for the last); each draws ``num_random`` subnets uniformly from a sub-space in which the
  dimensions not yet unlocked sit at their largest choice (`phase_config`), in OFA's order:
  1. full size: every depth, width and kernel at its largest; only the operations are drawn
     (each position's block type and token mixer, and in a conv_first layout the switch);
  2. + the kernel size (and the resolution and strides: like the kernel, they change no weight's shape);
  3. + the depth of each stage;
  4. + every width (stem, stages, expand ratio, heads, MLP ratio): the whole space, the uniform rule.
  The operations are drawn from the start, unlike OFA's single largest network: they do not nest
  (a position's convolution and transformer blocks are separate modules; the mixers read shared
  q/k/v in incompatible ways), so no choice of them is "the largest", and holding one would leave
  the other operations' weights untrained until the last phase (and the kernel phase would train no
  kernel where every block is attention). Every subnet trains on the labels; OFA's distillation
  from the full network is not done (it would add the largest subnet to every step).

Best-of-k (``best_of`` k > 1; AttentiveNAS's "BestUp", Wang et al. 2021, as a form of ElasticViT's
performance-aware sampling): each random slot of a rule (uniform's draws, sandwich's random students,
complexity's in-band students; never the largest or the smallest) draws k candidates, and the
training step trains the one with the lowest loss on its batch (`nas.training.train`). The sampler
only draws them: it never sees the supernet.

A sampler is a small value-like object: ``draws()`` gives the step's subnets with their roles,
``state_dict()``/``load_state_dict()`` make a resumed run draw exactly what the uninterrupted run
would have drawn. Each sampler owns its ``np.random.Generator``; nothing global is touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np

from nas.errors import FieldError, UserError, draw_bounded
from nas.training.subspace import Subspace
from search_spaces import Arch, SearchSpace
from search_spaces.config import SpaceConfig
from search_spaces.registry import Registry

Role = Literal["teacher", "student", "label"]  # teacher: labels, and teaches students; label: labels only


@dataclass(frozen=True)
class Draw:
    """One slot of a step: `arch` trained in `role`; with `rivals` (best-of-k), `arch` and its rivals
    are the slot's candidates, of which the step trains the one with the lowest loss on its batch."""

    arch: Arch
    role: Role
    rivals: tuple[Arch, ...] = ()

    @property
    def candidates(self) -> tuple[Arch, ...]:
        return (self.arch, *self.rivals)


def check_num_random(rule: str, num_random: int) -> None:
    """A rule that trains only its random subnets needs one a step at least."""
    least = SAMPLERS.get(rule).min_random
    if num_random < least:
        why = f" with the {rule} rule" if least else ""
        raise FieldError("num_random", f"must be >= {least}{why}, got {num_random}")


class Sampler:
    name: ClassVar[str]
    min_random: ClassVar[int] = 0  # the random subnets a step the rule needs

    def __init__(self, space: SearchSpace, *, num_random: int, seed: int, best_of: int = 1):
        check_num_random(self.name, num_random)
        if best_of < 1:
            raise UserError(f"best_of must be >= 1, got {best_of}")
        self.space, self.num_random, self.best_of = space, num_random, best_of
        self.rng = np.random.default_rng(seed)

    def draws(self) -> list[Draw]:
        raise NotImplementedError

    def _random(self, draw: Callable[[], Arch], role: Role) -> Draw:
        """A random slot: `best_of` candidates drawn one after the other (one: the slot's subnet)."""
        arch = draw()
        return Draw(arch, role, tuple(draw() for _ in range(self.best_of - 1)))

    def state_dict(self) -> dict[str, Any]:
        return {"rule": self.name, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("rule") != self.name:
            raise UserError(f"checkpoint was trained with sampling rule {state.get('rule')!r}, not {self.name!r}")
        self.rng.bit_generator.state = state["rng"]


SAMPLERS: Registry[type[Sampler]] = Registry("sampling rule", UserError)


@SAMPLERS.register
class UniformSampler(Sampler):
    """`within`: draws from that sub-space only, by bounded rejection (`tries` draws of the space
    each; a sub-space that rare warns and trains the last draw, which lies outside it)."""

    name = "uniform"
    min_random = 1

    def __init__(self, space: SearchSpace, *, num_random: int, seed: int, best_of: int = 1,
                 within: Subspace | None = None, tries: int = 1000):
        super().__init__(space, num_random=num_random, seed=seed, best_of=best_of)
        self.within, self.tries = within, tries

    def _draw(self) -> Arch:
        within = self.within
        if within is None:
            return self.space.sample(self.rng)
        arch, _ = draw_bounded(lambda: self.space.sample(self.rng), lambda a: 0.0 if within.contains(a) else 1.0,
                               tries=self.tries, what="a subnet of a sub-space", constraint=f"had {within}",
                               fallback="training the last draw instead")
        return arch

    def draws(self) -> list[Draw]:
        return [self._random(self._draw, "label") for _ in range(self.num_random)]


@SAMPLERS.register
class SandwichSampler(Sampler):
    name = "sandwich"

    def __init__(self, space: SearchSpace, *, num_random: int, seed: int, best_of: int = 1):
        super().__init__(space, num_random=num_random, seed=seed, best_of=best_of)
        self.largest, self.smallest = space.largest(), space.smallest()

    def draws(self) -> list[Draw]:
        randoms = [self._random(lambda: self.space.sample(self.rng), "student") for _ in range(self.num_random)]
        return [Draw(self.largest, "teacher"), Draw(self.smallest, "student"), *randoms]


@SAMPLERS.register
class ComplexitySampler(Sampler):
    """Bands are quantiles of the FLOPs of `calibration` random subnets (equal-probability bands)."""

    name = "complexity"
    min_random = 1

    def __init__(self, space: SearchSpace, *, num_random: int, seed: int, best_of: int = 1,
                 cost: Callable[[Arch], float] | None = None, bands: int = 8, calibration: int = 512, tries: int = 64):
        super().__init__(space, num_random=num_random, seed=seed, best_of=best_of)
        if bands < 1 or tries < 1:
            raise UserError("complexity sampling needs bands >= 1 and tries >= 1")
        self.cost = cost or space.count_flops
        self.tries = tries
        self.largest = space.largest()
        calib = np.random.default_rng(0)  # the bands depend on the space only, not on the run's seed
        costs = np.array([self.cost(space.sample(calib)) for _ in range(calibration)], dtype=float)
        inner = np.quantile(costs, np.linspace(0, 1, bands + 1)[1:-1]) if bands > 1 else np.array([])
        lo, hi = float(self.cost(space.smallest())), float(self.cost(self.largest))
        self.edges = np.concatenate([[lo], inner, [hi]])  # band b covers [edges[b], edges[b + 1]]
        self.band = int(self.rng.integers(bands))

    @property
    def bands(self) -> int:
        return len(self.edges) - 1

    def _in_band(self) -> Arch:
        """A uniform draw conditioned on the band: bounded rejection, else (with a `RetryWarning`)
        the draw closest to the band."""
        lo, hi = float(self.edges[self.band]), float(self.edges[self.band + 1])

        def gap(arch: Arch) -> float:
            c = float(self.cost(arch))
            return max(lo - c, c - hi, 0.0)

        arch, _ = draw_bounded(lambda: self.space.sample(self.rng), gap, tries=self.tries,
                               what="a subnet for complexity sampling",
                               constraint=f"had a cost (FLOPs) in band {self.band} [{lo:,.0f}, {hi:,.0f}]",
                               fallback="training the closest draw instead")
        return arch

    def draws(self) -> list[Draw]:
        out = [Draw(self.largest, "teacher")] + [self._random(self._in_band, "student") for _ in range(self.num_random)]
        if self.bands > 1:  # reflecting random walk: -1, 0 or +1 band
            self.band = int(np.clip(self.band + self.rng.integers(-1, 2), 0, self.bands - 1))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "band": self.band}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.band = int(state["band"])


PHASES = ("full size", "kernel", "depth", "width")  # what each phase of the progressive rule unlocks
DEFAULT_PHASE_SHARE = 0.25


def check_phase_share(share: float) -> None:
    """The progressive rule's phases: three restricted ones of `share` of the steps each, and a last
    one (the whole space) that must be left some steps."""
    if not 0 < share < 1 / 3:
        raise FieldError("phase_share", f"must be in (0, 1/3): three phases of that share, the rest for the "
                                        f"whole space; got {share}")


def phase_config(config: SpaceConfig, phase: int) -> SpaceConfig:
    """The sub-space of the progressive rule's phase `phase` (0-based, `PHASES`): the dimensions
    unlocked in a later phase held at their largest choice, as `SearchSpace.largest` takes them
    (the smallest stride); the last phase is `config` itself."""
    c = config
    if phase < 3:
        c = replace(c, stem_widths=(max(c.stem_widths),), expand_ratios=(max(c.expand_ratios),),
                    heads=(max(c.heads),), mlp_ratios=(max(c.mlp_ratios),),
                    stages=tuple(replace(s, widths=(max(s.widths),)) for s in c.stages))
    if phase < 2:
        c = replace(c, stages=tuple(replace(s, depths=(max(s.depths),)) for s in c.stages))
    if phase < 1:
        c = replace(c, kernels=(max(c.kernels),), resolutions=(max(c.resolutions),),
                    stages=tuple(replace(s, strides=(min(s.strides),)) for s in c.stages))
    return c


@SAMPLERS.register
class ProgressiveSampler(Sampler):
    """Counts its own steps (`draws` calls) against `total_steps`, so its state (`state_dict`) is
    where the run is: a resumed run continues in the same phase."""

    name = "progressive"
    min_random = 1

    def __init__(self, space: SearchSpace, *, num_random: int, seed: int, best_of: int = 1,
                 total_steps: int, phase_share: float = DEFAULT_PHASE_SHARE):
        super().__init__(space, num_random=num_random, seed=seed, best_of=best_of)
        check_phase_share(phase_share)
        if total_steps < 1:
            raise FieldError("total_steps", f"must be >= 1, got {total_steps}")
        self.total_steps, self.phase_share, self.step = total_steps, phase_share, 0
        # the first step of phases 2, 3 and 4
        self.starts = tuple(round(k * phase_share * total_steps) for k in range(1, len(PHASES)))
        self.spaces = (*(SearchSpace(phase_config(space.config, p)) for p in range(len(PHASES) - 1)), space)

    @property
    def phase(self) -> int:
        """The phase (0-based) of the next step."""
        return sum(self.step >= start for start in self.starts)

    def draws(self) -> list[Draw]:
        sub = self.spaces[self.phase]
        self.step += 1
        return [self._random(lambda: sub.sample(self.rng), "label") for _ in range(self.num_random)]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "step": self.step, "total_steps": self.total_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["total_steps"] != self.total_steps:
            raise UserError(f"checkpoint's progressive schedule spans {state['total_steps']} steps, "
                            f"this run's {self.total_steps}")
        self.step = int(state["step"])


SAMPLING_RULES: tuple[str, ...] = tuple(SAMPLERS.names())


def make_sampler(rule: str, space: SearchSpace, *, num_random: int, seed: int, best_of: int = 1,
                 within: Subspace | None = None, total_steps: int | None = None,
                 phase_share: float = DEFAULT_PHASE_SHARE) -> Sampler:
    """`best_of`: candidates per random slot; `within` (the uniform rule only): draw from that sub-space of `space`;
    `total_steps` (needed by the progressive rule, and `phase_share`): the steps the run will draw."""
    if rule == ProgressiveSampler.name and within is None:
        if total_steps is None:
            raise UserError("the progressive rule needs the run's total steps")
        return ProgressiveSampler(space, num_random=num_random, seed=seed, best_of=best_of, total_steps=total_steps,
                                  phase_share=phase_share)
    if within is None:
        return SAMPLERS.get(rule)(space, num_random=num_random, seed=seed, best_of=best_of)
    if rule != UniformSampler.name:
        raise UserError(f"sampling within a sub-space ({within}) is for the uniform rule, not {rule!r}: "
                        "the largest and smallest subnets of the others lie in one sub-space only")
    return UniformSampler(space, num_random=num_random, seed=seed, best_of=best_of, within=within)
