"""Latency that ranks subnets, not noise: interleaved rounds, the re-measurement before the choice
(on a deliberately noisy fake timer) and the handed-over model re-measured as deployed."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nas.cli.main import main
from nas.data.datasets import Split, TaskData
from nas.errors import FieldError
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.finish.package import DeployedModel
from nas.hardware.measure import Latency, LatencySettings
from nas.hardware.rounds import interleaved_rounds
from nas.search.loop import Budget, run_search
from nas.search.records import COLUMNS as LOOP_COLUMNS
from nas.search.remeasure import (
    COLUMNS,
    Remeasure,
    as_deployed,
    candidates,
    feasible_front,
    miss_note,
    noise_note,
    remeasure_latency,
)
from search_spaces import Arch, HybridSupernet, get_space
from tests.helpers import tiny_supernet

LIMIT = 1.0


class FakeTimer:
    """Stands in for `TargetTimer`: each `measure` reads `next(readings)` ms."""

    def __init__(self, readings: Iterator[float]):
        self.readings = readings

    def measure(self, **stopping) -> Latency:
        return Latency(next(self.readings), 0.0, 10, 1, 1, "cpu")


def fake_timer(true_ms: Callable[[Arch], float], first: Callable[[Arch], float] = lambda a: 1.0,
               deployed: float | None = None) -> Callable[[torch.nn.Module], FakeTimer]:
    """`Evaluator.timer` on a noisy machine: a subnet's first two readings (the search's, warm-up
    included) are `first(arch)` times its true latency, later ones within 1% of it. The re-measurement
    before the choice times a subnet as deployed (a `DeployedModel`, timed once per subnet); a later
    `DeployedModel` of the same subnet is the handed-over model, and reads `deployed` ms when given."""
    count: dict[str, int] = {}
    timed_as_deployed: dict[str, int] = {}
    wobble = itertools.cycle([0.99, 1.0, 1.01])

    def timer(model: torch.nn.Module) -> FakeTimer:
        arch = model.arch
        handed_over = False
        if isinstance(model, DeployedModel):
            timed_as_deployed[arch.id] = timed_as_deployed.get(arch.id, 0) + 1
            handed_over = timed_as_deployed[arch.id] > 1

        def readings() -> Iterator[float]:
            while True:
                count[arch.id] = count.get(arch.id, 0) + 1
                if handed_over and deployed is not None:
                    yield deployed * next(wobble)
                else:
                    yield true_ms(arch) * (first(arch) if count[arch.id] <= 2 else next(wobble))
        return FakeTimer(readings())
    return timer


def _evaluator() -> Evaluator:
    """An untrained tiny supernet on a few random digit-shaped inputs."""
    data = TaskData("fake", *(Split(torch.randn(8, 1, 8, 8), torch.arange(8) % 10) for _ in range(3)), num_classes=10,
                    in_channels=1, input_size=8, dims=2, mean=(0.0,), std=(1.0,))
    return Evaluator(tiny_supernet(), data, LatencySettings())


def test_interleaved_rounds_shuffle_the_order_and_correct_the_drift() -> None:
    true = {"a": 0.5, "b": 0.6, "c": 0.7}
    # the machine's load at each reference reading: the untimed first, then before and after each round
    load = iter([1.0, 1.0, 1.0, 1.5, 1.5, 0.8, 0.8])
    state = {"load": 1.0}
    calls: list[str] = []

    def reference() -> float:
        state["load"] = next(load)
        calls.append("ref")
        return 0.4 * state["load"]

    def reader(key: str) -> Callable[[], float]:
        return lambda: calls.append(key) or true[key] * state["load"]

    session = interleaved_rounds({k: reader(k) for k in true}, reference, rounds=3, rng=np.random.default_rng(0),
                                 baseline_ms=0.4)
    # an untimed reference first, then per round: reference, every model once, reference
    assert calls[0] == "ref" and len(calls) == 1 + 3 * 5
    orders = [tuple(calls[2 + 5 * r: 5 + 5 * r]) for r in range(3)]
    assert all(sorted(o) == ["a", "b", "c"] for o in orders) and len(set(orders)) > 1
    assert session.drift == pytest.approx((1.0, 1.5, 0.8))
    for key, rounds in session.models.items():  # the load of each round is divided out
        assert rounds.readings_ms == pytest.approx((true[key],) * 3) and rounds.median_ms == pytest.approx(true[key])
    assert session.to_dict()["rounds"] == 3 and len(session.reference_ms) == 3
    with pytest.raises(ValueError, match="rounds"):
        interleaved_rounds({}, reference, rounds=0, rng=np.random.default_rng(0))


def _table(evaluator: Evaluator, rows: list[tuple[float, float]]) -> tuple[pd.DataFrame, list[Arch]]:
    """A search's evaluations: (val_acc, latency reading) per subnet, each a distinct subnet of tiny."""
    space, rng = evaluator.supernet.space, np.random.default_rng(1)
    archs: list[Arch] = []
    while len(archs) < len(rows):
        arch = space.sample(rng)
        if arch not in archs and arch != space.smallest():
            archs.append(arch)
    limits = Limits(max_latency_ms=LIMIT)
    table = pd.DataFrame([{"id": a.id, "val_acc": acc, "latency_ms": ms, "latency_iqr_ms": 0.01, "latency_measured_ms": ms,
                           "flops": 1, "params": 1, "memory_bytes": 1, "violation": limits.violation({"latency_ms": ms}),
                           "arch": a.to_json()} for a, (acc, ms) in zip(archs, rows)])
    table["feasible"] = table["violation"] == 0
    return table, archs


