"""Supernet training: sampling rules, one accumulated update per step, checkpoints and resume.

Each step draws subnets with a sampling rule (`nas.training.sampling`: uniform single path, sandwich with
in-place distillation, complexity-aware, or progressive shrinking; best-of-k: of a slot's candidates, the one with the lowest
loss on the step's batch) and accumulates their gradients into one optimizer
update (Yu et al., BigNAS / "Universally Slimmable Networks"; AttentiveNAS; ElasticViT). Students
distill the teacher only in epochs after one whose teacher loss was below chance
(`nas.training.health.teacher_learned`); before, they learn from the labels. AdamW or
SGD, cosine schedule with linear warm-up, label smoothing, light augmentation for small images
(random translation, optional horizontal flip), bfloat16 autocast on CUDA.

Normalization needs no per-subnet recalibration: conv blocks use GroupNorm(1 group) and
transformer blocks LayerNorm (see `search_spaces/layers.py`), so an inherited subnet is evaluated
as it is, with no BatchNorm statistics to re-estimate.

After every epoch the whole training state (weights, optimizer moments, every random generator,
the sampler's state, the history) is written atomically to one `checkpoint.safetensors`;
`resume=True` continues from it and ends with the same weights as an uninterrupted run. When asked
to stop (Ctrl-C), the step under way is finished and the same state is written mid-epoch, with the
epoch's shuffle state and the steps done in it.

With `parallel`, this loop is one worker of a data-parallel run (`nas.training.parallel`, on Ray Train by
`nas.cluster.train`) whose updates equal one process's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nas.data.datasets import TaskData
from nas.data.stream import PipelineRate
from nas.errors import UserError
from nas.evaluation.accuracy import accuracy_and_loss, evaluate
from nas.runs.progress import progress_bar
from nas.training.batches import ALL, train_batches
from nas.training.checkpoint import load_checkpoint, save_checkpoint
from nas.training.config import TrainConfig, training_budget
from nas.training.health import (
    Problem,
    chance_accuracy,
    chance_streaks,
    check_finite_weights,
    diverged,
    teacher_learned,
)
from nas.training.parallel import DataParallel, check_parallel, sum_gradients
from nas.training.sampling import Draw, make_sampler
from nas.training.subspace import Subspace
from search_spaces import HybridSupernet


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def autocast(device: str):
    """bfloat16 autocast on CUDA (no loss scaling needed); full precision elsewhere."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.inference_mode()
def make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True)


def steps_per_epoch(data: TaskData, config: TrainConfig) -> int:
    return training_budget(config, len(data.train)).steps_per_epoch


def _pipeline_text(pipeline: PipelineRate | None) -> str:
    """The streamed data pipeline's capacity, beside the training's samples/s: the smaller one limits."""
    rate = pipeline.images_per_second() if pipeline is not None else None
    return f", data {rate:.0f} img/s ({pipeline.workers} workers)" if pipeline is not None and rate else ""


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _update(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], config: TrainConfig) -> None:
    """Clip the accumulated gradients, step, and clear them for the next step; non-finite gradients
    (which clipping would spread to every weight) stop training before they reach the weights."""
    norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip if config.grad_clip > 0 else math.inf)
    if not torch.isfinite(norm):
        raise UserError(diverged(f"the gradient norm is {norm.item()}", config))
    opt.step()
    opt.zero_grad(set_to_none=True)


Selection = Literal["val_loss", "val_acc"]  # what "best" means when the best epoch is kept


