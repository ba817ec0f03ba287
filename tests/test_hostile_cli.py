"""Hostile input and concurrent use of the command line (issue 20), counted: every case ends in exit
2 and one line `nas: error: ...` without a traceback, writes nothing outside its run folder, and
leaves a run it was pointed at as it was (so still resumable).

The classes: a second writer on a run folder (the lock), links and special files where run files
belong, failures from the machine or a damaged file, sizes beyond the machine, and values a run
used to accept silently (non-finite recorded figures, flags without effect, absurd budgets).
`CASES` counts them; docs/robustness.md gives the count. The parsers of single values and files are
fuzzed in test_hostile_input.py.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from nas.cli.main import main
from nas.errors import UserError
from nas.runs.files import open_run_file, save_tensors, write_json, write_text
from nas.runs.lock import LOCK_FILE, lock_path
from search_spaces import get_space
from tests.helpers import FAST, ROOT

HOLDER = {"pid": 4242, "host": "elsewhere", "command": "nas search --out RUN", "since": "2026-01-01 00:00:00"}
SEARCH = ("--budget", "3", "--objective", "flops", "--finish", "inherit", "--quiet")


# ---------------------------------------------------------------------------------- the harness
def _digests(folder: Path, skip: Path | None = None) -> dict[str, str]:
    """Every entry under `folder` (but `skip`): its kind and, for a file, its content's digest."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        kind = "link" if p.is_symlink() else "fifo" if p.is_fifo() else "dir" if p.is_dir() else "file"
        out[str(p.relative_to(folder))] = kind + (":" + hashlib.sha256(p.read_bytes()).hexdigest() if kind == "file" else "")
    return out


def failure_lines(err: str) -> list[str]:
    """What a command said on stderr, less its notes and warnings about the run itself (such as the
    recorded training health of a tiny test supernet): the failure is the rest."""
    return [line for line in err.strip().splitlines() if not line.startswith(("nas: warning: ", "nas: note: "))]


def refused(argv: list[str], capsys, *names: str, root: Path, run: Path | None = None, kept: bool = True) -> str:
    """`nas argv` exits 2 with one line `nas: error: ...` naming each of `names`; nothing under
    `root` changed but inside the run folder `run`; and (`kept`) `run` is left as it was."""
    outside, inside = _digests(root, skip=run), _digests(run) if run is not None and run.is_dir() else None
    locked = run is not None and (run / LOCK_FILE).exists()  # by another process
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = failure_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("nas: error: ") and "Traceback" not in err, (code, err)
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    assert _digests(root, skip=run) == outside, "written outside the run folder"
    if inside is not None and kept:
        assert _digests(run) == inside, "the run folder changed"
    assert run is None or (run / LOCK_FILE).exists() == locked, "the lock was not released"
    return lines[0]


@pytest.fixture
def root(tmp_path) -> Path:
    """A sandbox: `outside/victim.txt` stands for a file outside every run folder."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.txt").write_text("precious\n")
    return tmp_path


@pytest.fixture(scope="module")
def searched(trained_run, tmp_path_factory) -> Path:
    """A finished search run on the shared supernet (read it; copy it to change it)."""
    out = tmp_path_factory.mktemp("searched") / "run"
    assert main(["search", "--supernet", str(trained_run), *SEARCH, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def interrupted(searched, tmp_path_factory) -> Path:
    """The search as if killed after its second evaluation: `--resume` continues it."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    out.mkdir()
    shutil.copy(searched / "config.json", out / "config.json")
    lines = (searched / "evaluations.csv").read_text().splitlines(keepends=True)
    (out / "evaluations.csv").write_text("".join(lines[:3]))
    return out


def _copy(run: Path, root: Path) -> Path:
    return Path(shutil.copytree(run, root / "run"))


def _arch_id(run: Path) -> str:
    """An evaluated subnet without a model folder yet (not the one the search handed over)."""
    ids = pd.read_csv(run / "evaluations.csv", dtype={"id": str})["id"]
    return str(next(i for i in ids if not (run / "models" / i).exists()))