def test_rounds_change_a_front_built_on_a_noisy_timer() -> None:
    evaluator = _evaluator()
    #            A: read high      B            C            D            E: read over   F: slow    G: dominated
    true = [(0.80, 0.50), (0.85, 0.55), (0.90, 0.60), (0.95, 0.70), (0.97, 0.95), (0.60, 3.0), (0.75, 0.95)]
    first = [1.25, 1.0, 1.0, 1.0, 1.16, 1.0, 1.0]
    table, archs = _table(evaluator, [(acc, ms * f) for (acc, ms), f in zip(true, first)])
    before = [table.at[i, "id"] for i in feasible_front(table, "latency_ms")]
    assert before == [a.id for a in archs[1:4]]  # A looks dominated, E over the limit
    limits = Limits(max_latency_ms=LIMIT)
    found = candidates(table, limits=limits, column="latency_ms", margin=0.25)
    assert found[:3] == [3, 2, 1] and sorted(found) == [0, 1, 2, 3, 4]  # the first front first, the most accurate first;
    # F far over the limit and G surely dominated are left out
    truth = {a.id: ms for a, (_, ms) in zip(archs, true)} | {evaluator.supernet.space.smallest().id: 0.4}
    evaluator.timer = fake_timer(lambda a: truth[a.id])  # type: ignore[method-assign]
    done = remeasure_latency(evaluator, table, limits=limits, column="latency_ms", settings=Remeasure(rounds=3),
                             rng=np.random.default_rng(0))
    assert done is not None and sorted(done.rows) == [0, 1, 2, 3, 4] and done.considered == 5
    after = [table.at[i, "id"] for i in feasible_front(table, "latency_ms")]
    assert after == [a.id for a in archs[:5]]  # the front the true latencies give
    assert list(table.columns[-4:]) == COLUMNS
    assert table.at[0, "latency_search_ms"] == pytest.approx(0.625) and table.at[0, "latency_ms"] == pytest.approx(0.5, rel=0.02)
    assert (table.loc[:4, "latency_rounds"] == 3).all() and (table.loc[5:, "latency_rounds"] == 0).all()
    remeasured = table.loc[:4]
    assert (remeasured["latency_low_ms"] <= remeasured["latency_ms"]).all()
    assert (remeasured["latency_ms"] <= remeasured["latency_high_ms"]).all()
    assert table.loc[5:, "latency_low_ms"].isna().all() and table.at[5, "latency_ms"] == 3.0  # not re-measured
    assert done.record(Remeasure(rounds=3))["reference"] == evaluator.supernet.space.smallest().id


class NoisyMachine:
    """`Evaluator.timer` on a machine whose every reading is its model's true latency times a
    log-normal factor of `spread` (independent draws from `seed`)."""

    def __init__(self, truth: dict[str, float], spread: float, seed: int):
        self.truth, self.spread, self.rng = truth, spread, np.random.default_rng(seed)

    def __call__(self, model: torch.nn.Module) -> FakeTimer:
        ms = self.truth[model.arch.id]
        return FakeTimer(ms * float(np.exp(self.rng.normal(0, self.spread))) for _ in itertools.count())


