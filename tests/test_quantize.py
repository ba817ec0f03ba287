"""Int8 in the search: ONNX Runtime's post-training quantization of subnets, the int8 candidates'
rows, the model.int8.onnx handed over and re-measured, and what `--precision` refuses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nas.cli.main import main
from nas.evaluation.evaluator import INT8_TOLERANCE, choose_precision
from nas.evaluation.limits import Limits
from nas.hardware import quantize
from nas.hardware.quantize import Int8Model, quantize_model
from nas.runs.files import load_supernet
from search_spaces.mixers import TOKEN_MIXERS
from tests.helpers import few_digits, stored_digits, tiny_supernet

INT8_SEARCH = ("--target", "onnxruntime", "--finish", "inherit", "--quiet")


def _mixers(arch) -> set[str]:
    return {getattr(block, "mixer", "conv") for stage in arch.stages for block in stage.blocks}


def _archs_covering_each_mixer(space, seed: int = 0, draws: int = 200) -> list:
    """Few seeded samples of `space` that together use every block type and token mixer it has."""
    rng, archs, covered = np.random.default_rng(seed), [], set()
    for _ in range(draws):
        arch = space.sample(rng)
        if not _mixers(arch) <= covered:
            archs.append(arch)
            covered |= _mixers(arch)
    return archs


def test_every_block_type_and_mixer_quantizes_and_runs():
    supernet, data = tiny_supernet(), few_digits(32)
    archs = _archs_covering_each_mixer(supernet.space)
    assert set().union(*map(_mixers, archs)) == {"conv", *TOKEN_MIXERS.names()}  # so every one is tried
    assert not quantize.UNQUANTIZABLE  # each built-in one quantizes: an entry would refuse it up front
    for arch in archs:
        model = quantize_model(supernet.extract(arch), (1, 8, 8), data.train.x)
        logits = model.logits(data.val.x[:5])
        assert logits.shape == (5, 10) and np.isfinite(logits).all(), arch.id
        assert model.weight_bytes() < 4 * supernet.space.count_params(arch), arch.id  # int8 weights, not float


def test_quantized_accuracy_is_close_to_fp32_on_a_trained_subnet(trained_run):
    supernet, data = load_supernet(trained_run), few_digits(256)
    arch = supernet.space.smallest()  # the best trained of the shared run's tiny supernet
    net = supernet.extract(arch).eval()
    with torch.no_grad():
        fp32 = net(data.val.x).argmax(1).numpy()
    int8 = quantize_model(net, (1, 8, 8), data.train.x).logits(data.val.x).argmax(1)
    labels = data.val.y.numpy()
    assert (int8 == fp32).mean() >= 0.95  # the same predictions, but for a few near ties
    assert abs((int8 == labels).mean() - (fp32 == labels).mean()) <= 0.03


def test_fixed_batch_model_predicts_as_the_free_batch_model():
    """The search times and scores the graph with its batch fixed; the file handed over has a free
    batch. Calibrated on the same rows, they hold the same quantization up to rounding: a step of
    the output's scale here and there, the same predictions."""
    supernet, data = tiny_supernet(1), few_digits(64)
    net = supernet.extract(supernet.space.smallest())
    fixed = quantize_model(net, (1, 8, 8), data.train.x, batch=4)
    free = quantize_model(net, (1, 8, 8), data.train.x)
    assert fixed.batch == 4 and free.batch is None
    x = data.val.x[:50]  # not a multiple of 4: the last batch is padded
    a, b = fixed.logits(x), free.logits(x)
    assert a.shape == b.shape == (50, 10) and np.abs(a - b).max() < 0.1
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9


def _row(acc: float, latency: float, precision: str = "fp32", iqr: float = 0.0) -> dict[str, float]:
    return {"val_acc": acc, "latency_ms": latency, "latency_iqr_ms": iqr,
            "model_bytes": 4000.0 if precision == "fp32" else 1000.0 if precision == "int8" else 2500.0}