@pytest.fixture
def held() -> Iterator[Callable[[Path], None]]:
    """`held(target)`: the lock of `target` taken by 'another process' (an open file of its own, as
    another process would have) that names HOLDER."""
    opened = []

    def take(target: Path) -> None:
        fh = open(lock_path(target), "a+")  # noqa: SIM115 (held until the test ends)
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write(json.dumps(HOLDER))
        fh.flush()
        opened.append(fh)

    yield take
    for fh in opened:
        fh.close()


# ---------------------------------------------------------------------------------- one writer per run folder
LOCKED = {  # command line (RUN: the run folder, ID: a subnet of it, TRAINED: the shared supernet) -> what is locked
    "search --resume": (["search", "--out", "RUN", "--resume", "--quiet"], "RUN"),
    "search --force": (["search", "--supernet", "TRAINED", *SEARCH, "--out", "RUN", "--force"], "RUN"),
    "search (new, same --out)": (["search", "--supernet", "TRAINED", *SEARCH, "--out", "RUN/new"], "RUN/new"),
    "train (new, same --out)": (["train", *FAST, "--out", "RUN/new"], "RUN/new"),
    "train --resume": (["train", "--out", "RUN", "--resume", "--quiet"], "RUN"),
    "extract": (["extract", "RUN", "--arch", "ID"], "RUN"),
    "finetune": (["finetune", "RUN", "--arch", "ID", "--finish", "inherit", "--quiet"], "RUN"),
    "profile": (["profile", "--space", "tiny", "--out", "RUN/profile.json", "--quiet"], "RUN/profile.json"),
}


@pytest.mark.parametrize("case", LOCKED)
def test_a_second_writer_is_refused_naming_the_holder(case, interrupted, trained_run, root, held, capsys):
    run = _copy(interrupted, root)
    argv, target = LOCKED[case]
    names = {"RUN": str(run), "TRAINED": str(trained_run), "ID": _arch_id(run)}
    argv = [names["RUN"] + a[3:] if a.startswith("RUN") else names.get(a, a) for a in argv]
    target_path = Path(str(run) + target[3:])
    if target_path.suffix != ".json":
        target_path.mkdir(exist_ok=True)
    held(target_path)
    refused(argv, capsys, "is in use by `nas search --out RUN` (pid 4242 on host elsewhere", root=root, run=run)


def test_the_lock_of_a_killed_process_is_taken_over_and_the_run_resumed(interrupted, root, capsys):
    """A real second process holds the lock: refused; killed (-9), its lock is stale: the resume takes
    it over with a note, ends as a search does, and releases it."""
    run = _copy(interrupted, root)
    code = ("import fcntl, json, os, socket, sys, time\n"  # what nas.runs.lock does, without importing torch
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),\n"
            "                         'command': 'nas search --out X --resume', 'since': 'now'}).encode())\n"
            "print('held', flush=True)\n"
            "time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        refused(["search", "--out", str(run), "--resume", "--quiet"], capsys, f"pid {holder.pid}", root=root, run=run)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert (run / LOCK_FILE).is_file()  # left behind by the killed process
    capsys.readouterr()
    assert main(["search", "--out", str(run), "--resume", "--quiet"]) == 0
    assert f"taking over the lock left by `nas search --out X --resume` (pid {holder.pid}" in capsys.readouterr().err
    assert (run / "search.json").is_file() and not (run / LOCK_FILE).exists()


# ---------------------------------------------------------------------------------- links and special files
def _link(path: Path, root: Path) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to(root / "outside" / "victim.txt")


