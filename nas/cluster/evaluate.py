"""Subnet evaluations on Ray actors that each hold the supernet once.

The supernet's weights (as arrays), its space definition and the validation split go into the
object store once; every actor rebuilds an `Evaluator` from them when it starts (and again if it is
restarted) and then evaluates subnets one at a time on `threads` CPU threads. A `RayPool` is an
`EvaluationPool` for `nas.search.loop.run_search`: the search loop submits subnets to idle actors and
collects results in submission order, so it stays the only writer of `evaluations.csv`.

A worker that dies (killed, node lost) is restarted and its evaluation resubmitted, up to
`MAX_RESTARTS` times (Ray's `max_restarts` / `max_task_retries`): the search never sees it, and
every evaluation is recorded once. Latency measured on an actor is measured on that actor's node.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from nas.data.datasets import Split
from nas.errors import UserError
from nas.evaluation.evaluator import Evaluator
from search_spaces import Arch, HybridSupernet, SearchSpace

MAX_RESTARTS = 3


def _payload(evaluator: Evaluator) -> dict[str, Any]:
    """What an actor needs to rebuild `evaluator`: weights as arrays, the space definition, the
    validation split (training and test splits stay on the driver), latency settings and the input
    size the costs are for."""
    data = evaluator.data
    empty = Split(torch.empty(0), data.val.y[:0])  # placeholders: an actor reads only the validation split
    return {
        "space": evaluator.supernet.space.config,
        "weights": {k: v.detach().cpu().numpy() for k, v in evaluator.supernet.state_dict().items()},
        "data": dataclasses.replace(data, train=empty, test=empty),
        "latency": evaluator.latency, "device": evaluator.device,
        "predictor": evaluator.predictor, "remeasure": evaluator.remeasure, "cost_size": evaluator.cost_size,
    }


class EvaluationActor:
    """One Ray actor's evaluator (wrapped by `ray.remote` in `RayPool`). The payload comes with each
    call, as a reference in a list (not resolved by Ray): the actor reads it once, and again after a
    restart. Not a constructor argument: Ray cannot restart an actor whose constructor arguments
    live in the object store (ray-project/ray#53727)."""

    def __init__(self, threads: int):
        torch.set_num_threads(threads)
        self.evaluator: Evaluator | None = None

    def load(self, payload_ref: list[Any]) -> None:
        import ray

        if self.evaluator is not None:
            return
        payload = ray.get(payload_ref[0])
        supernet = HybridSupernet(SearchSpace(payload["space"]))
        supernet.load_state_dict({k: torch.tensor(v) for k, v in payload["weights"].items()}, strict=True)
        device = payload["device"]
        self.evaluator = Evaluator(supernet.to(device), payload["data"], payload["latency"], device=device,
                                   predictor=payload["predictor"], remeasure=payload["remeasure"],
                                   cost_size=payload["cost_size"])

    def evaluate(self, arch: Arch, latency: bool, payload_ref: list[Any]) -> dict[str, Any]:
        self.load(payload_ref)
        assert self.evaluator is not None  # built by `load`
        return self.evaluator.evaluate(arch, latency=latency)


class RayPool:
    """`workers` evaluation actors on the connected Ray cluster (`nas.cluster.connect` first)."""

    def __init__(self, evaluator: Evaluator, *, workers: int, threads: int = 1):
        import ray

        if workers < 1:
            raise UserError(f"--workers must be >= 1, got {workers}")
        if threads < 1:
            raise UserError(f"threads per evaluation worker must be >= 1, got {threads}")
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 0)), resources.get("GPU", 0.0)
        if workers * threads > cpus:
            raise UserError(f"--workers {workers} needs {workers * threads} CPUs; the Ray cluster has {cpus}")
        on_gpu = evaluator.device.startswith("cuda")
        if on_gpu and not gpus:
            raise UserError(f"--device {evaluator.device}: the Ray cluster has no GPU")
        actor = ray.remote(num_cpus=threads, num_gpus=min(1.0, gpus / workers) if on_gpu else 0,
                           max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)(EvaluationActor)
        self.workers, self.threads = workers, threads
        self._payload = [ray.put(_payload(evaluator))]  # held here for as long as an actor may restart
        # Ray types an actor's methods' `.remote` only for methods decorated with `ray.method`
        self._actors: list[Any] = [actor.remote(threads) for _ in range(workers)]
        self._idle = list(self._actors)
        self._busy: dict[Any, Any] = {}  # ObjectRef of an evaluation -> the actor running it
        self._get([a.load.remote(self._payload) for a in self._actors])  # built before the search's clock starts

    def capacity(self) -> int:
        import ray

        if self._busy:
            done, _ = ray.wait(list(self._busy), num_returns=len(self._busy), timeout=0)
            for ref in done:
                self._idle.append(self._busy.pop(ref))
        return len(self._idle)

    def submit(self, arch: Arch, *, latency: bool) -> Any:
        actor = self._idle.pop()
        ref = actor.evaluate.remote(arch, latency, self._payload)
        self._busy[ref] = actor
        return ref

    def wait(self, handle: Any, *, any_slot: bool) -> bool:
        import ray

        if handle not in self._busy:  # finished, and its actor already freed
            return True
        ready, _ = ray.wait(list(self._busy) if any_slot else [handle], num_returns=1)
        return handle in ready or bool(ray.wait([handle], timeout=0)[0])

    def result(self, handle: Any) -> dict[str, Any]:
        row = self._get(handle)
        if handle in self._busy:
            self._idle.append(self._busy.pop(handle))
        return row

    def describe(self) -> dict[str, Any]:
        import ray

        return {"engine": "ray", "workers": self.workers, "threads_per_worker": self.threads,
                "nodes": sum(1 for n in ray.nodes() if n["Alive"])}

    def close(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors, self._idle, self._busy = [], [], {}

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _get(refs: Any) -> Any:
        """`ray.get`, with a user error raised as itself and a worker lost for good as one line."""
        import ray

        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, UserError):
                raise e.cause from None
            raise
        except ray.exceptions.RayActorError as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"a Ray evaluation worker failed {MAX_RESTARTS + 1} times ({reason}); the evaluations "
                            "recorded so far are kept: continue with --resume") from None