def test_two_noisy_sessions_agree_on_the_resolved_front_and_keep_room_under_the_limit() -> None:
    evaluator = _evaluator()
    # a cluster of equal latencies; a slower, more accurate subnet; one just under the limit
    true = [(0.80, 0.50), (0.81, 0.50), (0.82, 0.50), (0.83, 0.50), (0.90, 0.80), (0.95, 0.99)]
    table, archs = _table(evaluator, true)
    truth = {a.id: ms for a, (_, ms) in zip(archs, true)} | {evaluator.supernet.space.smallest().id: 0.4}
    limits, plain, resolved = Limits(max_latency_ms=LIMIT), [], []
    for seed in range(3):
        session = table.copy()
        evaluator.timer = NoisyMachine(truth, spread=0.02, seed=seed)  # type: ignore[method-assign]
        done = remeasure_latency(evaluator, session, limits=limits, column="latency_ms", settings=Remeasure(rounds=5),
                                 rng=np.random.default_rng(seed))
        assert done is not None and sorted(done.rows) == list(range(6))
        assert 0.01 < done.resolution < 0.1 and done.record(Remeasure())["resolution"] == done.resolution
        # 0.99 ms meets the 1 ms limit by less than the resolution: not feasible
        assert not session.at[5, "feasible"] and session.at[5, "latency_ms"] * (1 + done.resolution) > LIMIT
        plain.append(feasible_front(session, "latency_ms"))
        resolved.append(feasible_front(session, "latency_ms", resolution=done.resolution))
    assert len({tuple(f) for f in plain}) > 1  # the plain front changes with the noise
    assert resolved == [[3, 4]] * 3  # the resolved one does not: the most accurate of the cluster, then the slower one


def test_the_remeasurement_fits_in_its_time() -> None:
    evaluator = _evaluator()
    table, archs = _table(evaluator, [(0.5 + 0.05 * k, 0.5 + 0.01 * k) for k in range(6)])
    truth = {a.id: 0.5 for a in archs} | {evaluator.supernet.space.smallest().id: 0.4}
    evaluator.timer = NoisyMachine(truth, spread=0.0, seed=0)  # type: ignore[method-assign]
    settings = Remeasure(rounds=4, samples=10, warmup=0, max_seconds=0.07)  # 4 x 10 x ~0.5 ms = 0.02 s a subnet
    assert settings.seconds_for(0.5) == pytest.approx(0.02)
    done = remeasure_latency(evaluator, table, limits=Limits(max_latency_ms=LIMIT), column="latency_ms",
                             settings=settings, rng=np.random.default_rng(0))
    assert done is not None and len(done.rows) == 3 and done.considered == 6
    assert done.resolution == 0.0  # no spread at all


def test_other_objectives_remeasure_only_near_the_latency_limit() -> None:
    table, _ = _table(_evaluator(), [(0.9, 0.5), (0.8, 0.95), (0.7, 1.1), (0.95, 2.0)])
    table["flops"] = [4, 3, 2, 1]
    assert candidates(table, limits=Limits(max_latency_ms=LIMIT), column="flops", margin=0.25) == [1, 2]


def test_noise_note_compares_the_spread_with_what_decides() -> None:
    table, _ = _table(_evaluator(), [(0.80, 0.50), (0.85, 0.52), (0.90, 0.55), (0.95, 0.97)])
    table["latency_rounds"], table["latency_iqr_ms"] = 5, 0.005
    table["latency_low_ms"], table["latency_high_ms"] = table["latency_ms"] - 0.01, table["latency_ms"] + 0.01
    assert noise_note(table, [0, 1, 2, 3], column="latency_ms", limit=LIMIT, chosen=3) is None
    table["latency_iqr_ms"] = 0.04  # against gaps of 0.02, 0.03 and 0.42 (median 0.03)
    table.at[3, "latency_high_ms"] = 1.02
    note = noise_note(table, [0, 1, 2, 3], column="latency_ms", limit=LIMIT, chosen=3)
    assert note is not None and note.startswith("latency differences are mostly noise: ")
    assert "differ by 0.040 ms (inter-quartile range, median of 4 subnets), more than the 0.030 ms between" in note
    assert "the rounds of 1 subnet(s), the chosen one among them, straddle the 1 ms limit" in note
    assert noise_note(table, [0, 1, 2, 3], column="latency_ms", limit=LIMIT, chosen=2).count(";") == 0