def _fifo(path: Path, root: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _folder(path: Path, root: Path) -> None:
    path.unlink(missing_ok=True)
    path.mkdir()


LINKED = {  # (file of the run, what takes its place, how the run is started)
    "evaluations.csv a link, --force": ("evaluations.csv", _link, "force", "symbolic link"),
    "evaluations.csv a link, --resume": ("evaluations.csv", _link, "resume", "symbolic link"),
    "evaluations.csv a FIFO, --resume": ("evaluations.csv", _fifo, "resume", "not a regular file"),
    "evaluations.csv a folder, --resume": ("evaluations.csv", _folder, "resume", "not a regular file"),
    "config.json a link, --force": ("config.json", _link, "force", "symbolic link"),
    "pareto.csv a link, --force": ("pareto.csv", _link, "force", "symbolic link"),
    "pareto.png a FIFO, --resume": ("pareto.png", _fifo, "resume", "not a regular file"),
    "the lock file a link, --resume": (LOCK_FILE, _link, "resume", "lock file"),
}


@pytest.mark.parametrize("case", LINKED)
def test_run_files_are_never_written_through_links_or_into_special_files(case, interrupted, trained_run, root,
                                                                         capsys):
    name, replace, how, message = LINKED[case]
    run = _copy(interrupted, root)
    replace(run / name, root)
    argv = (["search", "--out", str(run), "--resume", "--quiet"] if how == "resume" else
            ["search", "--supernet", str(trained_run), *SEARCH, "--out", str(run), "--force"])
    outside = _digests(root / "outside")
    capsys.readouterr()
    assert main(argv) == 2
    err = failure_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("nas: error: ") and message in err[0] and name in err[0], err
    assert _digests(root / "outside") == outside
    assert (run / LOCK_FILE).is_symlink() if name == LOCK_FILE else not (run / LOCK_FILE).exists()


@pytest.mark.parametrize("kind", ["a link to a folder outside", "an existing file"])
def test_extract_refuses_an_out_that_is_not_a_folder(kind, searched, root, capsys):
    out = root / "model"
    if kind == "an existing file":
        out.write_text("x")
    else:
        out.symlink_to(root / "outside", target_is_directory=True)
    run = _copy(searched, root)
    refused(["extract", str(run), "--arch", _arch_id(run), "--out", str(out), "--force"], capsys, str(out),
            "not a folder", root=root, run=run)


WRITERS: dict[str, Callable[[Path], object]] = {
    "write_json": lambda p: write_json(p, {"a": 1}),
    "write_text": lambda p: write_text(p, "a,b\n"),
    "save_tensors": lambda p: save_tensors(p, {"w": torch.zeros(2)}, {"format": "x"}),
    "open_run_file(append)": lambda p: open_run_file(p, append=True).close(),
    "open_run_file(truncate)": lambda p: open_run_file(p, append=False).close(),
}


@pytest.mark.parametrize("kind", ["link", "fifo"])
@pytest.mark.parametrize("writer", WRITERS)
def test_every_writer_refuses_links_and_special_files(writer, kind, root):
    target = root / "run" / "file"
    target.parent.mkdir()
    (_link if kind == "link" else _fifo)(target, root)
    with pytest.raises(UserError, match="symbolic link" if kind == "link" else "not a regular file"):
        WRITERS[writer](target)
    assert (root / "outside" / "victim.txt").read_text() == "precious\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file"]  # no temporary file left


# ---------------------------------------------------------------------------------- failures from the machine or a file
def _fail_replace(name: str, error: OSError) -> Callable:
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            raise error
        return real(src, dst, *args, **kwargs)

    return replace


def test_a_full_disk_mid_search_is_one_line_and_the_run_stays_resumable(interrupted, root, capsys, monkeypatch):
    run = _copy(interrupted, root)
    full = OSError(errno.ENOSPC, "No space left on device", str(run / "pareto.csv"))
    monkeypatch.setattr(os, "replace", _fail_replace("pareto.csv", full))
    capsys.readouterr()
    assert main(["search", "--out", str(run), "--resume", "--quiet"]) == 2
    err = failure_lines(capsys.readouterr().err)
    assert err == [f"nas: error: No space left on device: {run / 'pareto.csv'} (free some space); files written so far "
                   f"are kept; resume with: nas search --out {run} --resume"]
    assert len(pd.read_csv(run / "evaluations.csv")) == 3 and not list(run.glob(".*.tmp"))
    monkeypatch.undo()
    assert main(["search", "--out", str(run), "--resume", "--quiet"]) == 0  # the rows are kept, not evaluated again
    assert len(pd.read_csv(run / "evaluations.csv")) == 3 and (run / "search.json").is_file()


def _raise(error: BaseException) -> Callable:
    def fail(*args, **kwargs):
        raise error
    return fail


