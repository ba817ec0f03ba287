"""The run config of `nas train` and `nas search`: merged once from flags and a --config file,
recorded in config.json and type-checked when read back; one validation (the components'), whose
errors name fields in the library, flags on the command line and keys in files."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest

from nas.ablate.config import AblationConfig
from nas.cli.config import RunConfig, SearchRunConfig
from nas.cli.main import main
from nas.cli.parser import build_parser, flag
from nas.cli.run_config import run_config as _run_config
from nas.errors import FieldError, UserError
from nas.evaluation.limits import Limits
from nas.hardware.measure import LatencySettings
from nas.hardware.profile import ProfileSettings
from nas.runs.files import save_supernet
from nas.search.loop import Budget
from nas.search.strategies import list_strategies, make_strategy, strategy_options
from nas.training.config import TrainConfig
from search_spaces import HybridSupernet, get_space

TINY = get_space("tiny")


def _config(argv: list[str]):
    return _run_config(build_parser().parse_args(argv))


def refused(argv: list[str], capsys, *parts: str) -> str:
    """`nas argv` exits 2 with one line `nas: error: ...` holding every one of `parts`."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas: error: ") and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    return lines[0]


# ------------------------------------------------------------------------------ the value
def test_round_trip_through_json_keeps_equality_and_hash():
    for config in (RunConfig(), SearchRunConfig(),
                   RunConfig(space="seq", data="mnist1d", seed=7, epochs=3, lr=0.01, optimizer="sgd", no_distill=True,
                             workers=2, ray_address="auto"),
                   SearchRunConfig(budget="90s", max_flops=10**6, max_memory_mb=1.5, seq_len=64, objective="flops",
                                   strategy="predictor", predictor="ridge", strategy_options={"initial": 4, "local": 0.25,
                                                                                              "acquisition": "front"})):
        again = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
        assert again == config and hash(again) == hash(config)
    recorded = SearchRunConfig(strategy_options={"initial": 4}).to_dict()
    assert recorded["strategy_options"] == {"initial": 4}  # JSON: an object
    assert set(recorded) == {f.name for f in fields(SearchRunConfig)}


def test_each_component_gets_its_own_part():
    config = SearchRunConfig(seed=5, epochs=3, no_distill=True, budget="30", max_params=40000, max_flops=10**6,
                             threads=2, latency_batch=4)
    assert config.train_config("cpu") == TrainConfig(epochs=3, distill=False, seed=5, device="cpu")
    assert config.limits() == Limits(max_params=40000, max_flops=10**6)
    assert config.search_budget() == Budget(evaluations=30)
    assert config.latency_source().settings == LatencySettings(device="cpu", threads=2, batch_size=4)
    assert SearchRunConfig().train_config("cpu") == TrainConfig()  # the same defaults
    assert _config(["train", "--best-of", "3", "--num-random", "4"]).train_config("cpu").best_of == 3


@pytest.mark.parametrize("values, message", [
    ({"epochs": "3"}, "epochs must be an integer, got '3'"),
    ({"epochs": 3.0}, "epochs must be an integer, got 3.0"),
    ({"lr": math.nan}, "lr must be a finite number, got nan"),
    ({"weight_decay": math.inf}, "weight_decay must be a finite number, got inf"),
    ({"hflip": 1}, "hflip must be true or false, got 1"),
    ({"max_flops": "1e6"}, "max_flops must be an integer, got '1e6'"),
    ({"data": 5}, "data must be a string, got 5"),
    ({"colour": "red"}, "colour is not a setting of `nas search`"),
    ({"max_flops": -1}, "max_flops must be > 0, got -1"),
    ({"latency_batch": 0}, "latency_batch must be an integer >= 1, got 0"),
    ({"budget": "ten"}, "budget 'ten' is malformed"),
    ({"strategy": "annealing"}, "strategy must be one of"),
    ({"strategy": "random", "predictor": "gp"}, "predictor applies only to the strategies that learn one ['predictor']"),
    ({"strategy": "random", "strategy_options": {"population_size": 8}},
     "strategy_options.population_size is not an option of strategy 'random' (its options: none)"),
    ({"strategy_options": {"initial": [1]}}, "strategy_options.initial must be a string, a finite number"),
    ({"strategy_options": [1, 2]}, "strategy_options must be an object"),
])
def test_type_and_value_errors_name_the_field(values, message):
    with pytest.raises(FieldError) as info:
        SearchRunConfig.from_dict(values)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_train_config_takes_no_search_setting():
    with pytest.raises(FieldError, match="budget is not a setting of `nas train`"):
        RunConfig.from_dict({"budget": "200"})


