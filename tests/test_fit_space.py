"""Spaces fitted to the data (search_spaces.fit): every built-in space on images and sequences of
other sizes, channels and classes; space files that state or leave out the data's fields."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces import (
    DATA_FIELDS,
    ArchError,
    DataShape,
    HybridSupernet,
    SearchSpace,
    SpaceConfig,
    SpaceFamily,
    get_family,
    get_space,
    list_spaces,
)
from tests.helpers import MICRO_SPACE

IMAGES = [(1, 8, 10), (3, 28, 2), (4, 32, 3), (3, 64, 5)]  # (channels, side, classes)
SEQUENCES = [(1, 20, 2), (3, 150, 4), (2, 1000, 3)]  # (channels, steps, classes)
# what a supernet forward pass is run on: every space and shape but `tiny` on 64x64 images (valid,
# checked below, but its untouched 64..96-pixel grids make the largest subnet slow on a CPU)
FORWARD = [(name, shape) for name in list_spaces()
           for shape in (IMAGES if get_space(name).config.dims == 2 else SEQUENCES) if (name, shape[1]) != ("tiny", 64)]


def _shape(name: str, channels: int, size: int, classes: int) -> DataShape:
    return DataShape(get_space(name).config.dims, channels, size, classes)


@pytest.mark.parametrize("name", list_spaces())
def test_a_builtin_space_on_its_reference_data_is_itself(name):
    config = get_space(name).config
    assert get_space(name, _shape(name, config.in_channels, config.input_size, config.num_classes)).config == config


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(name=st.sampled_from(list_spaces()), channels=st.integers(1, 8), size=st.integers(1, 1000),
       classes=st.integers(2, 1000))
def test_a_builtin_space_fits_any_data_shape(name, channels, size, classes):
    """The fitted space takes the data's fields, scales its resolutions and keeps the rest; it
    validates, and its extremes have costs."""
    reference = get_space(name).config
    config = get_space(name, _shape(name, channels, size, classes)).config
    assert (config.in_channels, config.input_size, config.num_classes) == (channels, size, classes)
    assert config.resolutions == tuple(dict.fromkeys(max(1, round(r * size / reference.input_size))
                                                     for r in reference.resolutions))
    assert config.stages == reference.stages and config.window == reference.window
    space = SearchSpace(config)
    for arch in (space.smallest(), space.largest()):
        assert space.count_flops(arch) > 0 and space.count_params(arch) > 0


@pytest.mark.parametrize(("name", "shape"), FORWARD, ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in FORWARD])
def test_fitted_supernet_runs_and_equals_its_extracted_subnets(name, shape):
    channels, size, classes = shape
    space = get_space(name, _shape(name, *shape))
    torch.manual_seed(0)
    supernet = HybridSupernet(space).eval()
    x = torch.randn(2, channels, *(size,) * space.config.dims)
    for arch in (space.smallest(), space.largest(), space.sample(np.random.default_rng(0))):
        with torch.no_grad():
            expected, got = supernet(x, arch), supernet.extract(arch).eval()(x)
        assert got.shape == (2, classes)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def _file(tmp_path, **changes) -> SpaceFamily:
    definition = {k: v for k, v in {**MICRO_SPACE, **changes}.items() if v is not None}
    path = tmp_path / "space.json"
    path.write_text(json.dumps(definition))
    return get_family(str(path))


def test_a_file_that_leaves_the_data_fields_out_takes_the_data(tmp_path):
    family = _file(tmp_path, in_channels=None, num_classes=None, input_size=None, resolutions=None)
    assert family.fitted == DATA_FIELDS
    config = family.fit(DataShape(2, 3, 28, 7))
    assert (config.in_channels, config.num_classes, config.input_size, config.resolutions) == (3, 7, 28, (28,))
    with pytest.raises(ArchError, match=r"space\.json leaves in_channels, num_classes, input_size to the data"):
        get_space(str(tmp_path / "space.json"))
    # resolutions the file states are as written (a file has no input size to scale them from)
    assert _file(tmp_path, input_size=None).fit(DataShape(2, 1, 28, 10)).resolutions == (8, 10)


@pytest.mark.parametrize(("key", "data", "message"), [
    ("in_channels", DataShape(2, 3, 8, 10), "sets in_channels 1, but the data's is 3"),
    ("input_size", DataShape(2, 1, 28, 10), "sets input_size 8, but the data's is 28"),
    ("num_classes", DataShape(2, 1, 8, 12), "sets num_classes 10, but the data's is 12"),
])
def test_a_file_that_contradicts_the_data_is_refused_naming_the_field(tmp_path, key, data, message):
    family = _file(tmp_path)
    with pytest.raises(ArchError, match=message) as info:
        family.fit(data)
    assert "space.json" in str(info.value) and "\n" not in str(info.value)
    assert family.fit(DataShape(2, 1, 8, 4)).num_classes == 10  # fewer classes than stated: kept


def test_a_space_of_the_other_kind_is_refused(tmp_path):
    with pytest.raises(ArchError, match=r"space 'seq' takes sequences \(dims 1\), but the data are images"):
        get_space("seq", DataShape(2, 1, 8, 10))


def test_a_broken_file_is_named_when_read_not_when_fitted(tmp_path):
    with pytest.raises(ArchError, match=r"space\.json: kernels must be odd"):
        _file(tmp_path, input_size=None, kernels=[4])


@pytest.mark.parametrize("leave_out", [(), ("in_channels",), DATA_FIELDS + ("resolutions",)])
def test_as_written_round_trips_through_a_file(tmp_path, leave_out):
    family = _file(tmp_path, **dict.fromkeys(leave_out))
    written = family.as_written()
    assert set(leave_out).isdisjoint(written)
    path = tmp_path / "again.json"
    path.write_text(json.dumps(written))
    again = get_family(str(path))
    assert again.as_written() == written
    shape = DataShape(2, 1, 8, 10)
    assert again.fit(shape) == family.fit(shape)


def test_a_fitted_space_round_trips_as_a_file_that_states_everything(tmp_path):
    config = get_space("cifar", DataShape(2, 1, 28, 10)).config
    path = tmp_path / "fitted.json"
    path.write_text(json.dumps(config.to_dict()))
    assert SpaceConfig.from_file(path) == config == get_space(str(path), DataShape(2, 1, 28, 10)).config


# ---------------------------------------------------------------------------------- through the CLI
@pytest.fixture
def sequences(tmp_path):
    """1 channel x 150 steps, 2 classes: not mnist1d's 40 steps and 10 classes."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 150)).astype(np.float32)
    y = np.arange(60) % 2
    x[y == 1, 70:80] += 3.0  # a learnable cue
    path = tmp_path / "my_sequences.npz"
    np.savez(path, x=x, y=y)
    return path


