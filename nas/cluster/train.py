"""Data-parallel supernet training with Ray Train (`TorchTrainer`; gloo on CPU, NCCL on GPU).

Every worker runs `nas.training.train.train_supernet` with the same seed from the same initial weights
(the driver's, through the object store), reads and computes only its rows of every batch
(`nas.training.batches`), and the gradients are summed over the workers (`nas.training.parallel`): the
run equals a one-process run up to float rounding, whatever the number of workers. Each worker uses
one CPU thread (`resources_per_worker` 1 CPU). Streamed data (`nas.data.stream`) travel as what
describes them (files or `.npy` paths, rows, labels, statistics), never as inputs: each worker reads
its rows from the files in its own DataLoader processes (`--data-workers`, not counted by Ray), so
on a multi-node cluster the data, like the run folder, must be at the same path on every node.

After every epoch rank 0 reports its `checkpoint.safetensors` to Ray Train, which keeps the latest
in `RUN/ray-train/`: a failed worker makes Ray Train restart the workers from it (up to
`MAX_FAILURES` times), and `nas train --resume` continues from it (Ray Train restores a run from
its storage folder). A one-process run's `checkpoint.safetensors` can be resumed here too. The
trained weights come back to the driver as rank 0's return value; the driver writes the run folder.
On a multi-node cluster, the run folder must be on storage every node can reach (Ray Train's rule
for checkpoints).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from nas.data.datasets import TaskData
from nas.errors import UserError
from nas.training.checkpoint import CHECKPOINT_FILE
from nas.training.config import TrainConfig
from nas.training.parallel import DataParallel
from nas.training.train import train_supernet
from search_spaces import HybridSupernet, SearchSpace

RAY_TRAIN_DIR = "ray-train"  # Ray Train's run folder (its epoch checkpoints) inside the run folder
MAX_FAILURES = 2


def has_checkpoint(run: Path) -> bool:
    """Whether a distributed training in `run` left something to resume from."""
    return (run / RAY_TRAIN_DIR).is_dir()


def remove_checkpoints(run: Path) -> None:
    """Once the supernet is written, Ray Train's checkpoints are not needed any more."""
    shutil.rmtree(run / RAY_TRAIN_DIR, ignore_errors=True)


def train_distributed(supernet: HybridSupernet, data: TaskData, config: TrainConfig, *, workers: int, run: Path,
                      resume: bool = False) -> dict:
    """Train `supernet` in place on `workers` Ray Train workers; returns `train_supernet`'s summary.
    `resume`: continue from Ray Train's checkpoint in `run`, else from `run/checkpoint.safetensors`."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    on_gpu = config.device.startswith("cuda")
    _check_resources(workers, on_gpu)
    if not resume:
        remove_checkpoints(run)  # a stale Ray Train run there would be restored
    local = run / CHECKPOINT_FILE
    setup = {
        "space": supernet.space.config, "config": config,
        "weights": ray.put({k: v.detach().cpu().numpy() for k, v in supernet.state_dict().items()}),
        "data": ray.put(data),
        "checkpoint": ray.put(local.read_bytes()) if resume and local.is_file() else None,
    }
    # Ray Train v2 (what `ray.train.torch` exports at run time) takes a loop returning a value and gives
    # it back as `Result.return_value`; mypy reads v1's `TorchTrainer` and `Result` there.
    trainer = TorchTrainer(
        _worker, train_loop_config=setup,  # type: ignore[arg-type]
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=on_gpu, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="nccl" if on_gpu else "gloo"),
        run_config=RunConfig(name=RAY_TRAIN_DIR, storage_path=str(run.resolve()),
                             failure_config=FailureConfig(max_failures=MAX_FAILURES),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    try:
        returned = trainer.fit().return_value  # type: ignore[attr-defined]
    except ray.train.TrainingFailedError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(e).__name__  # the workers' exception, after Ray's traceback
        raise UserError(f"distributed training failed after {MAX_FAILURES} restarts ({reason}); "
                        f"resume with --resume") from None
    if "error" in returned:
        raise UserError(returned["error"])
    supernet.load_state_dict({k: torch.tensor(v) for k, v in returned["weights"].items()})
    return returned["summary"]


def _check_resources(workers: int, on_gpu: bool) -> None:
    import ray

    resources = ray.cluster_resources()
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if workers > resources.get("CPU", 0):
        raise UserError(f"--workers {workers} needs {workers} CPUs; the Ray cluster has {int(resources.get('CPU', 0))}")
    if on_gpu and workers > resources.get("GPU", 0):
        raise UserError(f"--workers {workers} on CUDA needs {workers} GPUs; the Ray cluster has "
                        f"{int(resources.get('GPU', 0))}")


def _worker(setup: dict[str, Any]) -> dict[str, Any] | None:
    """One Ray Train worker: the same training loop as one process, on its rows of every batch."""
    import ray
    import ray.train
    import torch.distributed as dist
    from ray.train.torch import get_device

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(1)
    config: TrainConfig = setup["config"]
    if config.device.startswith("cuda"):
        config = dataclasses.replace(config, device=str(get_device()))
    supernet = HybridSupernet(SearchSpace(setup["space"]))
    supernet.load_state_dict({k: torch.tensor(v) for k, v in ray.get(setup["weights"]).items()})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CHECKPOINT_FILE

        def epoch_end(entry: dict[str, Any]) -> None:  # every worker reports (a barrier); rank 0 with its checkpoint
            checkpoint = ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None
            ray.train.report(dict(entry), checkpoint=checkpoint)

        parallel = DataParallel(rank=rank, world=world, all_reduce=dist.all_reduce, epoch_end=epoch_end)
        try:
            summary = train_supernet(supernet, ray.get(setup["data"]), config, checkpoint=path,
                                     resume=_restore(path, setup["checkpoint"]), show_progress=False, parallel=parallel)
        except UserError as e:  # raised on every worker alike: an answer, not a failure to retry
            return {"error": str(e)}
    if rank != 0:
        return None
    # arrays: Ray Train refuses to return torch tensors
    return {"summary": summary, "weights": {k: v.detach().cpu().numpy() for k, v in supernet.state_dict().items()}}


def _restore(path: Path, initial: Any) -> bool:
    """Writes the checkpoint to resume from at `path`: Ray Train's latest (after a restart, or on
    `--resume` of a distributed run), else the run folder's (`--resume` of a one-process run)."""
    import ray
    import ray.train

    latest = ray.train.get_checkpoint()
    if latest is not None:
        with latest.as_directory() as folder:
            shutil.copyfile(Path(folder) / CHECKPOINT_FILE, path)
        return True
    if initial is not None:
        path.write_bytes(ray.get(initial))
        return True
    return False
