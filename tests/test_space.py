"""Invariants of every registered search space: supernet == extracted model, round trips, counts."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch

from search_spaces import (
    Arch,
    ArchError,
    AttnBlock,
    ConvBlock,
    HybridSupernet,
    ModelSpec,
    SearchSpace,
    SpaceConfig,
    Stage,
    StageSpace,
    get_space,
    list_spaces,
)

N_RANDOM = {"tiny": 12, "cifar": 4, "imagenet": 1, "seq": 12}


def _archs(space: SearchSpace, n: int, seed: int = 0) -> list[Arch]:
    rng = np.random.default_rng(seed)
    return [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(n)]


@pytest.fixture(scope="module", params=list_spaces())
def space_and_supernet(request):
    torch.manual_seed(0)
    space = get_space(request.param)
    return space, HybridSupernet(space).eval()


def test_supernet_equals_extracted_model(space_and_supernet):
    space, supernet = space_and_supernet
    c = space.config
    x = torch.randn(ModelSpec.from_config(c).input_shape(2))
    for arch in _archs(space, N_RANDOM[c.name]):
        model = supernet.extract(arch).eval()
        assert not any("Elastic" in type(m).__name__ for m in model.modules())
        with torch.no_grad():
            expected, got = supernet(x, arch), model(x)
        assert got.shape == (2, c.num_classes)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert sum(p.numel() for p in model.parameters()) == space.count_params(arch)


def test_subnets_differ_and_share_weights(space_and_supernet):
    space, supernet = space_and_supernet
    c = space.config
    x = torch.randn(ModelSpec.from_config(c).input_shape(2))
    with torch.no_grad():
        a, b = supernet(x, space.smallest()), supernet(x, space.largest())
    assert not torch.allclose(a, b)
    assert sum(p.numel() for p in supernet.parameters()) >= space.count_params(space.largest())


@pytest.mark.parametrize("name", list_spaces())
def test_json_round_trip_keeps_equality_and_hash(name):
    space = get_space(name)
    for arch in _archs(space, 200, seed=1):
        back = space.parse(arch.to_json())
        assert back == arch and hash(back) == hash(arch) and back.id == arch.id
        assert Arch.from_dict(arch.to_dict()) == arch


@pytest.mark.parametrize("name", list_spaces())
def test_sampling_mutation_crossover_stay_valid_and_are_seeded(name):
    space = get_space(name)
    rng = np.random.default_rng(3)
    archs = [space.sample(rng) for _ in range(50)]
    lengths = {space.encode(a).shape for a in archs}
    assert len(lengths) == 1
    for a, b in itertools.pairwise(archs):
        child = space.mutate(space.crossover(a, b, rng), rng)
        assert space.validate(child) is child
    again = [space.sample(np.random.default_rng(3)) for _ in range(1)]
    assert again[0] == archs[0]
    assert len(set(archs)) > 40  # the spaces are large: random samples rarely collide
    assert all(space.mutate(a, rng) != a for a in archs[:10])


def _micro(layout: str) -> SearchSpace:
    return SearchSpace(SpaceConfig(
        name="micro", in_channels=1, num_classes=3, input_size=4, resolutions=(4,), stem_widths=(4,),
        stages=(StageSpace(depths=(1, 2), widths=(4,), block_types=("conv",)),
                StageSpace(depths=(1, 2), widths=(4, 8), strides=(1, 2))),
        kernels=(3,), expand_ratios=(2,), mixers=("softmax", "pool"), heads=(1, 2), mlp_ratios=(2,),
        head_dim=4, layout=layout,
    ))


@pytest.mark.parametrize("layout", ["conv_first", "free"])
def test_size_is_exact_on_an_enumerable_space(layout):
    space = _micro(layout)
    conv = [ConvBlock(3, 2)]
    attn = [AttnBlock("softmax", 1, 2), AttnBlock("softmax", 2, 2), AttnBlock("pool", 0, 2)]
    count = 0
    for d1, d2, w2, s2 in itertools.product((1, 2), (1, 2), (4, 8), (1, 2)):
        for b1 in itertools.product(conv, repeat=d1):
            for b2 in itertools.product(conv + attn, repeat=d2):
                arch = Arch(4, 4, (Stage(4, 1, b1), Stage(w2, s2, b2)))
                try:
                    space.validate(arch)
                except ArchError:
                    continue
                count += 1
    assert space.size() == count
    # stage 2 with one conv and three transformer options: 1 + 3 for depth 1, 1 + 3 + 9 (or 4 ** 2) for depth 2
    expected = 2 * 4 * (4 + 13) if layout == "conv_first" else 2 * 4 * (4 + 16)
    assert count == expected


def test_conv_first_repair_moves_the_switch_to_the_nearest_feasible_one():
    space = _micro("conv_first")  # stage 1 holds only conv blocks, stage 2 either type
    assert space.feasible_switches([2, 2]) == [2, 3, 4]
    assert [space.nearest_switch([2, 2], n) for n in range(5)] == [2, 2, 2, 3, 4]
    conv, attn = ConvBlock(3, 2), AttnBlock("softmax", 1, 2)
    for blocks, kinds in (([[conv, conv], [attn, conv]], "CCCA"), ([[conv, attn], [attn, attn]], "CCAA"),
                          ([[conv], [conv, conv]], "CCC")):
        repaired = space._repair(blocks, np.random.default_rng(0))  # 3, 1 and 3 conv blocks
        assert "".join("C" if isinstance(b, ConvBlock) else "A" for row in repaired for b in row) == kinds


def test_validation_names_the_field():
    space = get_space("tiny")
    arch = space.smallest().to_dict()
    arch["stages"][1]["blocks"][0] = {"type": "attn", "mixer": "softmax", "heads": 3, "mlp_ratio": 2}
    with pytest.raises(ArchError, match=r"stages\[1\]\.blocks\[0\]\.heads=3"):
        space.parse(arch)
    with pytest.raises(ArchError, match="mixer must be one of"):
        space.parse({**arch, "stages": [{"width": 16, "stride": 1, "blocks": [{"type": "attn", "mixer": "fft",
                                                                                 "heads": 1, "mlp_ratio": 2}]}]})
    with pytest.raises(ArchError, match="unknown key"):
        Arch.from_dict({**space.smallest().to_dict(), "color": "red"})
    with pytest.raises(ArchError, match="kernel must be odd"):
        ConvBlock(4, 2)
    with pytest.raises(ArchError, match="not valid JSON"):
        Arch.from_json("{")
    # conv block after a transformer block breaks the conv_first layout
    bad = space.largest().to_dict()
    bad["stages"][2]["blocks"][0] = {"type": "conv", "kernel": 3, "expand": 2}
    with pytest.raises(ArchError, match="conv_first"):
        space.parse(bad)


def test_space_is_data_a_user_writes(tmp_path):
    space = get_space("tiny")
    path = tmp_path / "my_space.json"
    import json

    path.write_text(json.dumps({**space.config.to_dict(), "name": "mine"}))
    mine = get_space(str(path))
    assert mine.size() == space.size()
    path.write_text(json.dumps({**space.config.to_dict(), "mixers": ["softmax", "fft"]}))
    with pytest.raises(ArchError, match="unknown mixers"):
        get_space(str(path))
    with pytest.raises(ArchError, match="unknown space"):
        get_space("nope")


def test_forward_keeps_no_state_across_threads():
    torch.manual_seed(0)
    space = get_space("tiny")
    supernet = HybridSupernet(space).eval()
    archs = _archs(space, 6)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        expected = [supernet(x, a) for a in archs]
    results: dict[int, torch.Tensor] = {}

    def work(i: int) -> None:
        with torch.no_grad():
            for _ in range(3):
                results[i] = supernet(x, archs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(archs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, e in enumerate(expected):
        torch.testing.assert_close(results[i], e)


def test_supernet_refuses_architectures_outside_its_space(tmp_path):
    import json

    space = get_space("tiny")
    supernet = HybridSupernet(space)
    big = space.largest().to_dict()
    big["stages"][2]["width"] = 64
    with pytest.raises(ArchError, match=r"stages\[2\]\.width=64"):
        supernet(torch.randn(1, 1, 8, 8), Arch.from_dict(big))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**space.config.to_dict(), "stages": 5}))
    with pytest.raises(ArchError, match="stages must be a list"):
        get_space(str(path))
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ArchError, match="space file"):
        get_space(str(path))


def test_arch_pickles_without_its_cached_hash():
    """str hashes differ between processes: a pickled Arch (Ray, multiprocessing) must hash anew."""
    import pickle

    space = get_space("tiny")
    arch = space.sample(np.random.default_rng(0))
    hash(arch)  # caches it
    copy = pickle.loads(pickle.dumps(arch))
    assert "_hash" not in vars(copy) and copy == arch and hash(copy) == hash(arch)
    with pytest.raises(ArchError, match="expected an Arch"):
        space.validate({"resolution": 8})


@pytest.mark.parametrize("name", list_spaces())
def test_count_params_is_the_built_supernets_count_without_building_it(name):
    space = get_space(name)
    assert HybridSupernet.count_params(space) == sum(p.numel() for p in HybridSupernet(space).parameters())
