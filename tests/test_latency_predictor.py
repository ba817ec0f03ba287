"""The latency predictor (`predictors.latency`): a lookup table of units plus a learned correction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from predictors import LatencyPredictor, MissingBlockError
from search_spaces import ModelSpec, SearchSpace, get_space
from search_spaces.blocks import block_macs, block_specs


def test_predictor_learns_the_correction_and_round_trips(tmp_path):
    space = get_space("tiny")
    predictor = LatencyPredictor.fit(_synthetic_profile(space, 40))
    assert predictor.cv_error[predictor.model] < 1e-6
    rng = np.random.default_rng(9)
    for arch in [space.sample(rng) for _ in range(20)]:
        assert predictor.predict(arch) == pytest.approx(1.3 * predictor.lut_sum(arch) + 0.05, rel=1e-6)
    loaded = LatencyPredictor.load(predictor.save(tmp_path / "predictor.json"))
    assert json.loads((tmp_path / "predictor.json").read_text())["format"] == "nas-latency-predictor"
    arch = space.largest()
    assert loaded.predict(arch) == predictor.predict(arch) and loaded.model == predictor.model


def test_predictor_without_subnets_is_the_lut_sum_and_names_a_missing_unit():
    space = get_space("tiny")
    profile = _synthetic_profile(space, 0)
    predictor = LatencyPredictor.fit(profile)
    arch = space.largest()
    assert predictor.model == "lut" and predictor.predict(arch) == pytest.approx(predictor.lut_sum(arch))
    missing = block_specs(ModelSpec.from_config(space.config), arch)[-1]
    profile["lut"] = [row for row in profile["lut"] if row["block"] != missing.to_dict()]
    with pytest.raises(MissingBlockError, match="kind='head'"):
        LatencyPredictor.fit(profile).predict(arch)


def _synthetic_profile(space: SearchSpace, n: int) -> dict:
    """A profile whose whole-subnet latency is exactly 1.3 x LUT sum + 0.05 ms."""
    spec, rng = ModelSpec.from_config(space.config), np.random.default_rng(0)
    lut = {b: 1e-5 * block_macs(b) + 0.002 for b in space.units()}
    archs = [space.sample(rng) for _ in range(n)]
    return {
        "space": json.loads(json.dumps(space.config.to_dict())), "device": {}, "settings": {},
        "lut": [{"block": b.to_dict(), "latency_ms": t} for b, t in lut.items()],
        "subnets": [{"arch": a.to_dict(), "latency_ms": 1.3 * sum(lut[b] for b in block_specs(spec, a)) + 0.05}
                    for a in archs],
    }
