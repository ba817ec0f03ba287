"""Hardware latency profiles: a per-unit lookup table and measured whole subnets, for one device.

`build_profile` times every distinct unit (`search_spaces.blocks.BlockSpec`) that the space's
subnets are made of, each alone on the target, and a number of whole random subnets (the static
`SubnetModel` that extraction returns); the latency predictor (`predictors.latency`) is fitted from them. A profile is a JSON
file, so it is measured once on the device and a search for that device runs on any machine
(the lookup-table approach of ProxylessNAS and Once-for-All; nn-Meter's kernel-level tables).

File format (`format_version` "1"): `device` (`nas.hardware.measure.describe_hardware`), `settings`
(target, threads, batch, seed and the timing settings), `space` (the space definition), `units`
(how the table's units were chosen), `lut` (a list of `{"block": BlockSpec dict, "latency_ms",
"iqr_ms"}`) and `subnets` (a list of `{"arch": arch dict, "latency_ms", "iqr_ms"}`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from nas.errors import FieldError, UserError
from nas.hardware.measure import Latency, LatencySettings, describe_hardware
from nas.hardware.quantize import PRECISIONS, quantize_model
from nas.hardware.targets import TARGETS, Target, TargetTimer, measure_on_target
from nas.runs.files import read_json
from nas.runs.progress import progress_bar
from predictors import LatencyPredictor
from search_spaces import Arch, ArchError, ModelSpec, SearchSpace, SpaceConfig, SubnetModel
from search_spaces.arch import is_finite_number, show
from search_spaces.blocks import BlockSpec, block_input_shape, block_specs, build_block
from search_spaces.static import at_input_size

PROFILE_FORMAT, PROFILE_VERSION = "nas-latency-profile", "1"
INT8_CALIBRATION = 16  # random inputs an int8 profile calibrates each unit and subnet on
PROFILE_KEYS = ("format", "format_version", "device", "settings", "space", "units", "lut", "subnets")
# what must be equal for a profile to describe this machine; CUDA adds the device and runtime
HOST_KEYS = ("machine", "processor", "logical_cores", "torch_version")
CUDA_KEYS = ("cuda_device_name", "cuda_version")


@dataclass(frozen=True)
class ProfileSettings:
    """How a profile is measured. Units beyond `max_units` are replaced by those of `sample_subnets`
    random subnets plus the extremes of the space."""

    target: Target = "cpu"
    threads: int = 1
    batch: int = 1
    subnets: int = 50
    seed: int = 0
    max_units: int = 5000
    sample_subnets: int = 2000
    warmup: int = 5
    min_repeats: int = 20
    max_repeats: int = 400
    max_seconds: float = 0.25
    passes: int = 3
    input_size: int = 0  # the input size (sequence length) to time at; 0: the space's own
    precision: str = "fp32"  # int8: each unit and subnet quantized by ONNX Runtime and timed so (nas.hardware.quantize)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise FieldError("target", f"must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.precision not in PRECISIONS:
            raise FieldError("precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "int8" and self.target != "onnxruntime":
            raise FieldError("precision", f"int8 runs on ONNX Runtime: profile it with --target onnxruntime, "
                                          f"not {self.target!r}")
        for name in ("threads", "batch", "max_units", "sample_subnets", "min_repeats", "max_repeats", "passes"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**63:
            raise FieldError("seed", f"must be in [0, 2**63), got {self.seed}")
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int) or self.input_size < 0:
            raise FieldError("input_size", f"must be an integer >= 0 (0: the space's own), got {self.input_size!r}")
        for name in ("subnets", "warmup"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"must be >= 0, got {getattr(self, name)}")
        if not self.max_seconds > 0:
            raise FieldError("max_seconds", f"must be > 0, got {self.max_seconds}")
        if self.min_repeats > self.max_repeats:
            raise FieldError("min_repeats", f"must not exceed max_repeats ({self.max_repeats}), got {self.min_repeats}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def int8_timer(model: nn.Module, input_shape: tuple[int, ...], settings: ProfileSettings) -> TargetTimer:
    """`model` quantized to int8 by ONNX Runtime, prepared for timing on inputs of `input_shape`. The
    activation ranges come from seeded random inputs: a unit alone has no data, and the ranges set
    scales, not the kernels that run, so the timing does not depend on them."""
    calibration = torch.randn((INT8_CALIBRATION, *input_shape[1:]), generator=torch.Generator().manual_seed(0))
    return quantize_model(model, input_shape[1:], calibration, batch=input_shape[0],
                          threads=settings.threads).timer(input_shape)


def measure(model: nn.Module | TargetTimer, input_shape: tuple[int, ...], settings: ProfileSettings) -> Latency:
    """Latency of `model` (or of a prepared int8 timer) on the profile's target with its timing settings."""
    if isinstance(model, TargetTimer):
        return model.measure(warmup=settings.warmup, min_repeats=settings.min_repeats,
                             max_repeats=settings.max_repeats, max_seconds=settings.max_seconds)
    return measure_on_target(
        model, input_shape, target=settings.target, threads=settings.threads, warmup=settings.warmup,
        min_repeats=settings.min_repeats, max_repeats=settings.max_repeats, max_seconds=settings.max_seconds,
    )


