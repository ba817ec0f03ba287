"""Latency profiles, the latency predictor, and `nas profile` / `nas search --target PROFILE.json`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from nas.cli.main import main
from nas.errors import UserError
from nas.hardware.profile import ProfileSettings, build_profile, host_mismatch, load_profile, profile_units
from nas.runs.files import write_json
from predictors import LatencyPredictor
from search_spaces import ModelSpec, SearchSpace, SpaceConfig, get_space
from search_spaces.blocks import block_specs
from tests.helpers import MICRO_SPACE, QUICK_FINISH

FAST = ProfileSettings(subnets=6, passes=1, warmup=1, min_repeats=2, max_repeats=4, max_seconds=0.01)


@pytest.fixture(scope="module")
def micro() -> SearchSpace:
    return SearchSpace(SpaceConfig.from_dict(MICRO_SPACE))


@pytest.fixture(scope="module")
def profile(micro) -> dict:
    return build_profile(micro, FAST, show_progress=False)


def test_profile_holds_every_unit_and_is_json(micro, profile, tmp_path):
    assert json.loads(json.dumps(profile)) == profile
    assert profile["format_version"] == "1" and profile["units"]["mode"] == "all"
    assert [row["block"] for row in profile["lut"]] == [b.to_dict() for b in micro.units()]
    assert all(row["latency_ms"] > 0 and row["iqr_ms"] >= 0 for row in profile["lut"] + profile["subnets"])
    assert len(profile["subnets"]) == 6
    assert profile["settings"] | {"target": "cpu", "threads": 1, "batch": 1} == profile["settings"]
    assert profile["device"]["processor"] and profile["space"] == json.loads(json.dumps(micro.config.to_dict()))
    write_json(tmp_path / "p.json", profile)
    assert load_profile(tmp_path / "p.json") == profile
    assert host_mismatch(profile) is None


def test_large_spaces_time_a_sample_of_units():
    space = get_space("tiny")
    units, how = profile_units(space, ProfileSettings(max_units=100, sample_subnets=5))
    spec = ModelSpec.from_config(space.config)
    assert how["mode"] == "sampled" and how["count"] == len(units) < how["space_units"] == len(space.units())
    for arch in (space.largest(), space.smallest()):
        assert set(block_specs(spec, arch)) <= set(units)








def test_fit_on_a_measured_profile(micro, profile):
    predictor = LatencyPredictor.fit(profile)
    arch = micro.largest()
    assert predictor.predict(arch) > 0 and predictor.cv_error[predictor.model] == min(predictor.cv_error.values())


def test_bad_profiles_give_one_line_errors(profile, tmp_path):
    path = tmp_path / "bad.json"
    cases = {
        "format_version": (profile | {"format_version": "0"}, "format_version '0'"),
        "key": ({k: v for k, v in profile.items() if k != "lut"}, "lacks the key(s) ['lut']"),
        "format": ({"hello": 1}, "not a profile written by `nas profile`"),
        "block": (profile | {"lut": [{"block": {"kind": "conv"}, "latency_ms": 1.0}]}, "malformed"),
        "latency": (profile | {"subnets": [{"arch": {}, "latency_ms": -1}]}, "malformed"),
    }
    for name, (data, message) in cases.items():
        write_json(path, data)
        with pytest.raises(UserError, match=r"bad\.json") as info:
            load_profile(path)
        assert message in str(info.value) and "\n" not in str(info.value), name
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_profile(path)


def test_host_mismatch_names_the_difference(profile):
    other = profile | {"device": profile["device"] | {"processor": "Some Other CPU"}}
    assert "processor differs" in host_mismatch(other)


def test_profile_then_search_for_it(tmp_path, capsys):
    space_file = tmp_path / "micro.json"
    space_file.write_text(json.dumps(MICRO_SPACE))
    profile_file = tmp_path / "profile.json"
    args = ["profile", "--space", str(space_file), "--subnets", "4", "--passes", "1", "--max-seconds", "0.005",
            "--out", str(profile_file), "--quiet"]
    assert main(args) == 0
    assert "profile written to" in capsys.readouterr().out
    assert main(args) == 2 and "--force" in capsys.readouterr().err  # never overwritten silently
    profile = load_profile(profile_file)
    assert profile["units"]["count"] == 27 and len(profile["subnets"]) == 4

    out = tmp_path / "run"
    assert main(["search", "--space", str(space_file), "--target", str(profile_file), "--budget", "5", "--epochs", "1",
                 "--num-random", "0", "--max-latency-ms", "100", "--out", str(out), "--quiet", *QUICK_FINISH]) == 0
    assert "predicted" in capsys.readouterr().out
    table = pd.read_csv(out / "evaluations.csv", dtype={"id": str})
    assert (table["latency_ms"] == table["latency_predicted_ms"]).all()
    assert (table["flops"] > 0).all() and (table["memory_bytes"] > 0).all()
    summary = json.loads((out / "search.json").read_text())
    chosen = summary["chosen"]
    assert summary["latency"] == {"source": "predicted", "front_remeasured": True, "note": None}
    assert chosen["latency_handed_over"]["meets_limit"]  # this machine is the profile's: the model is measured too
    assert chosen["latency_predicted_ms"] == chosen["latency_ms"] and chosen["latency_measured_ms"] > 0
    pareto = pd.read_csv(out / "pareto.csv", dtype={"id": str})
    assert pareto["latency_measured_ms"].notna().all()
    assert table.set_index("id").loc[chosen["id"], "latency_measured_ms"] == chosen["latency_measured_ms"]
    config = json.loads((out / "config.json").read_text())
    assert config["latency"]["profile"] == str(profile_file.resolve())
    assert config["latency"]["model"] == LatencyPredictor.fit(profile).model


def test_search_target_errors(tmp_path, profile, capsys):
    common = ["search", "--budget", "2", "--epochs", "1", "--num-random", "0", "--quiet", *QUICK_FINISH]
    assert main([*common, "--target", "tpu", "--out", str(tmp_path / "a")]) == 2
    assert "neither a target" in capsys.readouterr().err
    write_json(tmp_path / "old.json", profile | {"format_version": "0"})
    assert main([*common, "--target", str(tmp_path / "old.json"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "old.json" in err and "format_version" in err
    write_json(tmp_path / "micro.json", profile)  # a profile of another space than the default tiny
    assert main([*common, "--target", str(tmp_path / "micro.json"), "--out", str(tmp_path / "c")]) == 2
    assert "measured for space 'micro'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