# ------------------------------------------------------------------------------ one validation, three faces
def test_the_library_speaks_in_fields():
    cases = [(lambda: Limits(max_flops=-1), "max_flops must be > 0, got -1"),
             (lambda: LatencySettings(batch_size=0), "batch_size must be an integer >= 1, got 0"),
             (lambda: Budget.parse("0"), "budget must be at least 1 evaluation, got '0'"),
             (lambda: TrainConfig(epochs=0), "epochs must be >= 1, got 0"),
             (lambda: ProfileSettings(batch=0), "batch must be >= 1, got 0"),
             (lambda: make_strategy("evolution", TINY, seed=0, options={"population_size": 1}),
              "population_size must be an integer >= 2, got 1")]
    for make, message in cases:
        with pytest.raises(FieldError) as info:
            make()
        assert str(info.value) == message


def test_every_field_is_set_by_its_flag():
    default = SearchRunConfig()
    for f in fields(SearchRunConfig):
        value = getattr(default, f.name)
        if isinstance(value, bool):
            argv = [flag(f.name)]
        elif f.name == "strategy_options":
            argv = [flag(f.name), "initial=4"]
        else:
            argv = [flag(f.name), "1" if value is None else str(value)]
        args = build_parser().parse_args(["search", *argv])
        assert hasattr(args, f.name), (f.name, argv)
    assert flag("max_flops") == "--max-flops" and flag("latency_batch") == "--latency-batch"
    assert flag("strategy_options") == "--strategy-option"
    assert flag("strategy_options.initial") == "--strategy-option initial"


def test_flag_names_agree_across_commands():
    parse = build_parser().parse_args
    assert parse(["ablate", "sweep.json", "--ray-address", "auto"]).ray_address == "auto"
    assert parse(["search", "--ray-address", "auto"]).ray_address == "auto"
    assert parse(["profile", "--latency-batch", "4"]).latency_batch == 4
    assert parse(["search", "--latency-batch", "4"]).latency_batch == 4
    for old in (["ablate", "sweep.json", "--address", "auto"], ["profile", "--batch", "4"]):
        with pytest.raises(SystemExit):
            parse(old)


@pytest.mark.parametrize("argv, message", [
    (["search", "--max-flops", "-1"], "--max-flops must be > 0, got -1"),
    (["search", "--latency-batch", "0"], "--latency-batch must be an integer >= 1, got 0"),
    (["search", "--threads", "0"], "--threads must be an integer >= 1, got 0"),
    (["search", "--budget", "0"], "--budget must be at least 1 evaluation, got '0'"),
    (["search", "--max-latency-ms", "inf"], "--max-latency-ms must be a finite number, got inf"),
    (["train", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["train", "--seed", "-1"], "--seed must be in [0, 2**63), got -1"),
    (["train", "--num-random", "-1"], "--num-random must be >= 0, got -1"),
    (["train", "--best-of", "0"], "--best-of must be >= 1, got 0"),
    (["train", "--best-of", "2", "--workers", "2"], "--best-of must be 1 in data-parallel training (got 2)"),
    (["search", "--strategy", "evolution", "--predictor", "gp"], "--predictor applies only to the strategies"),
    (["search", "--strategy-option", "initial"], "--strategy-option takes KEY=VALUE, got 'initial'"),
    (["search", "--strategy-option", "initial=4", "--strategy-option", "initial=5"], "--strategy-option gives an option twice"),
    (["search", "--strategy", "evolution", "--strategy-option", "popsize=8"],
     "--strategy-option popsize is not an option of strategy 'evolution' (its options: crossover_prob, mutation_prob, "
     "population_size)"),
    (["profile", "--latency-batch", "0"], "--latency-batch must be >= 1, got 0"),
])
def test_the_cli_speaks_in_flags(argv, message, tmp_path, capsys):
    refused([*argv, "--out", str(tmp_path / "run"), "--quiet"], capsys, message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, message", [
    ("population_size=1", "--strategy-option population_size must be an integer >= 2, got 1"),
    ("mutation_prob=2", "--strategy-option mutation_prob must be a number in (0, 1], got 2"),
])
def test_option_values_are_checked_by_the_constructor_before_anything_runs(option, message, tmp_path, capsys):
    argv = ["search", "--strategy", "evolution", "--strategy-option", option, "--objective", "flops",
            "--out", str(tmp_path / "run"), "--quiet"]
    refused(argv, capsys, message)
    assert not (tmp_path / "run").exists()
    refused(["search", "--predictor", "svm", "--objective", "flops", "--out", str(tmp_path / "run")], capsys,
            "--predictor must be one of")