def profile_units(space: SearchSpace, settings: ProfileSettings) -> tuple[list[BlockSpec], dict[str, Any]]:
    """The units to time, and a description of how they were chosen."""
    units = space.units()
    if len(units) <= settings.max_units:
        return units, {"mode": "all", "count": len(units), "space_units": len(units)}
    spec, rng = ModelSpec.from_config(space.config), np.random.default_rng(settings.seed + 1)
    archs = [space.sample(rng) for _ in range(settings.sample_subnets)]
    archs += [space.largest(), space.smallest(), *space.smallest_variants()]
    chosen = {b for a in archs for b in block_specs(spec, a)}
    ordered = [b for b in units if b in chosen]
    return ordered, {"mode": "sampled", "count": len(ordered), "space_units": len(units),
                     "sample_subnets": settings.sample_subnets}


def build_profile(space: SearchSpace, settings: ProfileSettings, *, show_progress: bool = True) -> dict[str, Any]:
    """Measure a profile of `space` on `settings.target` (this machine).

    Units and whole subnets are timed in one shuffled sequence per pass, so that a slow period of
    the machine hits both alike; each keeps its fastest median over the passes.
    """
    if settings.target == "cuda" and not torch.cuda.is_available():
        raise UserError("--target cuda: CUDA is not available on this machine")
    spec = ModelSpec.from_config(space.config)
    size = settings.input_size or spec.input_size
    units, how = profile_units(SearchSpace(space.config.at_input_size(size)), settings)
    rng = np.random.default_rng(settings.seed)
    archs = [space.sample(rng) for _ in range(settings.subnets)]
    items: list[BlockSpec | Arch] = [*units, *archs]
    best: list[Latency | None] = [None] * len(items)
    shape = spec.input_shape(settings.batch, size)
    torch.manual_seed(settings.seed)
    start = time.perf_counter()

    def build(item: BlockSpec | Arch) -> nn.Module:
        return build_block(item) if isinstance(item, BlockSpec) else SubnetModel(*at_input_size(spec, item, size))

    shapes = [block_input_shape(i, settings.batch) if isinstance(i, BlockSpec) else shape for i in items]
    int8: list[TargetTimer] = []
    if settings.precision == "int8":  # quantized once, timed in every pass
        with progress_bar(len(items), "quantizing to int8", enabled=show_progress) as bar:
            for item, item_shape in zip(items, shapes):
                int8.append(int8_timer(build(item), item_shape, settings))
                bar.update()
    with progress_bar(settings.passes * len(items), f"profiling {space.config.name} on {settings.target}",
                      enabled=show_progress) as bar:
        for p in range(settings.passes):
            for i in rng.permutation(len(items)):
                lat = measure(int8[i] if int8 else build(items[i]), shapes[i], settings)
                if best[i] is None or lat.median_ms < best[i].median_ms:
                    best[i] = lat
                bar.update(f"pass {p + 1}/{settings.passes}")
    measured = cast(list[Latency], best)  # passes >= 1: every item has been timed
    lut = [{"block": b.to_dict(), "latency_ms": t.median_ms, "iqr_ms": t.iqr_ms} for b, t in zip(units, measured)]
    subnets = [{"arch": a.to_dict(), "latency_ms": t.median_ms, "iqr_ms": t.iqr_ms}
               for a, t in zip(archs, measured[len(units):])]
    device = "cuda" if settings.target == "cuda" else "cpu"
    profile = {
        "format": PROFILE_FORMAT, "format_version": PROFILE_VERSION,
        "device": describe_hardware(device) | _runtime(settings.target),
        "settings": settings.to_dict(), "space": space.config.to_dict(), "units": how,
        "lut": lut, "subnets": subnets, "seconds": time.perf_counter() - start,
    }
    return json.loads(json.dumps(profile))  # exactly what the file will hold (tuples become lists)


def _runtime(target: str) -> dict[str, Any]:
    """The runtime's version for targets that are not torch itself."""
    if target != "onnxruntime":
        return {}
    try:
        return {"onnxruntime_version": metadata.version("onnxruntime")}
    except metadata.PackageNotFoundError:
        return {"onnxruntime_version": None}