def test_search_records_the_rounds_and_reports_a_handed_over_miss(tmp_path) -> None:
    evaluator = _evaluator()
    space = evaluator.supernet.space
    noise = {}  # the search's first reading of each subnet: off by up to -30% / +50%

    def first(arch: Arch) -> float:
        return noise.setdefault(arch.id, float(np.random.default_rng(len(noise)).uniform(0.7, 1.5)))

    evaluator.timer = fake_timer(lambda a: space.count_flops(a) / 2e6, first, deployed=1.2)  # type: ignore[method-assign]
    summary = run_search(evaluator, tmp_path, budget=Budget(evaluations=6), limits=Limits(max_latency_ms=LIMIT),
                         strategy="random", seed=0, show_progress=False)
    table = pd.read_csv(tmp_path / "evaluations.csv", dtype={"id": str})
    pareto = pd.read_csv(tmp_path / "pareto.csv", dtype={"id": str})
    assert set(COLUMNS) <= set(table.columns) and set(COLUMNS) <= set(pareto.columns)
    assert (pareto["latency_rounds"] == 5).all() and table["latency_search_ms"].notna().all()
    rounds = summary["latency"]["rounds"]
    assert rounds["rounds"] == 5 and rounds["subnets"] == int((table["latency_rounds"] > 0).sum()) >= len(pareto)
    assert rounds["reference"] == space.smallest().id and len(rounds["drift"]) == 5
    check = summary["chosen"]["latency_handed_over"]
    assert check["meets_limit"] is False and check["median_ms"] == pytest.approx(1.2, rel=0.02)
    assert (check["target"], check["threads"], check["batch"], check["limit_ms"]) == ("cpu", 1, 1, LIMIT)
    assert check["note"].startswith(f"the handed-over model re-measured {check['median_ms']:.3f} ms (")
    assert "over the 1 ms limit" in check["note"] and f"nas finetune {tmp_path} --arch " in check["note"]
    meta = json.loads((tmp_path / summary["chosen"]["path"] / "model.json").read_text())
    latency = meta["costs"]["latency_ms"]
    assert latency["handed_over"] == check and latency["rounds"] == 5
    assert latency["low_ms"] <= latency["value"] <= latency["high_ms"]
    assert "over the 1 ms limit" in (tmp_path / summary["chosen"]["path"] / "README.md").read_text()
    assert json.loads((tmp_path / "search.json").read_text())["chosen"]["latency_handed_over"] == check


def test_rounds_zero_measures_once_as_before(tmp_path) -> None:
    evaluator = _evaluator()
    evaluator.timer = fake_timer(lambda a: 0.5, lambda a: 1.5)  # type: ignore[method-assign]
    summary = run_search(evaluator, tmp_path, budget=Budget(evaluations=3), limits=Limits(max_latency_ms=LIMIT),
                         strategy="random", seed=0, show_progress=False, remeasure=Remeasure(rounds=0))
    assert "rounds" not in summary["latency"] and summary["chosen"]["latency_handed_over"] is None
    table = pd.read_csv(tmp_path / "evaluations.csv")
    assert not set(COLUMNS) & set(table.columns) and (table["latency_ms"] == 0.75).all()


@pytest.mark.parametrize("field, value", [("rounds", -1), ("margin", 1.0), ("samples", 0), ("max_subnets", True),
                                          ("max_seconds", -1.0), ("resolution_iqrs", float("nan"))])
def test_settings_name_the_bad_field(field, value) -> None:
    with pytest.raises(FieldError, match=f"^{field} must be"):
        Remeasure(**{field: value})