def test_the_ablation_config_speaks_in_its_keys():
    base = {"name": "s", "grid": {"strategy": ["evolution", "predictor"]}, "search": {"max_flops": 4000000}}

    def refused_config(search: dict) -> str:
        with pytest.raises(UserError) as info:
            AblationConfig.from_dict(base | {"search": base["search"] | search})
        return str(info.value)

    assert refused_config({"max_flops": -5}) == "search.max_flops must be > 0, got -5"
    assert refused_config({"max_params": "big"}) == "search.max_params must be a finite number, got 'big'"
    assert refused_config({"strategy_options": {"evolution": {"popsize": 8}}}).startswith(
        "search.strategy_options.evolution.popsize is not an option of strategy 'evolution'")
    assert refused_config({"strategy_options": {"evolution": {"population_size": 1}}}) == (
        "search.strategy_options.evolution.population_size must be an integer >= 2, got 1")
    assert "grid.strategy has no 'random'" in refused_config({"strategy_options": {"random": {}}})
    assert "'annealing' is not one of" in refused_config({"strategy_options": {"annealing": {}}})
    assert "search.strategy_options.evolution must be a JSON object" in refused_config(
        {"strategy_options": {"evolution": [8]}})
    config = AblationConfig.from_dict(base | {"search": base["search"] | {
        "strategy_options": {"evolution": {"population_size": 8}, "predictor": {"initial": 4, "batch": 2}}}})
    assert config.search.options_of("predictor") == {"initial": 4, "batch": 2}
    assert config.search.options_of("evolution") == {"population_size": 8}
    assert config.to_dict()["search"]["strategy_options"]["predictor"] == {"batch": 2, "initial": 4}
    assert "strategy_options" not in AblationConfig.from_dict(base).to_dict()["search"]  # as recorded before it existed


def test_strategy_options_come_from_the_constructors():
    assert strategy_options("evolution") == ["crossover_prob", "mutation_prob", "population_size"]
    assert strategy_options("random") == []
    assert {"initial", "batch", "population"} <= set(strategy_options("predictor"))
    for name in list_strategies():  # what the search passes is never an option
        assert not {"seed", "prefilter", "surrogate", "predictor", "n_objectives"} & set(strategy_options(name))
    assert make_strategy("evolution", TINY, seed=0, options={"population_size": 4}).population_size == 4
    assert make_strategy("predictor", TINY, seed=0, predictor="ridge", options={"initial": 3}).initial == 3


# ------------------------------------------------------------------------------ merging: a --config file and flags
def test_a_config_file_is_merged_with_the_flags_given(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"epochs": 3, "max_flops": 100, "lr": 0.01, "strategy": "evolution",
                                "strategy_options": {"population_size": 8, "mutation_prob": 0.1}}))
    config = _config(["search", "--config", str(path), "--max-flops", "1500000", "--lr", "0.001",
                      "--strategy-option", "mutation_prob=0.5"])
    assert config.epochs == 3 and config.strategy == "evolution"  # from the file
    assert config.max_flops == 1500000 and config.lr == 0.001  # flags given win, even with the default value
    assert dict(config.strategy_options) == {"population_size": 8, "mutation_prob": 0.5}
    assert config == SearchRunConfig(epochs=3, max_flops=1500000, strategy="evolution",
                                     strategy_options={"population_size": 8, "mutation_prob": 0.5})
    assert _config(["train"]) == RunConfig() and _config(["search"]) == SearchRunConfig()


def test_a_bad_config_file_is_named_with_its_key(tmp_path, capsys):
    path = tmp_path / "settings.json"
    for content, message in [({"epochs": 0}, "settings.json: epochs must be >= 1, got 0"),
                             ({"epochs": "3"}, "settings.json: epochs must be an integer, got '3'"),
                             ({"colour": 1}, "settings.json: colour is not a setting of `nas train`"),
                             ([1, 2], "must hold a JSON object of settings")]:
        path.write_text(json.dumps(content))
        refused(["train", "--config", str(path), "--out", str(tmp_path / "run")], capsys, message)
    path.write_text(json.dumps({"epochs": 0}))
    assert _config(["train", "--config", str(path), "--epochs", "2"]).epochs == 2  # the flag replaces the bad value
    refused(["train", "--config", str(tmp_path / "none.json")], capsys, "none.json does not exist")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ config.json: recorded, read back
def _recorded_run(folder: Path, args: dict, command: str = "search") -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"command": command, "args": args}))
    return folder


