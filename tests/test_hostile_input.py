"""Hostile input: malformed or malicious values and files give one clear error line, never a
traceback, and never run code.

Property-based fuzzing (hypothesis, derandomized so CI is reproducible) of every parser of user
data: architectures, space definitions, training configs, latency profiles and predictors, on
arbitrary JSON-like values and on mutations of valid ones. The invariant is always the same:
either the value is accepted and round-trips losslessly, or the project's error is raised with a
one-line message that names the offending key or file. Then corrupt and malicious files through
the CLI (pickles whose unpickling would create a marker file, truncated and random weights, a
supernet paired with another space, checkpoints with hostile contents, a profile of another format
version), and a scan of the source tree for unsafe deserialization.
"""

from __future__ import annotations

import copy
import json
import math
import pathlib
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nas.cli.main import main
from nas.errors import UserError
from nas.hardware.profile import PROFILE_FORMAT, PROFILE_VERSION, load_profile
from nas.runs.files import write_json
from nas.training.config import TrainConfig
from predictors import LatencyPredictor, MissingBlockError
from search_spaces import Arch, ArchError, SearchSpace, SpaceConfig, get_family, get_space, list_spaces
from tests.helpers import FAST, MICRO_SPACE, ROOT, TRAIN_SETTINGS

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=100)

# ---------------------------------------------------------------------------------- values
LEAVES = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
          | st.text(max_size=12))
JSON_LIKE = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=16,
)
# values a hostile or careless user writes in place of a valid one
SPECIAL = st.sampled_from([
    0, -1, -3, 1, 2, 3, 7, 2**31, 2**63, 10**30, -(10**30), 0.5, 2.0, -0.0, 1e308, -1e308,
    float("inf"), float("-inf"), float("nan"), True, False, None, "", " ", "softmax ", "SOFTMAX", "gelu",
    "pool", "attn", "conv", "free", "conv_first", "1", "nan", "\n", [], {}, [[]], [{}], [1, 1], [-1], ["conv", "conv"],
])
REPLACEMENT = SPECIAL | LEAVES | JSON_LIKE
MIXER_NAMES = st.sampled_from(["softmax", "linear", "window", "pool", "Softmax", "relu", "", "flash", "pool "])


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (dict keys and list indices) into a JSON-like value, the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _at(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


def nudges(value: Any) -> list[Any]:
    """Hostile variants of one valid value: same-looking other types, boundaries, huge, empty."""
    if isinstance(value, bool):
        return [int(value), str(value).lower(), not value, None]
    if isinstance(value, (int, float)):
        other_type = (float(value) if abs(value) < 1e300 else 1e300) if isinstance(value, int) else (
            int(value) if math.isfinite(value) else 0)
        return [0, -value, -1, other_type, value * 10**30, 2**63, 10**400, float("nan"), float("inf"), -float("inf"),
                True, str(value), None, [value]]
    if isinstance(value, str):
        return ["", value.upper(), value + " ", value[:-1], "gelu", 0, None, [value], {value: value}]
    if isinstance(value, list):
        return [[], value + value[:1], value[:1] * 3, value[::-1], [None], {}, None, "x", [value]]
    if isinstance(value, dict):
        return [{}, [], None, list(value), {**value, "extra": 1}, [value]]
    return [0, "", None]


@st.composite
def mutations(draw, base: Any, keys: tuple[str, ...] = (), root: str = "") -> tuple[Any, set[str]]:
    """`base` with 1 to 3 random edits: drop or add a key, nudge a value (`nudges`), replace it by
    an arbitrary JSON value, drop or duplicate a list element; also the names of the dict keys on
    the edited paths (`root` for an edit of the whole value)."""
    data, touched = copy.deepcopy(base), set()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(data)))
        target = _at(data, path)
        op = draw(st.sampled_from(["nudge", "nudge", "nudge", "drop", "add", "replace", "element"]))
        touched |= {k for k in path if isinstance(k, str)} or {root}
        if op == "drop" and path:
            del _at(data, path[:-1])[path[-1]]
            continue
        if op == "add" and isinstance(target, dict):
            key = draw(st.sampled_from(keys) | st.text(max_size=8) | st.integers(-2, 2) if keys else st.text(max_size=8))
            target[key] = draw(REPLACEMENT)
            touched.add(str(key))
            continue
        if op == "element" and isinstance(target, list) and target:
            i = draw(st.integers(0, len(target) - 1))
            if draw(st.booleans()):
                del target[i]
            else:
                target.insert(i, copy.deepcopy(target[i]))
            continue
        new = draw(st.sampled_from(nudges(target)) if op != "replace" else REPLACEMENT | MIXER_NAMES)
        if not path:
            data = new
        else:
            _at(data, path[:-1])[path[-1]] = new
    return data, touched