def test_choose_precision_prefers_what_meets_the_limits_then_int8_unless_it_costs():
    limits = Limits(max_latency_ms=1.0)
    fast_int8 = {"fp32": _row(0.90, 1.2), "int8": _row(0.80, 0.6, "int8")}
    assert choose_precision(fast_int8, limits) == "int8"  # only int8 meets the limit
    both = {"fp32": _row(0.90, 0.8), "int8": _row(0.90 - INT8_TOLERANCE / 2, 0.4, "int8")}
    assert choose_precision(both, limits) == "int8"  # as accurate within the tolerance, and faster
    lossy = {"fp32": _row(0.90, 0.8), "int8": _row(0.90 - 2 * INT8_TOLERANCE, 0.4, "int8")}
    assert choose_precision(lossy, limits) == "fp32"  # loses accuracy: the more accurate stands
    slow_int8 = {"fp32": _row(0.90, 0.3, iqr=0.01), "int8": _row(0.90, 0.5, "int8", iqr=0.02)}
    assert choose_precision(slow_int8, limits) == "fp32"  # int8 slower on this runtime, beyond the readings' spread
    as_fast = {"fp32": _row(0.90, 0.30, iqr=0.02), "int8": _row(0.90, 0.31, "int8", iqr=0.03)}
    assert choose_precision(as_fast, limits) == "int8"  # no slower within the spread: the smaller stands


def test_choose_precision_by_size_takes_int8_even_when_it_runs_slower():
    slow_int8 = {"fp32": _row(0.90, 0.3, iqr=0.01), "int8": _row(0.90, 0.5, "int8", iqr=0.02)}
    assert choose_precision(slow_int8, Limits(max_latency_ms=1.0), "model_bytes") == "int8"
    assert choose_precision(slow_int8, Limits(max_latency_ms=0.4), "model_bytes") == "fp32"  # only fp32 meets it
    lossy = {"fp32": _row(0.90, 0.3), "int8": _row(0.90 - 2 * INT8_TOLERANCE, 0.2, "int8")}
    assert choose_precision(lossy, Limits(), "model_bytes") == "fp32"


def test_choose_precision_takes_int8_in_the_stages_where_it_pays():
    limits = Limits(max_latency_ms=1.0)
    rows = {"fp32": _row(0.90, 0.50, iqr=0.01), "int8": _row(0.90, 0.60, "int8", iqr=0.01),
            "int8[1]": _row(0.90, 0.40, "int8[1]", iqr=0.01)}
    assert choose_precision(rows, limits) == "int8[1]"  # the fastest of three as accurate
    rows["int8[1]"] = _row(0.90 - 2 * INT8_TOLERANCE, 0.40, "int8[1]")
    assert choose_precision(rows, limits) == "fp32"  # it loses accuracy: the fastest of the others


def test_precision_values_name_the_stages_in_int8():
    assert quantize.int8_stages("fp32") == frozenset() and quantize.int8_stages("int8") is None
    assert quantize.int8_stages(quantize.mixed([3, 1])) == {1, 3} and quantize.mixed([3, 1]) == "int8[1,3]"
    assert quantize.is_int8("int8[0]") and not quantize.is_int8("fp32")
    for bad in ("int4", "int8[]", "int8[a]", "int8[1,]"):
        with pytest.raises(ValueError):
            quantize.int8_stages(bad)
    assert quantize.recorded_precision(float("nan")) == "fp32" and quantize.recorded_precision("int8[2]") == "int8[2]"


def test_a_stage_left_in_float_keeps_its_layers_float_and_its_weights_bytes():
    supernet, data = tiny_supernet(), few_digits(32)
    arch = supernet.space.largest()
    net = supernet.extract(arch)
    whole = quantize_model(net, (1, 8, 8), data.train.x)
    stage1 = quantize_model(net, (1, 8, 8), data.train.x, stages=frozenset({1}))
    assert whole.precision == "int8" and stage1.precision == "int8[1]"
    assert whole.weight_bytes() < stage1.weight_bytes() < 4 * supernet.space.count_params(arch)
    onnx = pytest.importorskip("onnx")
    graph = onnx.load_from_string(stage1.onnx_bytes).graph
    int8_weights = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"
                    and n.input[0] in {t.name for t in graph.initializer}}
    layers = [n for n in graph.node if n.op_type in quantize.QUANTIZED_OPS]
    quantized = {quantize.stage_of(n.name) for n in layers if int8_weights.intersection(n.input)}
    assert quantized == {1} and {quantize.stage_of(n.name) for n in layers} >= {None, 0, 1, 2}  # stem, head float
    times = quantize.stage_times(stage1.onnx_bytes, (1, 1, 8, 8), runs=3)
    assert set(times) == {0, 1, 2} and all(t > 0 for t in times.values())


def _search(trained_run: Path, out: Path, precision: str, budget: int = 3) -> int:
    return main(["search", "--supernet", str(trained_run), "--budget", str(budget), "--max-latency-ms", "50",
                 "--precision", precision, *INT8_SEARCH, "--out", str(out)])