FAILURES = {  # what fails (patched in) -> (command, words of the message)
    "a safetensors write (disk full)": ("nas.runs.files.save_file", SafetensorError("Error while serializing: IoError"),
                                        "extract", "a safetensors file could not be read or written"),
    "permission denied": ("nas.finish.package.write_json", PermissionError(errno.EACCES, "Permission denied", "m.json"),
                          "extract", "Permission denied: m.json (check the permissions)"),
    "out of memory": ("nas.cli.models.evaluate", MemoryError(), "extract", "out of memory"),
    "out of device memory": ("nas.cli.models.evaluate", torch.OutOfMemoryError("CUDA out of memory.\nTried"), "extract",
                             "out of device memory: CUDA out of memory. Tried"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_failures_of_the_machine_are_one_line(case, searched, root, capsys, monkeypatch):
    where, error, command, words = FAILURES[case]
    run = _copy(searched, root)
    monkeypatch.setattr(where, _raise(error))
    refused([command, str(run), "--arch", _arch_id(run)], capsys, words, root=root, run=run, kept=False)


@pytest.mark.parametrize("debug", [False, True])
def test_an_internal_error_is_one_line_exit_1_with_the_traceback_behind_debug(debug, root, capsys, monkeypatch):
    monkeypatch.setattr("nas.cli.main.build_profile", _raise(KeyError("a bug\nspread over lines")))
    argv = ["profile", "--space", "tiny", "--out", str(root / "p.json"), "--quiet"]
    capsys.readouterr()
    assert main(["--debug", *argv] if debug else argv) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("nas: internal error: KeyError: 'a bug\\nspread over lines'")
    assert ("Traceback" in err) == debug and (len(err.strip().splitlines()) == 1) != debug
    assert not (root / "p.json").exists() and not lock_path(root / "p.json").exists()


def _huge_npz(path: Path) -> None:
    """An .npz whose x declares 10**12 floats (and holds none): reading it asks for 3.6 TiB."""
    import io
    import zipfile

    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 1, 10**6)})
    labels = io.BytesIO()
    np.save(labels, np.arange(3))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", header.getvalue())
        z.writestr("y.npy", labels.getvalue())


def _edit_config(run: Path, **args) -> None:
    config = json.loads((run / "config.json").read_text())
    config["args"] |= args
    (run / "config.json").write_text(json.dumps(config))


def _drop_key(path: Path, key: str) -> None:
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != key}))


def _edit_evaluations(run: Path, column: str, value: str) -> None:
    table = pd.read_csv(run / "evaluations.csv", dtype=str, keep_default_na=False)
    table.loc[0, column] = value
    (run / "evaluations.csv").write_text(table.to_csv(index=False))