def single_edits(base: Any) -> list[tuple[tuple, Any]]:
    """Every (path, value) that replaces exactly one value of `base` by one of its `nudges`."""
    return [(path, new) for path in _paths(base) if path for new in nudges(_at(base, path))]


def edited(base: Any, path: tuple, new: Any) -> Any:
    data = copy.deepcopy(base)
    _at(data, path[:-1])[path[-1]] = new
    return data


def assert_clear(error: BaseException, names: set[str] | tuple[str, ...] = ()) -> str:
    """One non-empty line, no traceback; when `names` are given, at least one is in the message."""
    message = str(error)
    assert message.strip() and "\n" not in message and "Traceback" not in message, repr(message)
    assert len(message) < 2000, f"message of {len(message)} characters"
    if names:
        assert any(n in message for n in names), f"{message!r} names none of {sorted(names)}"
    return message


# ---------------------------------------------------------------------------------- architectures
ARCH_FIELDS = ("arch", "resolution", "stem_width", "stages", "width", "stride", "blocks", "depth", "type",
               "kernel", "expand", "mixer", "heads", "mlp_ratio", "layout")
ARCH_KEYS = ("resolution", "stem_width", "stages", "width", "stride", "blocks", "type", "kernel", "expand",
             "mixer", "heads", "mlp_ratio")


def _check_arch(arch: Arch) -> None:
    again = Arch.from_json(arch.to_json())
    assert again == arch and hash(again) == hash(arch) and again.id == arch.id
    assert Arch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch


@st.composite
def arch_dicts(draw) -> tuple[SearchSpace, Any, set[str]]:
    space = get_space(draw(st.sampled_from(list_spaces())))
    arch = space.sample(np.random.default_rng(draw(st.integers(0, 2**16))))
    data, touched = draw(mutations(arch.to_dict(), ARCH_KEYS, "arch"))
    return space, data, touched


@FUZZ
@given(JSON_LIKE)
def test_arch_parsers_on_arbitrary_json_values(value):
    space = get_space("tiny")
    for parse in (Arch.from_dict, space.parse, lambda v: Arch.from_json(json.dumps(v))):
        try:
            arch = parse(value)
        except ArchError as e:
            assert_clear(e, ARCH_FIELDS)
        else:
            _check_arch(arch)


@FUZZ
@given(arch_dicts())
def test_arch_parsers_on_mutated_valid_architectures(case):
    space, data, touched = case
    for in_space, parse in [(False, Arch.from_dict), (True, space.parse), (True, lambda v: space.parse(json.dumps(v)))]:
        try:
            arch = parse(data)
        except ArchError as e:
            assert_clear(e, touched)
        else:
            _check_arch(arch)
            if in_space:
                assert space.validate(arch) is arch


@pytest.mark.parametrize("name", list_spaces())
def test_arch_every_single_edit_is_accepted_validly_or_named(name):
    space = get_space(name)
    base = space.largest().to_dict()
    for path, new in single_edits(base):
        data = edited(base, path, new)
        try:
            arch = space.parse(data)
        except ArchError as e:
            assert_clear(e, {k for k in path if isinstance(k, str)})
        else:
            _check_arch(arch)
            assert space.validate(arch) is arch and arch.to_dict() == data, (path, new)