def test_space_show_prints_a_space_file_that_reads_back_the_same(tmp_path, capsys, sequences):
    from nas.cli.main import main

    assert main(["space", "show", "seq", "--data", str(sequences)]) == 0
    shown = capsys.readouterr().out
    fitted = SpaceConfig.from_dict(json.loads(shown))
    assert (fitted.in_channels, fitted.input_size, fitted.num_classes, fitted.resolutions) == (1, 150, 2, (150,))
    path = tmp_path / "mine.json"
    path.write_text(shown)
    for argv in (["space", "show", str(path)], ["space", "show", str(path), "--data", str(sequences)]):
        assert main(argv) == 0
        assert capsys.readouterr().out == shown
    assert main(["space", "show", "tiny"]) == 0
    assert SpaceConfig.from_dict(json.loads(capsys.readouterr().out)) == get_space("tiny").config


def test_a_contradicting_space_file_is_one_line_and_nothing_is_written(tmp_path, capsys, sequences):
    from nas.cli.main import main

    path = tmp_path / "mine.json"
    path.write_text(json.dumps(get_space("seq").config.to_dict()))  # 40 steps, 10 classes
    out = tmp_path / "run"
    assert main(["train", "--space", str(path), "--data", str(sequences), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nas: error: space file {path} sets input_size 40, but the data's is 150")
    assert err.count("\n") == 1 and not out.exists()


def test_the_sequence_example_runs_on_sequences_of_another_length(tmp_path, capsys, sequences):
    """docs/search-spaces.md: `nas search --space seq --data my_sequences.npz`; the run folder
    records the fitted space (space.json: what `nas extract`, `nas finetune` and --resume read)."""
    from nas.cli.main import main

    run = tmp_path / "run"
    assert main(["search", "--space", "seq", "--data", str(sequences), "--out", str(run), "--epochs", "1",
                 "--num-random", "0", "--budget", "2", "--strategy", "random", "--objective", "flops",
                 "--finish", "inherit", "--quiet"]) == 0
    fitted = get_space("seq", DataShape(1, 1, 150, 2)).config
    config = json.loads((run / "config.json").read_text())
    assert SpaceConfig.from_dict(config["space"]) == fitted
    assert SpaceConfig.from_dict(json.loads((run / "space.json").read_text())["space"]) == fitted
    chosen = json.loads((run / "search.json").read_text())["chosen"]
    model = json.loads((run / chosen["path"] / "model.json").read_text())
    assert model["spec"]["input_size"] == 150 and model["spec"]["num_classes"] == 2


def test_profile_of_the_space_fitted_to_the_data(tmp_path, capsys):
    """`nas profile --data` profiles the space a search on that data fits, which accepts it."""
    from nas.cli.main import main
    from nas.data.datasets import load_data
    from nas.evaluation.evaluator import Evaluator
    from nas.hardware.measure import LatencySettings
    from nas.hardware.profile import load_profile
    from predictors import LatencyPredictor

    space_file = tmp_path / "micro.json"
    space_file.write_text(json.dumps({k: v for k, v in MICRO_SPACE.items() if k not in DATA_FIELDS}))
    data_file = tmp_path / "images.npz"
    rng = np.random.default_rng(0)
    np.savez(data_file, x=rng.random((40, 6, 6, 3)).astype(np.float32), y=np.arange(40) % 3)
    args = ["profile", "--space", str(space_file), "--subnets", "2", "--passes", "1", "--max-seconds", "0.002",
            "--quiet", "--out", str(tmp_path / "profile.json")]
    assert main(args) == 2
    assert "leaves in_channels, num_classes, input_size to the data" in capsys.readouterr().err
    assert main([*args, "--data", str(data_file)]) == 0
    data = load_data(str(data_file))
    space = get_space(str(space_file), data.shape)
    predictor = LatencyPredictor.fit(load_profile(tmp_path / "profile.json"))
    assert predictor.space == space.config and (space.config.in_channels, space.config.input_size) == (3, 6)
    Evaluator(HybridSupernet(space), data, LatencySettings(), predictor=predictor)  # accepted