DAMAGED = {  # how the recorded run is damaged -> (edit, command, words of the message)
    "config.json max_flops 'abc'": (lambda r: _edit_config(r, max_flops="abc"), "resume", "max_flops must be an integer"),
    "config.json seed 'x'": (lambda r: _edit_config(r, seed="x"), "resume", "seed must be an integer"),
    "config.json target 123": (lambda r: _edit_config(r, target=123), "resume", "target must be a string"),
    "config.json budget 1e23 s": (lambda r: _edit_config(r, budget="100000000000000000000000s"), "resume",
                                  "budget must be at most 31622400 s"),
    "config.json threads 100000": (lambda r: _edit_config(r, threads=100000), "resume", "--threads 100000"),
    "config.json not JSON": (lambda r: (r / "config.json").write_text("{"), "extract", "not valid JSON"),
    "config.json seed 'x' (extract)": (lambda r: _edit_config(r, seed="x"), "extract", "args.seed must be an integer"),
    "config.json without data_spec": (lambda r: _drop_key(r / "config.json", "data_spec"), "extract",
                                       "data_spec must be a string"),
    "evaluations.csv val_acc nan": (lambda r: _edit_evaluations(r, "val_acc", "nan"), "resume", "val_acc must be a finite"),
    "evaluations.csv val_acc inf": (lambda r: _edit_evaluations(r, "val_acc", "inf"), "resume", "val_acc must be a finite"),
    "evaluations.csv val_acc 1.5": (lambda r: _edit_evaluations(r, "val_acc", "1.5"), "resume", "in [0, 1]"),
    "evaluations.csv flops inf": (lambda r: _edit_evaluations(r, "flops", "inf"), "resume", "flops must be a finite"),
    "evaluations.csv params -1": (lambda r: _edit_evaluations(r, "params", "-1"), "resume", "params must be a finite"),
    "evaluations.csv latency inf": (lambda r: _edit_evaluations(r, "latency_ms", "inf"), "resume", "latency_ms must be"),
    "evaluations.csv another id": (lambda r: _edit_evaluations(r, "id", "0123456789"), "resume", "is not the id of"),
    "evaluations.csv an unknown column": (lambda r: _edit_evaluations(r, "extra", "1"), "resume",
                                          "the header is not that of"),
    "evaluations.csv val_acc inf (extract)": (lambda r: _edit_evaluations(r, "val_acc", "inf"), "extract",
                                              "val_acc must be a finite"),
    "evaluations.csv a short row (extract)": (lambda r: (r / "evaluations.csv").write_text(
        (r / "evaluations.csv").read_text().splitlines()[0] + "\n0,abc\n"), "extract", "more or fewer fields"),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_run_is_refused_on_reload_and_left_as_it_was(case, interrupted, root, capsys):
    edit, command, words = DAMAGED[case]
    run = _copy(interrupted, root)
    edit(run)
    argv = (["search", "--out", str(run), "--resume", "--quiet"] if command == "resume" else
            ["extract", str(run), "--arch", "0123456789"])
    refused(argv, capsys, words, root=root, run=run)


BAD_INVOCATIONS = {  # arguments after the command -> words of the message
    "search --device bogus": (["search", *FAST, "--device", "bogus"], "--device 'bogus' is not a device"),
    "search --device meta": (["search", *FAST, "--device", "meta"], "--device 'meta' is not a device"),
    "train --device cuda:7 (no CUDA)": (["train", *FAST, "--device", "cuda:7"], "--device cuda:7"),
    "search --seed -1": (["search", *FAST, "--seed", "-1"], "--seed must be in [0, 2**63), got -1"),
    "profile --seed -1": (["profile", "--seed", "-1"], "--seed must be in [0, 2**63), got -1"),
    "train --out under a file": (["train", *FAST, "--out", "OUTSIDE/victim.txt/run"], "cannot be created"),
    "train --out an existing file": (["train", *FAST, "--out", "OUTSIDE/victim.txt"], "exists and is not a folder"),
    "train --data a huge .npz header": (["train", *FAST, "--data", "NPZ"], "Unable to allocate"),
    "extract --device bogus": (["extract", "RUN", "--arch", "ID", "--device", "bogus"], "is not a device"),
    # sizes beyond the machine or any sane space
    **{f"train --space with {k}": (["train", *FAST, "--space", k], w) for k, w in {
        "width 10**6": "widths must hold values <= 8192", "depth 10**6": "depths must hold values <= 64",
        "10**9 classes": "num_classes must be <= 100000", "resolution 10**5": "resolutions must hold values <= 16384",
        "100 stages": "at most 32 are allowed", "1000 widths": "1000 choices", "the largest sizes": "of memory;"}.items()},
    "search --supernet declaring width 10**6": (["search", "--supernet", "SUPERNET", "--out", "RUN"],
                                                "widths must hold values <= 8192"),
    "train --batch-size 10**9": (["train", *FAST, "--batch-size", "1000000000"], "--batch-size 1000000000 needs at least"),
    "search --latency-batch 10**8": (["search", *FAST, "--latency-batch", "100000000"], "--latency-batch 100000000 needs"),
    "profile --latency-batch 10**8": (["profile", "--latency-batch", "100000000"], "--latency-batch 100000000 needs"),
    "search --threads 100000": (["search", *FAST, "--threads", "100000"], "--threads 100000: this machine offers"),
    "profile --threads 100000": (["profile", "--threads", "100000"], "--threads 100000: this machine offers"),
    # accepted silently before
    "search --budget 1e23 s": (["search", *FAST, "--budget", "100000000000000000000000s"], "at most 31622400 s"),
    "search --budget 10**30": (["search", *FAST, "--budget", "1" + "0" * 30], "at most 10,000,000 evaluations"),
    "search --budget 9000h": (["search", *FAST, "--budget", "9000h"], "at most 31622400 s"),
    **{f"search --supernet with {f}": (["search", "--supernet", "TRAINED", f, v], f"{f} has no effect with --supernet")
       for f, v in (("--epochs", "3"), ("--space", "cifar"), ("--lr", "0.1"), ("--sampling", "uniform"))},
    "--config file epochs with --supernet": (["search", "--supernet", "TRAINED", "--config", "CONFIG"],
                                             "CONFIG.json: epochs has no effect with --supernet"),
    "search --target PROFILE with --threads": (["search", *FAST, "--target", "PROFILE", "--threads", "1"],
                                               "--threads has no effect with --target"),
    "search --target PROFILE with --latency-batch": (["search", *FAST, "--target", "PROFILE", "--latency-batch", "2"],
                                                     "--latency-batch has no effect with --target"),
    "search --finish inherit with --finish-budget": (["search", *FAST, "--finish", "inherit", "--finish-budget", "0.5"],
                                                     "--finish-budget has no effect with --finish"),
}


def _space_file(path: Path, kind: str) -> None:
    space = json.loads(json.dumps(get_space("tiny").config.to_dict()))
    stage = space["stages"][0]
    if kind == "width 10**6":
        stage["widths"] = [10**6]
    elif kind == "depth 10**6":
        stage["depths"] = [10**6]
    elif kind == "10**9 classes":
        space["num_classes"] = 10**9
    elif kind == "resolution 10**5":
        space["resolutions"] = [10**5]
    elif kind == "100 stages":
        space["stages"] *= 100
    elif kind == "1000 widths":
        stage["widths"] = list(range(1, 1001))
    else:  # within every bound, but terabytes of weights
        space["stages"] = [{**s, "widths": [8192], "depths": [64]} for s in space["stages"]]
    path.write_text(json.dumps(space))


@pytest.mark.parametrize("case", BAD_INVOCATIONS)
def test_bad_invocations_are_refused_before_anything_is_written(case, searched, trained_run, root, capsys):
    argv, words = BAD_INVOCATIONS[case]
    run = root / "run"
    files_of = {"OUTSIDE": str(root / "outside"), "RUN": str(run), "TRAINED": str(trained_run),
                "NPZ": str(root / "huge.npz"), "SUPERNET": str(root / "huge.safetensors"),
                "CONFIG": str(root / "CONFIG.json"), "PROFILE": str(root / "profile.json")}
    if "RUN" in argv and argv[0] == "extract":
        run = _copy(searched, root)
        files_of["ID"] = _arch_id(run)
    if "NPZ" in argv:
        _huge_npz(root / "huge.npz")
    if "SUPERNET" in argv:
        space = json.loads(json.dumps(get_space("tiny").config.to_dict()))
        space["stages"][0]["widths"] = [10**6]
        save_file({"x": torch.zeros(1)}, str(root / "huge.safetensors"),
                  metadata={"format": "nas-supernet", "format_version": "1", "space": json.dumps(space)})
    if "CONFIG" in argv:
        (root / "CONFIG.json").write_text(json.dumps({"epochs": 3}))
    if "PROFILE" in argv:
        (root / "profile.json").write_text("{}")
    if "--space" in argv:
        _space_file(root / "space.json", argv[argv.index("--space") + 1])
        argv = [str(root / "space.json") if a == argv[argv.index("--space") + 1] else a for a in argv]
    argv = [files_of["OUTSIDE"] + a[7:] if a.startswith("OUTSIDE") else files_of.get(a, a) for a in argv]
    if argv[0] != "extract" and "--out" not in argv:
        argv += ["--out", str(run) + (".json" if argv[0] == "profile" else "")]
    refused(argv, capsys, words, root=root, run=run if run.is_dir() else None)
    if argv[0] != "extract":
        assert not run.exists() and not Path(str(run) + ".json").exists()


def test_the_cases_are_counted_in_the_docs():
    """docs/robustness.md gives the number of hostile inputs this module tries."""
    text = (ROOT / "docs" / "robustness.md").read_text()
    assert f"**{count_cases()} hostile inputs**" in text


def count_cases() -> int:
    return (len(LOCKED) + 1 + len(LINKED) + 2 + 2 * len(WRITERS) + 1 + len(FAILURES) + 2 + len(DAMAGED)
            + len(BAD_INVOCATIONS))
