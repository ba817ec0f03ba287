"""Sub-spaces by one architecture decision: the partition a few-shot supernet is split by
(`nas.training.fewshot`; Zhao et al. 2021, "Few-shot neural architecture search").

A decision maps every subnet of a space to one of a few choices; the subnets with one choice form
a `Subspace`, and the sub-spaces of a decision partition the space. The decisions are one table,
`DECISIONS`: a name, the choices a space allows, and the choice of an architecture.

- ``mixer0``: the first layer's block: ``conv``, or the token mixer of a transformer block
  (``softmax``, ``linear``, ``window``, ...). Every subnet has a first layer (a stage holds at least
  one block). In a free layout the attention mixers of a layer read the same q/k/v weights, so this
  separates the layer's incompatible uses of them, and everything after it sees one kind of input.
- ``type0``: the first layer's block type only, ``conv`` or ``attn``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nas.errors import FieldError
from search_spaces import Arch, AttnBlock, SearchSpace


@dataclass(frozen=True)
class Decision:
    name: str
    choices: Callable[[SearchSpace], tuple[str, ...]]  # every choice the space allows, in a fixed order
    choice: Callable[[Arch], str]  # the choice an architecture makes


def _first_mixer(arch: Arch) -> str:
    block = arch.stages[0].blocks[0]
    return block.mixer if isinstance(block, AttnBlock) else "conv"


def _first_mixers(space: SearchSpace) -> tuple[str, ...]:
    types = space.config.stages[0].block_types
    return (*(("conv",) if "conv" in types else ()), *(space.config.mixers if "attn" in types else ()))


DECISIONS: dict[str, Decision] = {d.name: d for d in (
    Decision("mixer0", _first_mixers, _first_mixer),
    Decision("type0", lambda space: tuple(space.config.stages[0].block_types),
             lambda arch: "attn" if isinstance(arch.stages[0].blocks[0], AttnBlock) else "conv"),
)}


def decision(name: str) -> Decision:
    if name not in DECISIONS:
        raise FieldError("by", f"must be one of {sorted(DECISIONS)}, got {name!r}")
    return DECISIONS[name]


@dataclass(frozen=True)
class Subspace:
    """The subnets whose decision `by` is `choice`."""

    by: str
    choice: str

    def __post_init__(self) -> None:
        decision(self.by)

    def contains(self, arch: Arch) -> bool:
        return DECISIONS[self.by].choice(arch) == self.choice

    def __str__(self) -> str:
        return f"{self.by}={self.choice}"


def shares(space: SearchSpace, by: str, *, samples: int = 4000, seed: int = 0) -> dict[str, float]:
    """The fraction of uniform draws from `space` (`space.sample`) that make each choice of `by`,
    from `samples` draws of a generator seeded with `seed`: every choice of the space, in its
    order, those never drawn with 0."""
    d = decision(by)
    rng = np.random.default_rng(seed)
    drawn = [d.choice(space.sample(rng)) for _ in range(samples)]
    return {c: drawn.count(c) / samples for c in d.choices(space)}