def test_cli_says_what_the_handed_over_model_measured_and_that_it_missed(trained_run, tmp_path, monkeypatch,
                                                                        capsys) -> None:
    space = get_space("tiny")
    timer = fake_timer(lambda a: space.count_flops(a) / 4e6, deployed=1.5)
    monkeypatch.setattr(Evaluator, "timer", lambda self, model: timer(model))
    assert main(["search", "--supernet", str(trained_run), "--budget", "4", "--max-latency-ms", "1", "--finish",
                 "inherit", "--quiet", "--out", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    summary = json.loads((tmp_path / "run" / "search.json").read_text())
    check = summary["chosen"]["latency_handed_over"]
    assert not check["meets_limit"] and f" ms ({check['median_ms']:.3f} ms re-measured as handed over), " in out
    training = {f"nas: warning: {p['message']}" for p in summary["supernet"]["health"]["problems"]}  # the tiny supernet's
    below = "nas: warning: the handed-over model is below a scikit-learn baseline"  # inherited weights of 2 epochs
    warnings = [line for line in err.splitlines()
                if line.startswith("nas: warning:") and line not in training and not line.startswith(below)]
    assert warnings == [f"nas: warning: {check['note']}"]
    assert warnings[0].startswith(f"nas: warning: the handed-over model re-measured {check['median_ms']:.3f} ms")


def test_a_model_within_its_limit_is_no_miss() -> None:
    table, _ = _table(_evaluator(), [(0.9, 0.5)])
    assert miss_note({"meets_limit": True}, table, 0, Path("run")) is None
    assert miss_note({"meets_limit": None}, table, 0, Path("run")) is None  # no latency limit


def test_the_handed_over_model_is_timed_at_the_length_the_costs_are_for() -> None:
    space = get_space("seq")
    torch.manual_seed(0)
    arch = space.sample(np.random.default_rng(0))
    subnet = HybridSupernet(space).extract(arch)
    model = DeployedModel(subnet, mean=[0.5], std=[2.0], labels=range(3))
    assert as_deployed(model, None) is model and as_deployed(model, subnet.spec.input_size) is model
    longer = as_deployed(model, 4 * subnet.spec.input_size)
    assert isinstance(longer, DeployedModel) and longer.input_shape == (subnet.spec.in_channels, 4 * subnet.spec.input_size)
    assert longer.labels == model.labels and torch.equal(longer.std, model.std)
    assert all(torch.equal(a, b) for a, b in zip(longer.subnet.state_dict().values(), subnet.state_dict().values()))
    with torch.no_grad():
        assert longer(torch.zeros(1, *longer.input_shape)).shape == (1, subnet.spec.num_classes)


def test_a_search_stopped_before_its_summary_resumes_from_its_own_readings(tmp_path, monkeypatch) -> None:
    evaluator = _evaluator()
    evaluator.timer = fake_timer(lambda a: 0.5, lambda a: 1.5)  # type: ignore[method-assign]
    search = {"budget": Budget(evaluations=3), "limits": Limits(max_latency_ms=LIMIT), "strategy": "random", "seed": 0,
              "show_progress": False}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the chosen subnet is handed over

    with monkeypatch.context() as patch:
        patch.setattr("nas.search.loop.save_model_folder", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_search(evaluator, tmp_path, **search)
    table = pd.read_csv(tmp_path / "evaluations.csv")
    assert list(table.columns) == LOOP_COLUMNS and (table["latency_ms"] == 0.75).all()  # the search's readings
    assert not (tmp_path / "search.json").exists()
    run_search(evaluator, tmp_path, resume=True, **search)
    table = pd.read_csv(tmp_path / "evaluations.csv")
    assert (table["latency_search_ms"] == 0.75).all() and (table["latency_rounds"] == 5).all()
    assert table["latency_ms"].to_numpy() == pytest.approx(0.5, rel=0.03)


def test_a_subnet_left_without_rounds_also_needs_the_resolution_to_spare() -> None:
    """The time allows rounds for the first candidates only; the machine turns out coarser than the
    margin the candidates were chosen with: a subnet read once just under the limit is not feasible
    (the default job on a noisy machine handed over such a one, 0.90 ms read once, 1.41 re-measured)."""
    evaluator = _evaluator()
    #       re-measured: near the limit, the most accurate     never re-measured: read once at 0.9 ms
    rows = [(0.95, 0.97), (0.94, 0.96), (0.93, 0.95), (0.50, 0.90), (0.40, 0.30)]
    table, archs = _table(evaluator, rows)
    truth = {a.id: ms for a, (_, ms) in zip(archs, rows)} | {evaluator.supernet.space.smallest().id: 0.4}
    evaluator.timer = NoisyMachine(truth, spread=0.3, seed=0)  # type: ignore[method-assign]
    settings = Remeasure(rounds=5, samples=10, warmup=0, max_seconds=0.15, margin=0.05)  # ~0.05 s a subnet
    done = remeasure_latency(evaluator, table, limits=Limits(max_latency_ms=LIMIT), column="latency_ms",
                             settings=settings, rng=np.random.default_rng(0))
    assert done is not None and 3 not in done.rows and table.at[3, "latency_rounds"] == 0
    assert done.resolution > 0.12  # 0.9 ms x (1 + resolution) > 1 ms
    assert table.at[3, "latency_ms"] == 0.90 and not table.at[3, "feasible"] and table.at[3, "violation"] > 0
    assert table.at[4, "feasible"]  # far under the limit: feasible, re-measured or not
