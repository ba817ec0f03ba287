"""The sequence space (`seq`, dims 1): 1-D layers, token mixers over time, costs at a deployment
sequence length, and the whole CLI on mnist1d and on a user's [N, T, C] arrays."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from nas.cli.main import main
from nas.data.datasets import Split, TaskData
from nas.errors import UserError
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.hardware.measure import LatencySettings, count_flops
from nas.hardware.profile import ProfileSettings, build_profile
from nas.search.loop import make_surrogate
from predictors import LatencyPredictor
from search_spaces import Arch, AttnBlock, ConvBlock, HybridSupernet, SearchSpace, SpaceConfig, Stage, get_space
from search_spaces.arch import ArchError
from tests.helpers import QUICK_FINISH

SEQ = get_space("seq")
MICRO_SEQ = {  # a small sequence space: profiles and trains in seconds
    "name": "micro-seq", "dims": 1, "in_channels": 3, "num_classes": 4, "input_size": 24, "resolutions": [24],
    "stem_widths": [8], "stages": [{"depths": [1, 2], "widths": [8, 16], "strides": [1, 2],
                                    "block_types": ["conv", "attn"]}],
    "kernels": [3, 5], "expand_ratios": [2], "mixers": ["softmax", "linear", "window"], "heads": [1, 2],
    "mlp_ratios": [2], "head_dim": 4, "window": 4, "layout": "free",
}


def _uniform(mixer: str) -> Arch:
    """The largest `seq` subnet with every block one mixer ("conv": the depthwise convolution block)."""
    big = SEQ.largest()
    block = ConvBlock(7, 3) if mixer == "conv" else AttnBlock(mixer, 4, 4)
    return Arch(resolution=big.resolution, stem_width=big.stem_width,
                stages=tuple(Stage(width=s.width, stride=1, blocks=(block,) * s.depth) for s in big.stages))




@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extracted_model_runs_at_any_length_with_the_same_weights(seed):
    torch.manual_seed(seed)
    supernet = HybridSupernet(SEQ).eval()
    arch = SEQ.sample(np.random.default_rng(seed))
    x = torch.randn(2, 1, 40)
    with torch.no_grad():
        torch.testing.assert_close(supernet.extract(arch)(x), supernet(x, arch), rtol=1e-5, atol=1e-5)
        long = supernet.extract(arch, input_size=300)
        assert long(torch.randn(2, 1, 300)).shape == (2, 10)
    for (name, a), b in zip(supernet.extract(arch).state_dict().items(), long.state_dict().values()):
        assert torch.equal(a, b), name
    for size in (40, 64, 300):
        assert SEQ.count_flops(arch, input_size=size) == count_flops(supernet.extract(arch, input_size=size),
                                                                    (1, 1, size)), size


def test_costs_grow_differently_per_mixer_with_the_sequence_length():
    growth = {m: SEQ.count_flops(_uniform(m), input_size=4096) / SEQ.count_flops(_uniform(m), input_size=256)
              for m in ("softmax", "linear", "window", "conv")}
    assert growth["softmax"] > 60  # quadratic attention dominates at 4,096 tokens
    for mixer in ("linear", "window", "conv"):
        assert 15 < growth[mixer] < 17, mixer  # linear in the length: 16x the tokens
    memory = {m: SEQ.peak_memory_bytes(_uniform(m), input_size=4096) for m in ("softmax", "linear", "conv")}
    assert memory["conv"] < memory["softmax"] and memory["linear"] < 2 * memory["conv"]


def test_at_input_size_keeps_the_space_and_refuses_nonsense():
    assert SEQ.config.at_input_size(4096).resolutions == (4096,)
    arch = SEQ.largest()
    assert SEQ.count_flops(arch, input_size=40) == SEQ.count_flops(arch)
    with pytest.raises(ArchError, match="input size must be a positive integer"):
        SEQ.count_flops(arch, input_size=0)
    for dims in (3, 1.0, True):
        with pytest.raises(ArchError, match="dims must be 1 \\(sequences\\) or 2 \\(images\\)"):
            SpaceConfig.from_dict(MICRO_SEQ | {"dims": dims})


def test_a_model_based_strategy_sees_the_costs_at_the_deployment_length():
    supernet = HybridSupernet(SEQ)
    data = TaskData("fake", *(Split(torch.zeros(4, 1, 40), torch.arange(4)) for _ in range(3)), num_classes=10,
                    in_channels=1, input_size=40, dims=1, mean=(0.0,), std=(1.0,))
    evaluator = Evaluator(supernet, data, LatencySettings(), cost_size=2048)
    limits = Limits(max_memory_mb=2.0)  # every subnet fits at 40 steps (< 0.5 MiB), none at 2,048 (> 3 MiB)
    surrogate = make_surrogate(evaluator, limits, "flops")
    for seed in range(3):
        arch = SEQ.sample(np.random.default_rng(seed))
        costs = evaluator.analytic_costs(arch)
        assert surrogate.cost(arch) == costs["flops"] == SEQ.count_flops(arch, input_size=2048)
        assert surrogate.violation(arch, costs["flops"]) == limits.violation(costs) > 0


def test_feasibility_at_a_long_length_considers_every_mixer():
    """At 4,096 steps the smallest subnet with softmax attention costs far more than the one with
    linear attention: a limit only the latter meets is feasible (it was refused when only one mixer
    was tried)."""
    config = SpaceConfig.from_dict(MICRO_SEQ | {"stages": [MICRO_SEQ["stages"][0] | {"block_types": ["attn"]}]})
    space = SearchSpace(config)
    flops = {v.blocks[0].mixer: space.count_flops(v, input_size=4096) for v in space.smallest_variants()}
    assert set(flops) == {"softmax", "linear", "window"} and flops["linear"] < flops["softmax"] / 3
    data = TaskData("fake", *(Split(torch.zeros(4, 3, 24), torch.arange(4)) for _ in range(3)), num_classes=4,
                    in_channels=3, input_size=24, dims=1, mean=(0.0,) * 3, std=(1.0,) * 3)
    evaluator = Evaluator(HybridSupernet(space), data, LatencySettings(), cost_size=4096)
    evaluator.check_feasible(Limits(max_flops=int(flops["linear"] * 1.5)))
    with pytest.raises(UserError, match="the smallest achievable is"):
        evaluator.check_feasible(Limits(max_flops=min(flops.values()) - 1))




@pytest.mark.slow
def test_seq_space_through_the_cli_with_a_deployment_length(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["search", "--space", "seq", "--epochs", "1", "--num-random", "0", "--batch-size", "256",
                 "--budget", "6", "--objective", "flops", "--seq-len", "1024", "--strategy", "random",
                 "--out", str(run), "--quiet", *QUICK_FINISH]) == 0
    assert "chosen subnet" in capsys.readouterr().out
    table = pd.read_csv(run / "evaluations.csv", dtype={"id": str})
    config = json.loads((run / "config.json").read_text())
    assert config["args"]["data"] == "mnist1d" and config["args"]["seq_len"] == 1024
    assert config["data"]["dims"] == 1
    for _, row in table.iterrows():
        arch = SEQ.parse(row["arch"])
        assert row["flops"] == SEQ.count_flops(arch, input_size=1024) > SEQ.count_flops(arch)
    chosen = json.loads((run / "search.json").read_text())["chosen"]
    assert chosen["cost_input_size"] == 1024
    assert main(["extract", str(run), "--arch", chosen["id"], "--out", str(tmp_path / "model")]) == 0
    assert "test acc" in capsys.readouterr().out
    assert json.loads((tmp_path / "model" / "model.json").read_text())["metrics"]["cost_input_size"] == 1024


def test_user_sequences_and_a_space_file_through_the_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 24, 3)).astype(np.float32)  # [N, T, C]
    y = np.repeat(np.arange(4), 40)
    x[np.arange(160), y * 5, y % 3] += 4.0  # a learnable cue: a spike whose time and channel give the class
    np.savez(tmp_path / "seqs.npz", x=x, y=y)
    space = tmp_path / "space.json"
    space.write_text(json.dumps(MICRO_SEQ))
    run = tmp_path / "run"
    assert main(["train", "--space", str(space), "--data", str(tmp_path / "seqs.npz"), "--epochs", "2",
                 "--batch-size", "32", "--out", str(run), "--quiet"]) == 0
    assert "supernet written" in capsys.readouterr().out
    assert main(["train", "--space", "tiny", "--data", str(tmp_path / "seqs.npz"), "--epochs", "1",
                 "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seqs.npz" in err
    assert main(["search", "--space", "tiny", "--seq-len", "64", "--budget", "2", "--epochs", "1",
                 "--out", str(tmp_path / "bad2"), "--quiet"]) == 2
    assert "--seq-len applies to sequence spaces" in capsys.readouterr().err


def test_a_profile_at_a_sequence_length_predicts_costs_at_that_length(tmp_path, capsys):
    space = SearchSpace(SpaceConfig.from_dict(MICRO_SEQ))
    fast = ProfileSettings(subnets=6, passes=1, warmup=1, min_repeats=2, max_repeats=4, max_seconds=0.01,
                           input_size=256)
    profile = build_profile(space, fast, show_progress=False)
    assert {row["block"]["in_resolution"] for row in profile["lut"]} <= {256, 128}
    predictor = LatencyPredictor.fit(profile)
    assert predictor.input_size == 256 and LatencyPredictor.from_dict(json.loads(json.dumps(predictor.to_dict()))).input_size == 256
    assert all(predictor.predict(space.sample(np.random.default_rng(i))) > 0 for i in range(5))

    profile_file, space_file = tmp_path / "profile.json", tmp_path / "space.json"
    profile_file.write_text(json.dumps(profile))
    space_file.write_text(json.dumps(MICRO_SEQ))
    data = tmp_path / "seqs.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(80, 24, 3)).astype(np.float32), y=np.arange(80) % 4)
    common = ["search", "--space", str(space_file), "--data", str(data), "--target", str(profile_file),
              "--budget", "3", "--epochs", "1", "--max-latency-ms", "100", "--quiet", *QUICK_FINISH]
    assert main([*common, "--seq-len", "256", "--out", str(tmp_path / "ok")]) == 0
    table = pd.read_csv(tmp_path / "ok" / "evaluations.csv")
    assert (table["latency_ms"] == table["latency_predicted_ms"]).all()
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "mismatch")]) == 2
    assert "measured at input size 256, but costs are wanted at 24" in capsys.readouterr().err