def test_a_config_recorded_before_settings_existed_takes_their_defaults(tmp_path):
    """As `nas search` wrote config.json before the typed config: the invocation flags among the
    settings, and neither --predictor nor --strategy-option (nor --seq-len, older still)."""
    old = {"batch_size": 64, "budget": "60", "command": "search", "data": "digits", "device": "cpu", "epochs": 3,
           "force": False, "hflip": False, "latency_batch": 1, "lr": 0.001, "max_flops": 1500000,
           "max_latency_ms": None, "max_memory_mb": None, "max_params": None, "no_distill": False, "num_random": 2,
           "objective": "flops", "optimizer": "adamw", "out": "/elsewhere", "quiet": True, "ray": False,
           "ray_address": None, "resume": False, "sampling": "sandwich", "seed": 3, "space": "tiny",
           "strategy": "predictor", "supernet": None, "target": "cpu", "threads": 1, "warmup_epochs": 2,
           "weight_decay": 0.05, "workers": None}
    run = _recorded_run(tmp_path / "old", old)
    config = _config(["search", "--out", str(run), "--resume"])
    assert config == SearchRunConfig(budget="60", data="digits", epochs=3, max_flops=1500000, objective="flops", seed=3)
    assert config.seq_len is None and config.predictor is None and config.strategy_options == ()
    assert _config(["search", "--out", str(run), "--resume", "--device", "cpu", "--workers", "2"]).workers == 2


@pytest.mark.parametrize("edit, message", [
    ({"epochs": "3"}, "config.json: epochs must be an integer, got '3'"),
    ({"lr": math.nan}, "config.json: lr must be a finite number, got nan"),
    ({"max_flops": 1e400}, "config.json: max_flops must be an integer, got inf"),
    ({"colour": "red"}, "config.json: colour is not a setting of `nas search`"),
    ({"strategy_options": {"popsize": 8}}, "config.json: strategy_options.popsize is not an option of strategy"),
    ({"budget": None}, "config.json: budget must be a string, got None"),
])
def test_a_damaged_config_json_is_refused_on_resume_naming_the_key(edit, message, tmp_path, capsys):
    args = SearchRunConfig(max_flops=1500000, objective="flops").to_dict() | edit
    run = _recorded_run(tmp_path / "run", args)
    refused(["search", "--out", str(run), "--resume", "--quiet"], capsys, message)
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_resume_refuses_other_flags_by_name(tmp_path, capsys):
    run = _recorded_run(tmp_path / "run", SearchRunConfig().to_dict())
    settings = tmp_path / "settings.json"
    settings.write_text("{}")
    for extra, name in [(["--predictor", "gp"], "--predictor"), (["--strategy-option", "initial=4"], "--strategy-option"),
                        (["--config", str(settings)], "--config"), (["--force"], "--force"),
                        (["--seq-len", "8", "--max-flops", "5"], "--max-flops, --seq-len")]:
        refused(["search", "--out", str(run), "--resume", *extra], capsys,
                f"only --device, --quiet, --ray, --ray-address, --workers, --data-workers and --stream-data may be given with it (got {name})")


def test_predictor_and_strategy_options_reach_the_search_and_are_recorded(tmp_path, capsys):
    supernet = save_supernet(tmp_path / "supernet", HybridSupernet(TINY), {})
    out = tmp_path / "run"
    argv = ["search", "--supernet", str(supernet), "--budget", "5", "--objective", "flops", "--strategy", "predictor",
            "--predictor", "ridge", "--strategy-option", "initial=2", "--strategy-option", "batch=1",
            "--strategy-option", "acquisition=front", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    recorded = json.loads((out / "config.json").read_text())["args"]
    assert recorded["predictor"] == "ridge"
    assert recorded["strategy_options"] == {"acquisition": "front", "batch": 1, "initial": 2}
    table = pd.read_csv(out / "evaluations.csv")
    assert len(table) == 5 and table["acc_predicted"].iloc[:2].isna().all()  # 2 random, then predicted proposals
    assert table["acc_predicted"].iloc[2:].notna().all()
    (out / "search.json").unlink()  # as if interrupted: --resume reads the recorded config back
    assert _config(["search", "--out", str(out), "--resume"]) == SearchRunConfig.from_dict(recorded)


def test_the_seq_space_trains_with_its_own_sampling_rule_unless_one_is_set(tmp_path, capsys):
    config = _config(["search", "--space", "seq", "--data", "mnist1d"])
    assert (config.sampling, config.num_random) == ("uniform", 4)
    assert "sampling uniform, 4 subnets a step: the default for space seq" in capsys.readouterr().out
    assert (_config(["search", "--space", "tiny"]).sampling, _config(["train"]).sampling) == ("sandwich",) * 2
    given = _config(["train", "--space", "seq", "--data", "mnist1d", "--num-random", "2"])  # either one set: none
    assert (given.sampling, given.num_random) == ("sandwich", 2) and "sampling uniform" not in capsys.readouterr().out
    file = tmp_path / "run.json"
    file.write_text(json.dumps({"space": "seq", "data": "mnist1d", "sampling": "complexity"}))
    assert (_config(["train", "--config", str(file)]).sampling, _config(["train", "--config", str(file)]).num_random) \
        == ("complexity", 2)