def test_int8_search_hands_over_a_checked_model_int8_onnx(trained_run, tmp_path):
    out = tmp_path / "run"
    assert _search(trained_run, out, "int8", budget=2) == 0
    table = pd.read_csv(out / "evaluations.csv", dtype={"id": str})
    assert set(table["precision"]) == {"int8"} and table["other_val_acc"].isna().all()
    assert (table["model_bytes"] < 4 * table["params"]).all()
    assert set(pd.read_csv(out / "pareto.csv")["precision"]) == {"int8"}
    summary = json.loads((out / "search.json").read_text())
    assert summary["precision"] == "int8" and summary["chosen"]["precision"] == "int8"
    folder = out / summary["chosen"]["path"]
    meta = json.loads((folder / "model.json").read_text())
    assert meta["precision"] == "int8" and meta["files"]["int8"] == "model.int8.onnx"
    assert summary["chosen"]["latency_handed_over"]["precision"] == "int8"
    # re-measured here from the written file, on the data as the user stores it: the recorded accuracy
    data, written = few_digits(1), Int8Model.load(folder / "model.int8.onnx")
    for split in ("val", "test"):
        part = stored_digits(data, split)
        assert written.accuracy_and_loss(part.x, part.y)[0] == meta["int8"][f"{split}_acc"]
    card = (folder / "README.md").read_text()
    assert "## Precision\n\nint8: handed over quantized as `model.int8.onnx`" in card
    other = table["id"][table["id"] != summary["chosen"]["id"]].iloc[0]  # an int8 row exported later: int8 too
    assert main(["export", str(out), "--arch", str(other)]) == 0
    assert json.loads((out / "models" / str(other) / "model.json").read_text())["int8"]["file"] == "model.int8.onnx"


def test_searched_precision_records_each_subnets_precision_and_the_others_figures(trained_run, tmp_path):
    out = tmp_path / "run"
    assert _search(trained_run, out, "search", budget=2) == 0
    table = pd.read_csv(out / "evaluations.csv", dtype={"id": str})
    assert all(quantize.recorded_precision(p) == p for p in table["precision"])  # fp32, int8 or int8 in some stages
    assert table["other_val_acc"].notna().all()
    assert all(math.isfinite(v) and v > 0 for v in table["other_latency_ms"])
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["precision"] == "search"


def test_searched_precision_can_hand_over_int8_in_some_stages(trained_run, tmp_path, monkeypatch):
    from nas.evaluation import evaluator as evaluation

    def times(onnx_bytes, shape, **_):  # int8 pays in stage 1 only (its timings are machine noise here)
        int8 = b"QuantizeLinear" in onnx_bytes
        return {0: 2.0 if int8 else 1.0, 1: 0.5 if int8 else 1.0, 2: 2.0 if int8 else 1.0}

    monkeypatch.setattr(quantize, "stage_times", times)
    monkeypatch.setattr(evaluation, "choose_precision", lambda rows, *_: "int8[1]" if "int8[1]" in rows else "fp32")
    out = tmp_path / "run"
    assert _search(trained_run, out, "search", budget=2) == 0
    table = pd.read_csv(out / "evaluations.csv", dtype={"id": str})
    assert set(table["precision"]) == {"int8[1]"}
    assert (4 * table["params"] > table["model_bytes"]).all()  # stage 1's weights in int8
    summary = json.loads((out / "search.json").read_text())
    folder = out / summary["chosen"]["path"]
    meta = json.loads((folder / "model.json").read_text())
    assert summary["chosen"]["precision"] == meta["precision"] == "int8[1]" == summary["chosen"]["latency_handed_over"]["precision"]
    written = Int8Model.load(folder / "model.int8.onnx", precision=meta["precision"])
    part = stored_digits(few_digits(1), "test")
    assert written.accuracy_and_loss(part.x, part.y)[0] == meta["int8"]["test_acc"]
    assert "int8[1] (int8 in the layers of stage 1; the stem" in (folder / "README.md").read_text()


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nas: error: ") and "Traceback" not in err, err
    return err


def test_searched_precision_by_size_stands_in_int8_where_it_is_as_accurate(trained_run, tmp_path):
    out = tmp_path / "run"
    assert main(["search", "--supernet", str(trained_run), "--budget", "2", "--objective", "size", "--precision",
                 "search", *INT8_SEARCH, "--out", str(out)]) == 0
    table = pd.read_csv(out / "evaluations.csv", dtype={"id": str})
    int8 = table["precision"] != "fp32"  # fp32 stands only where int8 loses accuracy: test_choose_precision_by_size...
    assert int8.any() and (table.loc[int8, "val_acc"] >= table.loc[int8, "other_val_acc"] - INT8_TOLERANCE).all()
    assert (table.loc[~int8, "other_val_acc"] < table.loc[~int8, "val_acc"] - INT8_TOLERANCE).all()
    assert (table.loc[int8, "model_bytes"] < table.loc[int8, "params"] * 4).all()
    summary = json.loads((out / "search.json").read_text())
    assert summary["objective"] == "size" and summary["hypervolume_reference"]["model_bytes"] > 0
    chosen = summary["chosen"]
    if chosen["precision"] != "fp32":  # the size recorded is the file's handed over
        meta = json.loads((out / chosen["path"] / "model.json").read_text())
        assert chosen["model_bytes"] == meta["int8"]["weight_bytes"]