def train_standalone(model: torch.nn.Module, data: TaskData, config: TrainConfig, *, steps: int | None = None,
                     select: Selection | None = None, patience: int = 0,
                     on_epoch: Callable[[dict], None] | None = None, stop: Callable[[], bool] | None = None,
                     show_progress: bool = False, description: str = "training subnet") -> dict:
    """Train one static model in place on the labels with the supernet's recipe and budget.

    The reference for ranking fidelity (`benchmarks/ranking_fidelity.py`): same epochs, batch size,
    optimizer, schedule, label smoothing and augmentation as `train_supernet`, one model per step.
    Also the loop of the finishing stage (`nas.finish`), through these options:

    - `steps`: this many optimizer steps instead of `config.epochs` epochs (the schedule spans them;
      the last epoch may be cut short).
    - `select`: validate after every epoch and end with the weights that scored best (lowest
      validation loss, or highest accuracy with the loss breaking ties), the starting weights
      included; `patience` validations in a row without improvement end training early (0: never).
    - `on_epoch`: called with each epoch's record (epoch, step, training loss, seconds, and the
      validation accuracy and loss when validated).
    - `stop`: polled after every step; when it turns true, training ends after that step (with
      `select`, on the best weights so far) and the summary says `stopped`.
    """
    if patience < 0 or (steps is not None and steps < 1):
        raise ValueError(f"patience must be >= 0 and steps >= 1, got {patience} and {steps}")
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model.to(config.device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, config)
    plan = training_budget(config if steps is None else replace(config, epochs=None, steps=steps), len(data.train))
    total, warmup = plan.steps, plan.warmup_steps
    validate = select is not None or on_epoch is not None
    best = _BestWeights(model, select, data, config.device) if select is not None else None
    history: list[dict] = []
    step, stopped, waited = 0, False, 0
    with progress_bar(total, description, enabled=show_progress) as bar:
        while step < total and not stopped and not (patience and waited >= patience):
            losses = []
            for x, y in train_batches(data, config, gen):
                _set_lr(opt, lr_at(step, total, warmup, config.lr))
                with autocast(config.device):
                    loss = F.cross_entropy(model(x).float(), y, label_smoothing=config.label_smoothing)
                if not torch.isfinite(loss):
                    raise UserError(diverged(f"the loss is {loss.item()}", config))
                loss.backward()
                _update(opt, params, config)
                step += 1
                losses.append(loss.item())
                bar.update(f"loss {losses[-1]:.3f}" + (best.status() if best is not None else ""))
                stopped = stop is not None and stop()
                if step >= total or stopped:
                    break
            record = {"epoch": len(history) + 1, "step": step, "loss": float(np.mean(losses)),
                      "seconds": time.perf_counter() - start}
            if validate:
                record["val_acc"], record["val_loss"] = accuracy_and_loss(model, data.val, device=config.device)
            if best is not None:
                waited = 0 if best.offer(model, step, record["val_acc"], record["val_loss"]) else waited + 1
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
    best_step = step
    if best is not None:
        best_step = best.restore(model)
    return {"seconds": time.perf_counter() - start, "steps": step, "best_step": best_step, "stopped": stopped,
            "history": history, "val_acc": evaluate(model, data.val, device=config.device)}


class _BestWeights:
    """The best weights seen by `train_standalone(select=...)`, the starting ones first."""

    def __init__(self, model: torch.nn.Module, select: Selection, data: TaskData, device: str):
        if select not in ("val_loss", "val_acc"):
            raise ValueError(f"select must be 'val_loss' or 'val_acc', got {select!r}")
        self.select = select
        self.score: tuple[float, ...] = ()  # below every score
        self.state: dict[str, Tensor] = {}
        self.step, self.val_acc, self.val_loss = 0, math.nan, math.nan
        self.offer(model, 0, *accuracy_and_loss(model, data.val, device=device))

    def offer(self, model: torch.nn.Module, step: int, val_acc: float, val_loss: float) -> bool:
        """Keep the model's weights if they score better than the best so far; whether they did."""
        loss = val_loss if math.isfinite(val_loss) else math.inf  # a NaN loss is the worst
        score = (-loss,) if self.select == "val_loss" else (val_acc, -loss)
        if self.score and not score > self.score:
            return False
        self.score, self.step, self.val_acc, self.val_loss = score, step, val_acc, val_loss
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True

    def status(self) -> str:
        best = self.val_loss if self.select == "val_loss" else self.val_acc
        return f", best {self.select} {best:.4f} at step {self.step}"

    def restore(self, model: torch.nn.Module) -> int:
        """Load the best weights into the model; the step they were reached at."""
        model.load_state_dict(self.state)
        return self.step


def _slot_loss(logits: Tensor, y: Tensor, draw: Draw, teacher: Tensor | None, config: TrainConfig) -> Tensor:
    """What a drawn subnet is trained on: the KL to the teacher's probabilities for a distilled student,
    else cross-entropy with label smoothing."""
    if draw.role == "student" and config.distill and teacher is not None:
        return F.kl_div(F.log_softmax(logits.float(), dim=1), teacher, reduction="batchmean")
    return F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)


@torch.no_grad()
def _best_candidate(supernet: HybridSupernet, x: Tensor, y: Tensor, draw: Draw, teacher: Tensor | None,
                    config: TrainConfig) -> Draw:
    """Best-of-k: the slot with its candidate of the lowest loss on this batch (a non-finite loss
    counts as the worst), the one to train. Judged in train mode, which has no side effect here: no
    layer keeps batch statistics or drops units (`search_spaces/layers.py`, `ElasticNorm`)."""
    with autocast(config.device):
        losses = torch.stack([_slot_loss(supernet(x, arch), y, draw, teacher, config) for arch in draw.candidates])
    return Draw(draw.candidates[int(torch.nan_to_num(losses, nan=math.inf).argmin())], draw.role)