def load_profile(path: str | Path) -> dict[str, Any]:
    """A profile file, checked: one-line `UserError` naming the file for anything malformed."""
    path = Path(path)
    data = read_json(path, "latency profile")
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise UserError(f"latency profile {path} is not a profile written by `nas profile` (format {PROFILE_FORMAT!r})")
    if data.get("format_version") != PROFILE_VERSION:
        raise UserError(f"latency profile {path} has format_version {data.get('format_version')!r}, "
                        f"this nas reads {PROFILE_VERSION!r}: measure it again with `nas profile`")
    if missing := [k for k in PROFILE_KEYS if k not in data]:
        raise UserError(f"latency profile {path} lacks the key(s) {missing}")
    try:
        if not isinstance(data["device"], dict) or not isinstance(data["units"], dict):
            raise TypeError("device and units must be objects")
        _check_settings(data["settings"])
        space = SearchSpace(SpaceConfig.from_dict(data["space"]))
        table = set()
        for i, row in enumerate(data["lut"]):
            table.add(BlockSpec.from_dict(row["block"]))
            _check_ms(row, f"lut[{i}]")
        spec = ModelSpec.from_config(space.config)
        size = data["settings"].get("input_size", 0) or spec.input_size
        for i, row in enumerate(data["subnets"]):  # what fitting the predictor reads: fail here, naming the file
            _check_ms(row, f"subnets[{i}]")
            try:
                arch = space.parse(row["arch"])
            except ArchError as e:
                raise ValueError(f"subnets[{i}].{e}") from None
            if absent := [b for b in block_specs(*at_input_size(spec, arch, size)) if b not in table]:
                raise ValueError(f"subnets[{i}] holds a unit that the lut lacks: {show(absent[0])}")
    except (ArchError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"latency profile {path} is malformed: {type(e).__name__}: {e}") from None
    return data


def _check_ms(row: dict[str, Any], where: str) -> None:
    value = row["latency_ms"]
    if not is_finite_number(value) or not value > 0:
        raise ValueError(f"{where}.latency_ms must be a positive finite number, got {show(value)}")


def _check_settings(settings: Any) -> None:
    """The settings a search applies: the target, threads, batch and timing limit."""
    if not isinstance(settings, dict):
        raise TypeError("settings must be an object")
    if missing := {"target", "threads", "batch", "max_seconds"} - set(settings):
        raise KeyError(f"settings lack {sorted(missing)}")
    if not isinstance(settings["target"], str) or settings["target"] not in TARGETS:
        raise ValueError(f"settings.target must be one of {list(TARGETS)}, got {show(settings['target'])}")
    for name in ("threads", "batch"):
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31:
            raise ValueError(f"settings.{name} must be a positive integer, got {show(value)}")
    if settings.get("precision", "fp32") not in PRECISIONS:  # profiles written before precision: fp32
        raise ValueError(f"settings.precision must be one of {list(PRECISIONS)}, got {show(settings['precision'])}")
    value = settings.get("input_size", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31:
        raise ValueError(f"settings.input_size must be a positive integer (or 0), got {show(value)}")
    value = settings["max_seconds"]
    if not is_finite_number(value) or not value > 0:
        raise ValueError(f"settings.max_seconds must be a positive finite number, got {show(value)}")


def profile_space(profile: dict[str, Any]) -> SearchSpace:
    return SearchSpace(SpaceConfig.from_dict(profile["space"]))


def host_mismatch(profile: dict[str, Any]) -> str | None:
    """Why this machine cannot re-measure for the profile's device (None: it can).

    The target must be runnable here and the processor (machine, CPU model, logical cores), torch
    version, and for CUDA the GPU and CUDA version, equal to the profile's; ONNX Runtime adds its
    version. The profile's threads and batch are used when re-measuring.
    """
    target, device = profile["settings"]["target"], profile["device"]
    here = describe_hardware("cuda" if target == "cuda" else "cpu") | _runtime(target)
    keys = HOST_KEYS + (CUDA_KEYS if target == "cuda" else ()) + tuple(_runtime(target))
    if target == "cuda" and not torch.cuda.is_available():
        return "the profile is for CUDA and this machine has none"
    for key in keys:
        if device.get(key) != here.get(key):
            return f"{key} differs: profile {device.get(key)!r}, this machine {here.get(key)!r}"
    return None



@dataclass(frozen=True)
class SearchLatency:
    """Where `nas search` gets latency: measured on this machine (`predictor` None), or predicted
    from a profile, which `mismatch` says this machine cannot re-measure for (None: it can)."""

    settings: LatencySettings
    predictor: LatencyPredictor | None = None
    mismatch: str | None = None
    profile: str | None = None

    def record(self) -> dict[str, Any]:
        """For the run's config.json."""
        out: dict[str, Any] = {"settings": asdict(self.settings), "profile": self.profile}
        if self.predictor is not None:
            out |= {"device": self.predictor.meta.get("device"), "model": self.predictor.model,
                    "coef": list(self.predictor.coef), "cv_error": dict(self.predictor.cv_error),
                    "remeasure": self.mismatch or "yes: this machine is the profile's device"}
        return out


def search_latency(target: str, *, threads: int, batch: int) -> SearchLatency:
    """`--target` of `nas search`: a target measured here (cpu, cuda, onnxruntime) or a profile .json."""
    if target in TARGETS:
        if target == "cuda" and not torch.cuda.is_available():
            raise UserError("--target cuda: CUDA is not available on this machine")
        return SearchLatency(LatencySettings(device=target, threads=threads, batch_size=batch))
    if not target.endswith(".json"):
        raise UserError(f"--target {target!r} is neither a target ({', '.join(TARGETS)}) nor a profile .json "
                        "written by `nas profile`")
    profile = load_profile(target)
    s = profile["settings"]
    settings = LatencySettings(device=s["target"], threads=s["threads"], batch_size=s["batch"], max_seconds=s["max_seconds"])
    return SearchLatency(settings, LatencyPredictor.fit(profile), host_mismatch(profile), str(Path(target).resolve()))