def test_precision_with_a_bad_value_is_one_line(trained_run, tmp_path, capsys):
    assert main(["search", "--supernet", str(trained_run), "--precision", "int4", "--quiet",
                 "--out", str(tmp_path / "r")]) == 2
    assert "--precision" in _one_line(capsys) and not (tmp_path / "r").exists()


def test_int8_is_refused_off_onnx_runtime_in_one_line(trained_run, tmp_path, capsys):
    assert main(["search", "--supernet", str(trained_run), "--precision", "int8", "--quiet",
                 "--out", str(tmp_path / "r")]) == 2  # --target cpu: torch eager, not where int8 runs
    assert "--target onnxruntime" in _one_line(capsys) and not (tmp_path / "r").exists()


def test_a_block_type_onnx_runtime_cannot_quantize_is_refused_in_one_line(trained_run, tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setitem(quantize.UNQUANTIZABLE, "window", "no integer kernel for its shifted windows (a test's entry)")
    assert _search(trained_run, tmp_path / "r", "search") == 2
    err = _one_line(capsys)
    assert "block type 'window'" in err and "no integer kernel" in err and not (tmp_path / "r").exists()


def test_the_feasibility_check_before_training_leaves_no_stale_int8_model():
    from nas.evaluation.evaluator import Evaluator
    from nas.hardware.measure import LatencySettings

    supernet, data = tiny_supernet(2), few_digits(16)
    evaluator = Evaluator(supernet, data, LatencySettings(device="onnxruntime", max_seconds=0.05), precision="int8")
    evaluator.check_feasible(Limits(max_latency_ms=100.0))  # quantizes the smallest subnets, untrained
    with torch.no_grad():  # "training"
        for p in supernet.parameters():
            p.mul_(0.5)
    arch = min(supernet.space.smallest_variants(), key=supernet.space.count_flops)
    fresh = quantize_model(supernet.extract(arch), (1, 8, 8), data.train.x, batch=1)
    x = data.val.x[:8]
    np.testing.assert_array_equal(evaluator.int8_model(arch).logits(x), fresh.logits(x))


def test_an_int8_profile_predicts_int8_latency_and_is_refused_for_fp32():
    from nas.errors import FieldError
    from nas.evaluation.evaluator import Evaluator
    from nas.hardware.measure import LatencySettings
    from nas.hardware.profile import ProfileSettings, build_profile
    from predictors import LatencyPredictor
    from search_spaces import HybridSupernet, SearchSpace, SpaceConfig
    from tests.helpers import MICRO_SPACE

    space = SearchSpace(SpaceConfig.from_dict(MICRO_SPACE))
    fast = ProfileSettings(target="onnxruntime", precision="int8", subnets=4, passes=1, warmup=1, min_repeats=2,
                           max_repeats=4, max_seconds=0.01)
    profile = build_profile(space, fast, show_progress=False)
    assert profile["settings"]["precision"] == "int8"
    fp32_profile = {**profile, "settings": {**profile["settings"], "precision": "fp32"}}  # as an fp32 one reads
    torch.manual_seed(0)
    supernet, data = HybridSupernet(space), few_digits(32)
    settings = LatencySettings(device="onnxruntime")
    evaluator = Evaluator(supernet, data, settings, predictor=LatencyPredictor.fit(profile), precision="int8")
    row = evaluator.evaluate(space.smallest(), latency=True)
    assert row["precision"] == "int8" and row["latency_ms"] == row["latency_predicted_ms"] > 0
    with pytest.raises(FieldError, match="timed in int8"):
        Evaluator(supernet, data, settings, predictor=LatencyPredictor.fit(profile))  # fp32 from an int8 profile
    with pytest.raises(FieldError, match="profile with --precision int8"):
        Evaluator(supernet, data, settings, predictor=LatencyPredictor.fit(fp32_profile), precision="int8")
    with pytest.raises(FieldError, match="onnxruntime"):
        ProfileSettings(target="cpu", precision="int8")