@FEW
@given(st.text(max_size=40) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_arch_from_json_on_arbitrary_text(text):
    try:
        _check_arch(Arch.from_json(text))
    except ArchError as e:
        assert_clear(e, ARCH_FIELDS)


@pytest.mark.parametrize("text", [
    "[" * 100_000,                      # nesting deeper than the recursion limit
    '{"resolution": ' + "9" * 5000 + "}",  # an integer longer than Python converts from text
    '{"resolution": 8, "stem_width": 16, "stages": ' + "[" * 5000 + "]" * 5000 + "}",
    "NaN", "Infinity", "", "\x00", '"arch"',
])
def test_arch_from_json_on_pathological_text(text):
    with pytest.raises(ArchError) as info:
        Arch.from_json(text)
    assert_clear(info.value, ARCH_FIELDS)


def test_arch_rejects_values_that_only_look_valid():
    """Python equality would let these through (True == 1, 1.0 == 1, 0.0 == 0), but they are
    other JSON than the architecture's own: another id for the same subnet, or a float stride."""
    space = get_space("tiny")
    arch = space.largest().to_dict()
    for path, value in [(("stages", 0, "stride"), True), (("stages", 0, "stride"), 1.0),
                        (("resolution",), 8.0), (("stages", 0, "blocks", 0, "kernel"), 3.0),
                        (("stages", 0, "width"), float("inf")),
                        (("stages", 0, "blocks", 0, "expand"), float("inf"))]:
        data = copy.deepcopy(arch)
        _at(data, path[:-1])[path[-1]] = value
        with pytest.raises(ArchError) as info:
            space.parse(data)
        assert_clear(info.value, {path[-1]})
    pool = {"type": "attn", "mixer": "pool", "heads": 0.0, "mlp_ratio": 2}
    with pytest.raises(ArchError, match="heads"):
        Arch.from_dict({**arch, "stages": [{"width": 16, "stride": 1, "blocks": [pool]}]})
    odd = {**arch, "stages": arch["stages"][:1], 7: "x", "stages ": []}  # a non-string key among strings
    with pytest.raises(ArchError, match="unknown key"):
        Arch.from_dict(odd)


def test_arch_from_dict_on_deep_and_huge_values():
    deep: Any = 8
    for _ in range(100_000):
        deep = [deep]
    huge = list(range(100_000))
    for value in (deep, huge, "x" * 100_000, {str(i): i for i in range(10_000)}):
        for data in (value, {"resolution": value, "stem_width": 16, "stages": []},
                     {"resolution": 8, "stem_width": 16, "stages": [{"width": 8, "stride": value, "blocks": [value]}]}):
            with pytest.raises(ArchError) as info:
                Arch.from_dict(data)
            assert_clear(info.value, ARCH_FIELDS)


# ---------------------------------------------------------------------------------- space definitions
SPACE_FIELDS = ("space", "name", "in_channels", "num_classes", "input_size", "resolutions", "stem_widths", "stages",
                "stem_stride", "kernels", "expand_ratios", "mixers", "heads", "mlp_ratios", "head_dim", "window",
                "layout", "depths", "widths", "strides", "block_types")


def _check_space(config: SpaceConfig) -> None:
    """An accepted definition round-trips and makes a space whose operations work."""
    assert SpaceConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    hash(config)
    space = SearchSpace(config)
    if sum(max(s.depths) for s in config.stages) > 64:  # legal but enormous (size() takes powers of the depths)
        return
    assert space.size() >= 1
    rng = np.random.default_rng(0)
    for arch in (space.smallest(), space.largest(), space.sample(rng), *space.smallest_variants()):
        assert space.validate(arch) is arch
        _check_arch(arch)
        space.count_params(arch)
    space.mutate(space.largest(), rng)
    space.encode(space.smallest())


@st.composite
def space_dicts(draw) -> tuple[Any, set[str]]:
    base = get_space(draw(st.sampled_from(list_spaces()))).config.to_dict()
    return draw(mutations(json.loads(json.dumps(base)), SPACE_FIELDS, "space"))


@FUZZ
@given(JSON_LIKE)
def test_space_config_on_arbitrary_json_values(value):
    try:
        config = SpaceConfig.from_dict(value)
    except ArchError as e:
        assert_clear(e, SPACE_FIELDS)
    else:
        _check_space(config)


@FUZZ
@given(space_dicts())
def test_space_config_on_mutated_builtin_spaces(case):
    data, touched = case
    try:
        config = SpaceConfig.from_dict(data)
    except ArchError as e:
        assert_clear(e, touched)
    else:
        _check_space(config)


@pytest.mark.parametrize("name", list_spaces())
def test_space_config_every_single_edit_is_accepted_validly_or_named(name):
    base = json.loads(json.dumps(get_space(name).config.to_dict()))
    for path, new in single_edits(base):
        try:
            config = SpaceConfig.from_dict(edited(base, path, new))
        except ArchError as e:
            assert_clear(e, {k for k in path if isinstance(k, str)})
        else:
            _check_space(config)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@FEW
@given(data=space_dicts().map(lambda case: json.dumps(case[0]).encode())
       | st.binary(max_size=64) | st.sampled_from([b"", b"\xff\xfe{", b"{\"name\": 1e999}"]))
def test_space_file_on_mutated_and_garbage_bytes(scratch, data):
    path = scratch / "space.json"
    path.write_bytes(data)
    try:
        config = SpaceConfig.from_file(path)
    except ArchError as e:
        assert "space.json" in assert_clear(e, SPACE_FIELDS)
    else:
        _check_space(config)


@pytest.mark.parametrize("data", [b"[" * 100_000, b'{"name": "x", "input_size": ' + b"9" * 5000 + b"}", b"\xff\xfe{}",
                                  b"", b"null", b"{}", b'{"name": "tiny"}', b"\x80\x04\x95"])
def test_space_file_on_pathological_bytes(scratch, data):
    path = scratch / "bad-space.json"
    path.write_bytes(data)
    with pytest.raises(ArchError) as info:
        SpaceConfig.from_file(path)
    assert "bad-space.json" in assert_clear(info.value)
    with pytest.raises(ArchError) as info:  # as what --space reads: a definition that may leave the data's fields out
        get_family(str(path))
    assert "bad-space.json" in assert_clear(info.value)


def test_a_key_written_twice_is_named_not_silently_overridden(tmp_path, capsys):
    """JSON keeps the last of two equal keys; in a file a person wrote, that hides a typo."""
    space = json.dumps(get_space("tiny").config.to_dict())
    path = tmp_path / "space.json"
    path.write_text(space[:-1] + ', "heads": [1]}')
    with pytest.raises(ArchError, match=r"space.json.*duplicate key 'heads'"):
        SpaceConfig.from_file(path)
    arch = get_space("tiny").largest().to_json()
    with pytest.raises(ArchError, match="duplicate key 'resolution'"):
        Arch.from_json(arch[:-1] + ', "resolution": 8}')
    ablation = tmp_path / "ablation.json"
    ablation.write_text('{"name": "a", "name": "b"}')
    assert main(["ablate", str(ablation), "--out", str(tmp_path / "sweep")]) == 2
    assert "duplicate key 'name'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- training config
TRAIN_FIELDS = tuple(TrainConfig().to_dict())


@FUZZ
@given(JSON_LIKE | mutations(TrainConfig().to_dict(), TRAIN_FIELDS, "train").map(lambda case: case[0]))
def test_train_config_from_dict(value):
    try:
        config = TrainConfig.from_dict(value)
    except UserError as e:
        assert_clear(e, ("train",))
        assert_clear(e, TRAIN_FIELDS + ("object",))
    else:
        assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
        hash(config)


@FUZZ
@given(mutations(TrainConfig().to_dict(), TRAIN_FIELDS, "train"))
def test_train_config_names_the_edited_key(case):
    data, touched = case
    try:
        TrainConfig.from_dict(data)
    except UserError as e:
        assert_clear(e, touched)


def test_train_config_every_single_edit_is_accepted_validly_or_named():
    base = TrainConfig().to_dict()
    for path, new in single_edits(base):
        try:
            config = TrainConfig.from_dict(edited(base, path, new))
        except UserError as e:
            assert_clear(e, {path[0]})
        else:
            assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# ---------------------------------------------------------------------------------- latency profiles
@pytest.fixture(scope="module")
def profile_dict() -> dict:
    """A well-formed profile of the micro space (synthetic timings: nothing is measured)."""
    from nas.hardware.profile import ProfileSettings
    from search_spaces import ModelSpec
    from search_spaces.blocks import block_macs, block_specs

    space = SearchSpace(SpaceConfig.from_dict(MICRO_SPACE))
    spec, rng = ModelSpec.from_config(space.config), np.random.default_rng(0)
    lut = {b: 1e-5 * block_macs(b) + 0.002 for b in space.units()}
    archs = [space.sample(rng) for _ in range(6)]
    profile = {
        "format": PROFILE_FORMAT, "format_version": PROFILE_VERSION, "device": {"machine": "x86_64"},
        "settings": ProfileSettings().to_dict(), "space": space.config.to_dict(), "units": {"mode": "all"},
        "lut": [{"block": b.to_dict(), "latency_ms": t, "iqr_ms": 0.0} for b, t in lut.items()],
        "subnets": [{"arch": a.to_dict(), "latency_ms": 1.3 * sum(lut[b] for b in block_specs(spec, a)) + 0.05,
                     "iqr_ms": 0.0} for a in archs],
    }
    return json.loads(json.dumps(profile))


PROFILE_FIELDS = ("format", "format_version", "device", "settings", "space", "units", "lut", "subnets", "block",
                  "latency_ms", "arch", "target", "threads", "batch", "max_seconds", *SPACE_FIELDS, *ARCH_FIELDS)


@FEW
@given(data=st.data())
def test_load_profile_on_mutated_profiles(scratch, profile_dict, data):
    mutated, _touched = data.draw(mutations(profile_dict, PROFILE_FIELDS, "profile"))
    path = scratch / "profile.json"
    path.write_text(json.dumps(mutated))
    try:
        profile = load_profile(path)
        predictor = LatencyPredictor.fit(profile)
        space = SearchSpace(predictor.space)
        for row in profile["subnets"]:
            assert predictor.predict(space.parse(row["arch"])) > 0
    except (UserError, ValueError) as e:
        assert "profile.json" in assert_clear(e), type(e)


@FEW
@given(data=st.binary(max_size=64) | st.sampled_from([b"", b"\x80\x04\x95\x00", b"null", b"{}", b"\xff{}"]))
def test_load_profile_on_garbage_bytes(scratch, data):
    _assert_profile_refused(scratch, data)


@pytest.mark.parametrize("data", [b"[" * 100_000, b'{"format": ' + b"9" * 5000 + b"}"])
def test_load_profile_on_pathological_json(scratch, data):
    _assert_profile_refused(scratch, data)


def _assert_profile_refused(scratch: Path, data: bytes) -> None:
    path = scratch / "garbage-profile.json"
    path.write_bytes(data)
    with pytest.raises(UserError) as info:
        load_profile(path)
    assert "garbage-profile.json" in assert_clear(info.value)


@pytest.fixture(scope="module")
def predictor_dict(profile_dict) -> dict:
    return json.loads(json.dumps(LatencyPredictor.fit(profile_dict).to_dict()))


@FEW
@given(data=st.data())
def test_latency_predictor_load_on_mutated_files(scratch, predictor_dict, data):
    mutated, _ = data.draw(mutations(predictor_dict, ("format", "format_version", "space", "model", "coef", "lut"),
                                     "predictor"))
    path = scratch / "predictor.json"
    path.write_text(json.dumps(mutated))
    try:
        predictor = LatencyPredictor.load(path)
        space = SearchSpace(predictor.space)
        for arch in (space.smallest(), space.largest()):
            value = predictor.predict(arch)
            assert math.isfinite(value)
    except ValueError as e:
        assert "predictor.json" in assert_clear(e)
    except MissingBlockError as e:  # a table without a unit the subnet needs: documented, names the unit
        assert "BlockSpec(" in assert_clear(e)


# ---------------------------------------------------------------------------------- corrupt and malicious files
class _Evil:
    """A pickle payload: unpickling it creates `marker`, proof that a loader ran code from a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _evil_bytes(marker: Path) -> bytes:
    return pickle.dumps({"model.weight": _Evil(marker)})


@pytest.fixture(scope="module")
def trained(trained_run) -> Path:
    """The shared run folder of `nas train` (conftest's `trained_run`, read-only): the files are what matter."""
    return trained_run


@pytest.fixture(scope="module")
def search_run(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "search"
    assert main(["search", "--supernet", str(trained), "--budget", "2", "--objective", "flops", "--out", str(out),
                 "--quiet"]) == 0
    return out


def refused(argv: list[str], capsys, *names: str) -> str:
    """`nas argv` exits 2 with one line `nas: error: ...` that contains every one of `names`."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas: error: ") and "Traceback" not in err, err
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    return lines[0]


def test_the_pickle_payload_is_live(tmp_path):
    """The payload the next tests use does run code when unpickled (so its absence proves something)."""
    marker = tmp_path / "ran"
    pickle.loads(_evil_bytes(marker))
    assert marker.exists()
    marker.unlink()
    torch.save({"state": _Evil(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def _search_with(supernet: Path, out: Path) -> list[str]:
    return ["search", "--supernet", str(supernet), "--budget", "2", "--objective", "flops", "--out", str(out), "--quiet"]


@pytest.mark.parametrize("where", ["file", "run-folder", "pt"])
def test_search_refuses_a_pickle_supernet_without_running_it(where, trained, tmp_path, capsys):
    marker = tmp_path / "pwned"
    if where == "pt":
        path = tmp_path / "evil.pt"
        torch.save({"model.weight": _Evil(marker)}, path)
    elif where == "file":
        path = tmp_path / "evil.safetensors"
        path.write_bytes(_evil_bytes(marker))
    else:
        path = tmp_path / "run"
        path.mkdir()
        shutil.copy(trained / "space.json", path / "space.json")
        (path / "supernet.safetensors").write_bytes(_evil_bytes(marker))
    name = path.name if where != "run-folder" else "supernet.safetensors"
    refused(_search_with(path, tmp_path / "out"), capsys, name, "corrupt")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_extract_refuses_a_pickle_supernet_without_running_it(search_run, trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(search_run, run)
    marker = tmp_path / "pwned"
    (run / "supernet.safetensors").write_bytes(_evil_bytes(marker))
    shutil.copy(trained / "space.json", run / "space.json")
    arch_id = pd.read_csv(run / "evaluations.csv", dtype={"id": str})["id"].iloc[0]
    extract = ["extract", str(run), "--arch", arch_id, "--out", str(tmp_path / "model")]
    refused(extract, capsys, "supernet.safetensors", "corrupt")
    assert not marker.exists() and not (tmp_path / "model").exists()
    (run / "space.json").unlink()  # the space then comes from the file's metadata: refused the same
    refused(extract, capsys, "supernet.safetensors", "corrupt")
    assert not marker.exists() and not (tmp_path / "model").exists()


def _interrupted_train_run(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "interrupted"
    run.mkdir()
    shutil.copy(trained / "config.json", run / "config.json")
    return run


@pytest.mark.parametrize("content", ["pickle", "empty", "truncated", "random"])
def test_train_resume_refuses_a_bad_checkpoint(content, trained, tmp_path, capsys):
    run = _interrupted_train_run(trained, tmp_path)
    marker = tmp_path / "pwned"
    good = (trained / "supernet.safetensors").read_bytes()  # a safetensors file, but no checkpoint
    data = {"pickle": _evil_bytes(marker), "empty": b"", "truncated": good[: len(good) // 2],
            "random": np.random.default_rng(0).bytes(4096)}[content]
    (run / "checkpoint.safetensors").write_bytes(data)
    refused(["train", "--out", str(run), "--resume", "--quiet"], capsys, "checkpoint.safetensors")
    assert not marker.exists() and not (run / "supernet.safetensors").exists()


def test_train_resume_refuses_a_supernet_file_as_checkpoint(trained, tmp_path, capsys):
    run = _interrupted_train_run(trained, tmp_path)
    shutil.copy(trained / "supernet.safetensors", run / "checkpoint.safetensors")
    refused(["train", "--out", str(run), "--resume", "--quiet"], capsys, "checkpoint.safetensors", "not a nas checkpoint")


def _genuine_checkpoint(run: Path) -> None:
    """The checkpoint `nas train` (as recorded in run/config.json) writes before its first epoch."""
    from nas.training.checkpoint import save_checkpoint
    from nas.training.sampling import make_sampler
    from nas.training.train import make_optimizer
    from search_spaces import HybridSupernet

    config = TrainConfig(**TRAIN_SETTINGS)  # what the trained fixture ran
    supernet = HybridSupernet(get_space("tiny"))
    opt = make_optimizer([p for p in supernet.parameters() if p.requires_grad], config)
    sampler = make_sampler(config.sampling, supernet.space, num_random=0, seed=0)
    progress = {"epoch": 0, "step": 0, "seconds": 0.0, "history": []}
    save_checkpoint(run / "checkpoint.safetensors", supernet, opt, sampler, torch.Generator().manual_seed(0), config,
                    progress)


@pytest.mark.slow
def test_the_fabricated_checkpoint_resumes(trained, tmp_path):
    """The unedited checkpoint of the next test resumes: its refusals are due to the edits."""
    run = _interrupted_train_run(trained, tmp_path)
    _genuine_checkpoint(run)
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert (run / "supernet.safetensors").is_file() and not (run / "checkpoint.safetensors").exists()


@pytest.mark.parametrize("key, value", [
    ("config", []), ("space", "tiny"), ("progress", {}), ("progress", {"epoch": 5, "step": 0, "seconds": 0, "history": []}),
    ("optimizer", {"param_groups": 5, "scalars": {}}), ("optimizer", {"param_groups": [], "scalars": {"x": 1}}),
    ("sampler", {"rule": "sandwich", "rng": "seeded"}), ("sampler", None), ("rng.generator", None),
])
def test_train_resume_refuses_a_checkpoint_with_hostile_contents(key, value, trained, tmp_path, capsys):
    """A well-formed safetensors checkpoint whose metadata or tensors are wrong: one line, no traceback."""
    run = _interrupted_train_run(trained, tmp_path)
    _genuine_checkpoint(run)
    path = run / "checkpoint.safetensors"
    with safe_open(str(path), "pt") as fh:
        tensors, meta = {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()  # noqa: SIM118 (not iterable)
    if key == "rng.generator":
        del tensors[key]
    else:
        meta[key] = json.dumps(value)
    save_file(tensors, str(path), metadata=meta)
    refused(["train", "--out", str(run), "--resume", "--quiet"], capsys, "checkpoint.safetensors")
    assert not (run / "supernet.safetensors").exists()


@pytest.mark.parametrize("content", ["truncated", "empty", "random", "header-only"])
@pytest.mark.parametrize("layout", ["file", "run-folder"])
def test_search_refuses_corrupt_supernet_files(content, layout, trained, tmp_path, capsys):
    good = (trained / "supernet.safetensors").read_bytes()
    header = 8 + int.from_bytes(good[:8], "little")
    data = {"truncated": good[: len(good) // 2], "empty": b"", "random": np.random.default_rng(1).bytes(len(good) // 4),
            "header-only": good[:header]}[content]
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / ("supernet.safetensors" if layout == "run-folder" else "weights.safetensors")
    path.write_bytes(data)
    if layout == "run-folder":
        shutil.copy(trained / "space.json", folder / "space.json")
    refused(_search_with(folder if layout == "run-folder" else path, tmp_path / "out"), capsys, path.name, "corrupt")
    assert not (tmp_path / "out").exists()


def _edited_space(trained: Path) -> dict:
    space = json.loads((trained / "space.json").read_text())
    space["space"]["window"] = 2  # same tensor shapes, other attention: would load silently
    return space


def test_search_refuses_a_space_json_that_does_not_match_the_weights(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    write_json(run / "space.json", _edited_space(trained))
    refused(_search_with(run, tmp_path / "out"), capsys, "space.json", "does not match", "window")
    space = json.loads((trained / "space.json").read_text())
    space["space"]["stages"][0]["widths"] = [16, 40]  # other shapes
    write_json(run / "space.json", space)
    refused(_search_with(run, tmp_path / "out"), capsys, "space.json", "does not match", "stages")
    write_json(run / "space.json", {**json.loads((trained / "space.json").read_text()), "format_version": "7"})
    refused(_search_with(run, tmp_path / "out"), capsys, "space.json", "format_version '7'")
    assert not (tmp_path / "out").exists()


def test_search_refuses_a_supernet_whose_metadata_names_another_space(trained, tmp_path, capsys):
    tensors = load_file(str(trained / "supernet.safetensors"))
    cifar = json.dumps(get_space("cifar").config.to_dict())
    path = tmp_path / "relabelled.safetensors"
    save_file(tensors, str(path), metadata={"format": "nas-supernet", "format_version": "1", "space": cifar})
    refused(_search_with(path, tmp_path / "out"), capsys, "relabelled.safetensors", "does not match space 'cifar'")
    run = tmp_path / "run"  # the same file beside the space.json of the space it was trained for
    run.mkdir()
    shutil.copy(path, run / "supernet.safetensors")
    shutil.copy(trained / "space.json", run / "space.json")
    refused(_search_with(run, tmp_path / "out"), capsys, "space.json", "does not match")
    save_file(tensors, str(path), metadata={"format": "nas-supernet", "format_version": "1", "space": "[" * 100_000})
    refused(_search_with(path, tmp_path / "out"), capsys, "relabelled.safetensors", "corrupt")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field, value, message", [
    ("format_version", "2", "format_version '2'"),
    ("format_version", None, "format_version None"),
    ("format", "nas-latency-profile-v2", "not a profile written by `nas profile`"),
])
def test_search_refuses_a_profile_of_another_version(field, value, message, profile_dict, tmp_path, capsys):
    path = tmp_path / "other-version.json"
    write_json(path, profile_dict | {field: value})
    refused(["search", "--target", str(path), "--budget", "2", *FAST, "--out", str(tmp_path / "out")], capsys,
            "other-version.json", message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["npz", "cifar"])
def test_train_refuses_pickled_data_without_running_it(kind, tmp_path, capsys):
    marker = tmp_path / "pwned"
    if kind == "npz":  # an object array: only np.load(allow_pickle=True) would rebuild it
        data = tmp_path / "evil.npz"
        np.savez(data, x=np.array([_Evil(marker)] * 4, dtype=object), y=np.arange(4))
        names = ("evil.npz",)
    else:  # CIFAR-10 python batches: read with an unpickler that only rebuilds arrays
        data = tmp_path / "cifar"
        data.mkdir()
        for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
            (data / name).write_bytes(_evil_bytes(marker))
        names = ("data_batch_1", "refused pickle global")
    refused(["train", "--data", str(data), *FAST, "--out", str(tmp_path / "out")], capsys, *names)
    assert not marker.exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------- the source tree
UNSAFE = {
    "pickle.load": re.compile(r"\bpickle\.loads?\(|\bcPickle\b|\bdill\b|\bjoblib\.load\("),
    "torch.load without weights_only=True": re.compile(r"\btorch\.load\((?![^)]*weights_only\s*=\s*True)"),
    "eval/exec": re.compile(r"(?<![\w.])(eval|exec)\("),
    "yaml.load": re.compile(r"\byaml\.(load|unsafe_load|full_load)\("),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "Unpickler without find_class": re.compile(r"\bpickle\.Unpickler\("),
}


def test_no_unsafe_deserialization_in_the_source_tree():
    files = [p for d in ("nas", "predictors", "search_spaces") for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 20
    found = [f"{p.relative_to(ROOT)}:{i}: {kind}: {line.strip()}"
             for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
             for kind, pattern in UNSAFE.items() if pattern.search(line)]
    assert not found, "\n".join(found)
    data = (ROOT / "nas" / "data" / "cifar.py").read_text()  # CIFAR batches: a restricted unpickler, on purpose
    assert "class _ArrayUnpickler(pickle.Unpickler)" in data and "def find_class" in data