def _step_losses(supernet: HybridSupernet, x: Tensor, y: Tensor, draws: list[Draw], config: TrainConfig) -> tuple[float, int]:
    """Forward/backward of every drawn subnet (of a slot's candidates, the one `_best_candidate`
    chooses; gradients accumulate); returns the first loss and its hits."""
    teacher: Tensor | None = None
    first_loss, first_hits = math.nan, 0
    for i, draw in enumerate(draws):
        if draw.rivals:
            draw = _best_candidate(supernet, x, y, draw, teacher, config)
        with autocast(config.device):
            logits = supernet(x, draw.arch)
            loss = _slot_loss(logits, y, draw, teacher, config)
        if not torch.isfinite(loss):
            raise UserError(diverged(f"the loss of subnet {draw.arch.id} is {loss.item()}", config))
        loss.backward()
        if draw.role == "teacher":
            teacher = F.softmax(logits.detach().float(), dim=1)
        if i == 0:
            first_loss, first_hits = loss.item(), int((logits.argmax(1) == y).sum())
    return first_loss, first_hits


def _parallel_step(supernet: HybridSupernet, xs: Tensor, ys: Tensor, batch: int, draws: list[Draw], config: TrainConfig,
                   params: list[torch.nn.Parameter], parallel: DataParallel) -> tuple[float, int]:
    """`_step_losses` on this worker's rows `xs`, `ys` of a batch of `batch` rows, then the whole batch's
    gradients, first loss and hits on every worker (`nas.training.parallel.sum_gradients`)."""
    loss, hits, error = 0.0, 0, ""
    if len(ys):  # a short last batch leaves some workers without rows
        try:
            loss, hits = _step_losses(supernet, xs, ys, draws, config)
        except UserError as e:  # raised on every worker alike by sum_gradients
            error = str(e)
    return sum_gradients(params, parallel, share=len(ys) / batch, loss=loss, hits=hits, error=error)


