"""Without --space, a run takes the built-in space made for its data's kind and size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas.cli.main import main
from nas.data.kind import DataKind, data_kind
from search_spaces.presets import space_for
from tests.helpers import write_folder


def test_the_kind_comes_from_the_headers_of_every_format(tmp_path):
    rng = np.random.default_rng(0)
    cases = {
        "seq.npz": (rng.random((20, 150)), DataKind(1, 150)),  # [N, T]
        "seq_channels.npz": (rng.random((20, 24, 3)), DataKind(1, 24)),  # [N, T, C]
        "gray.npz": (rng.random((20, 28, 28)), DataKind(2, 28)),  # [N, H, W]: square
        "rgb_last.npz": (rng.random((20, 32, 32, 3)), DataKind(2, 32)),
        "rgb_first.npz": (rng.random((20, 3, 64, 64)), DataKind(2, 64)),
    }
    for name, (x, kind) in cases.items():
        np.savez(tmp_path / name, x=x.astype(np.float32), y=np.zeros(len(x), dtype=np.int64))
        assert data_kind(str(tmp_path / name)) == kind, name
    np.savez_compressed(tmp_path / "compressed.npz", x=rng.random((5, 40)), y=np.zeros(5))
    assert data_kind(str(tmp_path / "compressed.npz")) == DataKind(1, 40)
    npy = tmp_path / "npy"
    npy.mkdir()
    np.save(npy / "x.npy", rng.random((10, 96, 96, 3)).astype(np.float32))
    np.save(npy / "y.npy", np.zeros(10, dtype=np.int64))
    assert data_kind(str(npy)) == DataKind(2, 96)
    folder = write_folder(tmp_path / "images", rng.integers(0, 255, (4, 48, 40), dtype=np.uint8), np.array([0, 0, 1, 1]))
    assert data_kind(str(folder)) == DataKind(2, 40)  # the shorter side: images are read square at it
    assert data_kind("digits") == DataKind(2, 8) and data_kind("mnist1d") == DataKind(1, 40)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "no_x.npz", inputs=np.zeros((3, 4)))
    for spec in ("broken.npz", "no_x.npz", "missing.npz", "notes.txt"):
        assert data_kind(str(tmp_path / spec)) is None, spec  # loading the data says what is wrong


@pytest.mark.parametrize(("dims", "size", "space"), [
    (2, 8, "tiny"), (2, 16, "tiny"), (2, 28, "cifar"), (2, 32, "cifar"), (2, 64, "cifar"),
    (2, 96, "imagenet"), (2, 224, "imagenet"), (1, 40, "seq"), (1, 500, "seq"),
])
def test_the_space_for_a_kind_is_the_nearest_reference_size(dims, size, space):
    assert space_for(dims, size) == space


def test_a_run_without_space_takes_the_one_for_its_data_and_says_so(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "seqs.npz", x=rng.normal(size=(64, 24)).astype(np.float32), y=np.arange(64) % 2)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "seqs.npz"), "--epochs", "1", "--num-random", "0",
                 "--no-standalone-check", "--out", str(run), "--quiet"]) == 0
    assert "space seq: the built-in space for sequences of 24 steps" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["args"]["space"] == "seq" and config["space"]["input_size"] == 24
    # given, the space is taken as given: tiny takes images, so these sequences are refused in one line
    assert main(["train", "--space", "tiny", "--data", str(tmp_path / "seqs.npz"), "--epochs", "1",
                 "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_profile_without_space_takes_the_one_for_its_data(tmp_path, capsys, monkeypatch):
    spaces = []

    def build_profile(space, settings, show_progress):
        spaces.append(space)
        raise KeyboardInterrupt  # the space is what this test is about; nothing is timed

    monkeypatch.setattr("nas.cli.main.build_profile", build_profile)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "seqs.npz", x=rng.normal(size=(16, 24)).astype(np.float32), y=np.arange(16) % 2)
    main(["profile", "--data", str(tmp_path / "seqs.npz"), "--out", str(tmp_path / "p.json"), "--quiet"])
    assert "space seq: the built-in space for sequences of 24 steps" in capsys.readouterr().out
    main(["profile", "--out", str(tmp_path / "q.json"), "--quiet"])  # neither --space nor --data: tiny, as written
    assert [s.config.name for s in spaces] == ["seq", "tiny"] and spaces[0].config.input_size == 24
    assert not (tmp_path / "p.json").exists()