def train_supernet(supernet: HybridSupernet, data: TaskData, config: TrainConfig, *,
                   checkpoint: Path | None = None, resume: bool = False, show_progress: bool = True,
                   stop: Callable[[], bool] | None = None, parallel: DataParallel | None = None,
                   on_problem: Callable[[Problem], None] | None = None, within: Subspace | None = None,
                   pause_at: int | None = None) -> dict:
    """Train in place; returns a JSON-able summary (history, budget, time, validation accuracy of
    the extremes, and the problems seen: `nas.training.health`).

    The budget is `training_budget(config, len(data.train))`. With `checkpoint`, the training state
    is written there after every epoch; with `resume`, training continues from that file (the
    config must equal the one it was written with). `stop` (one process only) is polled after
    every step: when it turns true, the step under way is finished, the state is checkpointed
    mid-epoch (the epoch's shuffle state and the steps done in it) and `KeyboardInterrupt` is
    raised; resuming from there ends with the same weights as an uninterrupted run. With
    `parallel`, this process is one worker of a data-parallel run (see `DataParallel`). `within`
    (the uniform rule only): every step's subnets are drawn from that sub-space (a copy of a
    few-shot supernet, `nas.training.fewshot`). `pause_at` (with `checkpoint`): after that step of
    the budget's schedule, training is checkpointed as `stop` does and returns `{"paused_at": step}`;
    resuming continues the same schedule and optimizer state.

    A non-finite loss, gradient or weight stops training with a `UserError` before it reaches the
    weights or a checkpoint; a streak of epochs at chance is reported to `on_problem` when it
    appears, and every one is in the summary's `problems`.
    """
    if (stop is not None or pause_at is not None) and parallel is not None:
        raise ValueError("stop and pause_at are for one process; a data-parallel run stops through its driver")
    if pause_at is not None and checkpoint is None:
        raise ValueError("pause_at needs a checkpoint to pause into")
    if parallel is not None:
        check_parallel(config)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    device, space = config.device, supernet.space
    supernet.to(device).train()
    params = [p for p in supernet.parameters() if p.requires_grad]
    opt = make_optimizer(params, config)
    plan = training_budget(config, len(data.train))
    sampler = make_sampler(config.sampling, space, num_random=config.num_random, seed=config.seed,
                           best_of=config.best_of, within=within, total_steps=plan.steps, phase_share=config.phase_share)
    chance = (space.config.num_classes, chance_accuracy(data.train.y), len(data.train))  # epoch_at_chance's
    largest, smallest = space.largest(), space.smallest()
    state: dict[str, Any] = {"epoch": 0, "step": 0, "seconds": 0.0, "history": [], "epoch_steps": 0,
                             "epoch_losses": [], "epoch_correct": 0}
    epoch_gen: Tensor | None = None  # the generator state at the start of a partly trained epoch
    if resume:
        if checkpoint is None:
            raise UserError("resume needs a checkpoint path")
        state, epoch_gen = load_checkpoint(checkpoint, supernet, opt, sampler, gen, config, plan.epochs)
    epoch0, step, history = state["epoch"], state["step"], state["history"]
    start = time.perf_counter() - state["seconds"]
    run_start, seen = time.perf_counter(), 0
    pipeline = PipelineRate() if data.streamed else None  # what the streamed data's workers can deliver
    reported = len(chance_streaks(history, *chance, plan, config))  # streaks said before an interruption
    with progress_bar(plan.steps, f"training supernet ({config.sampling})", enabled=show_progress,
                      completed=step) as bar:
        if step:
            bar.update(f"resumed at epoch {epoch0 + 1}", advance=0)
        for epoch in range(epoch0, plan.epochs):
            resumed = epoch == epoch0 and state["epoch_steps"] > 0
            done = state["epoch_steps"] if resumed else 0  # steps of this epoch trained before an interruption
            losses = list(state["epoch_losses"]) if resumed else []
            correct = state["epoch_correct"] if resumed else 0
            if resumed:
                assert epoch_gen is not None  # a mid-epoch checkpoint holds it
                gen.set_state(epoch_gen)  # replay the epoch's shuffle and augmentation draws
            epoch_start_gen = gen.get_state()
            # students learn from the teacher only while its loss is below chance; a teacher at chance
            # teaches nothing but a constant output, in which the whole supernet would stay
            step_config = replace(config, distill=config.distill and teacher_learned(history, chance[0]))
            count = min(done * config.batch_size, len(data.train))
            stopped = False
            rows = ALL if parallel is None else parallel.rows  # of every batch: this worker's only
            for i, (x, y) in enumerate(train_batches(data, config, gen, skip=done, rate=pipeline, rows=rows), start=done):
                if i >= plan.epoch_steps(epoch):  # the budget ends inside this epoch
                    break
                _set_lr(opt, lr_at(step, plan.steps, plan.warmup_steps, config.lr))
                draws = sampler.draws()
                batch = min(config.batch_size, len(data.train) - i * config.batch_size)  # rows of all workers
                loss, hits = (_step_losses(supernet, x, y, draws, step_config) if parallel is None
                              else _parallel_step(supernet, x, y, batch, draws, step_config, params, parallel))
                _update(opt, params, config)
                step += 1
                seen += batch
                losses.append(loss)
                correct, count = correct + hits, count + batch
                rate = seen / (time.perf_counter() - run_start)
                bar.update(f"epoch {epoch + 1}/{plan.epochs} loss {np.mean(losses):.3f} "
                           f"acc {correct / count:.3f} {rate:.0f} samples/s" + _pipeline_text(pipeline))
                halt = step == pause_at or (stop is not None and stop())
                if halt and len(losses) < plan.epoch_steps(epoch):
                    stopped = True
                    break
            check_finite_weights(params, config)  # before any checkpoint holds them
            if stopped:
                if checkpoint is not None:
                    save_checkpoint(checkpoint, supernet, opt, sampler, gen, config,
                                    {"epoch": epoch, "step": step, "seconds": time.perf_counter() - start,
                                     "history": history, "epoch_steps": len(losses), "epoch_losses": losses,
                                     "epoch_correct": correct}, epoch_gen=epoch_start_gen)
                if step == pause_at:
                    return {"paused_at": step}
                raise KeyboardInterrupt
            history.append({
                "epoch": epoch + 1, "step": step, "loss": float(np.mean(losses)), "train_acc": correct / count,
                "distilled": step_config.distill,
                "val_acc_largest": evaluate(supernet, data.val, largest, device=device),
                "val_acc_smallest": evaluate(supernet, data.val, smallest, device=device),
                "seconds": time.perf_counter() - start,
            })
            streaks = chance_streaks(history, *chance, plan, config)
            if on_problem is not None and len(streaks) > reported:
                on_problem(streaks[-1])  # a streak reached its length at this epoch
            reported = len(streaks)
            if checkpoint is not None and (parallel is None or parallel.rank == 0):
                save_checkpoint(checkpoint, supernet, opt, sampler, gen, config,
                                {"epoch": epoch + 1, "step": step, "seconds": time.perf_counter() - start,
                                 "history": history})
            if parallel is not None:
                parallel.epoch_end(history[-1])
            if step == pause_at and epoch + 1 < plan.epochs:
                return {"paused_at": step}
            if stop is not None and stop() and epoch + 1 < plan.epochs:
                raise KeyboardInterrupt
    return {
        "epochs": history,
        "steps": plan.steps, "steps_per_epoch": plan.steps_per_epoch, "warmup_steps": plan.warmup_steps,
        "seconds": time.perf_counter() - start,
        "samples_per_second": seen / max(time.perf_counter() - run_start, 1e-9) if seen else None,
        "data_images_per_second": pipeline.images_per_second() if pipeline is not None else None,
        "val_acc_largest": history[-1]["val_acc_largest"],  # measured after the last epoch
        "val_acc_smallest": history[-1]["val_acc_smallest"],
        "problems": [p.to_dict() for p in chance_streaks(history, *chance, plan, config)],
    }
