"""Training-free proxies: a score per subnet from a few batches, before (or without) any training.

A proxy takes a static subnet (`SubnetModel`: freshly initialised, `initialised_subnet`, or with
a supernet's inherited weights, `HybridSupernet.extract`) and a few `(x, y)` batches, and returns
one number; higher is meant to mean "more accurate once trained". `score` runs a proxy on a
deep copy, so the model scored is never changed (no weights, gradients, hooks or mode touched).

- "params": the parameter count, and "flops": the analytic multiply-adds of one forward pass.
  The baselines: on NAS-Bench-201 the parameter count ranks as well as the best proxies
  (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", 2021).
- "naswot": Mellor et al., "Neural Architecture Search without Training" (2021): log-determinant
  of the kernel of binary activation codes over a batch. Our blocks use GELU, not ReLU: a unit's
  code is the sign of its GELU's input (GELU is then in its near-linear "on" or its near-zero
  "off" regime, the analogue of a ReLU's linear region). Every GELU counts: the stem, both of a
  convolution block's, a transformer block's MLP. Softmax, linear attention's elu and pooling
  have no such regions and play no part, so a pure-attention layer counts only through its MLP.
  `K + I` instead of `K` keeps two identical codes in a batch from giving log 0.
- "synflow": Tanaka et al., "Pruning neural networks without any data by iteratively conserving
  synaptic flow" (2020), as a zero-cost proxy (Abdelfattah et al., 2021): every parameter
  replaced by its absolute value, an all-ones input of one sample, R = sum of the logits in double
  precision, score log(sum over convolution and linear weights of |w * dR/dw|). Normalization
  layers are removed (replaced by identity), as the paper's "no BatchNorm" variant does: GroupNorm
  and LayerNorm would centre the all-positive signal. Ill-defined beyond convolutions: the score
  is a sum over input-output paths of products of weights only for piecewise-linear networks.
  GELU on positive inputs lies between x/2 and x (close, not equal, to linear); attention
  multiplies two paths (q k^T) and softmax normalizes them, so a transformer block's weights enter
  squared and saturated rather than linearly; the pool mixer (pooling minus identity) subtracts
  paths. Read it on transformer blocks as a magnitude heuristic, not as synaptic flow.
- "grad_norm": Abdelfattah et al. (2021): sum over convolution and linear weights of the norm of
  the cross-entropy gradient on each batch, averaged over the batches.
- "jacob_cov": Mellor et al., first version (arXiv 2006.04647v1): the correlations between the
  input gradients (of the summed logits) of a batch's samples, scored -sum(log(v + k) + 1/(v + k))
  over their eigenvalues v (k = 1e-5): high when the samples' gradients are uncorrelated. It asks
  nothing of the layer types, so it is as well defined on attention as on convolutions. Each
  sample's gradient is centred over its D input values, so the correlations have rank < D: a batch
  is cut to D - 1 samples (63 of an 8x8 digit, 39 of a 40-step sequence), else the eigenvalues
  that must be 0 dominate the score with 1/k each.

NASWOT, grad_norm and jacob_cov are defined on any hybrid subnet; synflow only loosely (above). As-
ViT's proxies (NTK condition number, linear regions; Chen et al., 2022) are left out: the NTK
needs a Jacobian per parameter and sample, too costly to rank thousands of subnets on a CPU.

Which proxy ranks our subnets better than the parameter count: docs/benchmarks.md ("Training-free
proxies"). Imports `search_spaces` only.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from search_spaces import Arch, ModelSpec, SubnetModel, count_macs
from search_spaces.registry import Registry
from search_spaces.static import initialised_subnet

__all__ = ["PROXIES", "Batch", "Proxy", "draw_batches", "list_proxies", "proxy_scores", "register_proxy", "score"]

Batch = tuple[Tensor, Tensor]  # inputs (B, C, H, W) or (B, C, T), float; labels (B,), int64
JACOB_K = 1e-5  # Mellor et al.'s offset of the eigenvalues


@dataclass(frozen=True)
class Proxy:
    """One proxy: `score(model, batches)` on a model it may change (`score` below passes a copy)."""

    name: str
    score: Callable[[nn.Module, Sequence[Batch]], float]
    uses_data: bool  # False: the batches play no part (params, flops; synflow reads only their shape)
    reads_only: bool = False  # True: counts without running the model, so `score` passes no copy


PROXIES: Registry[Proxy] = Registry("proxy")


def register_proxy(proxy: Proxy) -> Proxy:
    return PROXIES.add(proxy.name, proxy)


def list_proxies() -> list[str]:
    return PROXIES.names()


def score(name: str, model: nn.Module, batches: Sequence[Batch]) -> float:
    """Proxy `name` of `model` on `batches` (at least one): a finite float, higher meant better.
    Runs on a deep copy in eval mode with gradients enabled (a count, on the model itself): `model`
    is left exactly as it was."""
    proxy = PROXIES.get(name)
    if not batches:
        raise ValueError("a proxy needs at least one (x, y) batch")
    if proxy.reads_only:
        value = float(proxy.score(model, batches))
    else:
        scored = copy.deepcopy(model).eval()
        for p in scored.parameters():
            p.requires_grad_(True)
        with torch.enable_grad():
            value = float(proxy.score(scored, batches))
    if not math.isfinite(value):
        raise ValueError(f"proxy {name!r} is not finite ({value}) on this model")
    return value


def draw_batches(x: Tensor, y: Tensor, *, batches: int = 1, batch_size: int = 64, seed: int = 0) -> list[Batch]:
    """`batches` disjoint batches of `batch_size` rows of (x, y) drawn without replacement (seeded);
    fewer rows per batch when the data has too few."""
    if batches < 1 or batch_size < 1:
        raise ValueError(f"batches and batch_size must be >= 1, got {batches} and {batch_size}")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    size = min(batch_size, len(y) // batches) or 1
    return [(x[idx], y[idx]) for idx in (order[i * size:(i + 1) * size] for i in range(batches)) if len(idx)]


def proxy_scores(spec: ModelSpec, archs: Sequence[Arch], batches: Sequence[Batch], names: Sequence[str], *,
                 seed: int = 0) -> np.ndarray:
    """(len(archs), len(names)) float64: each proxy of each architecture at its initialisation
    (`initialised_subnet(spec, arch, seed)`, the same seed for every architecture)."""
    for n in names:
        PROXIES.get(n)  # an unknown name fails before any model is built
    rows = []
    for arch in archs:
        model = initialised_subnet(spec, arch, seed)
        rows.append([score(n, model, batches) for n in names])
    return np.asarray(rows, dtype=np.float64).reshape(len(archs), len(names))


# ---- helpers ------------------------------------------------------------------------------------
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
_NORMS = (nn.GroupNorm, nn.LayerNorm)


def _layer_weights(model: nn.Module) -> list[Tensor]:
    """The weights of every convolution and linear layer (no biases, no norms): what the zero-cost
    papers sum over."""
    return [m.weight for m in model.modules() if isinstance(m, _LAYERS)]


def _without_norms(model: nn.Module) -> nn.Module:
    """`model` (a copy: changed in place) with every GroupNorm and LayerNorm replaced by identity."""
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, _NORMS):
                setattr(parent, child_name, nn.Identity())
    return model


class _GeluCodes(TorchFunctionMode):
    """While active, records the sign of every GELU's input, (B, units) per call; no hook on any module."""

    def __init__(self) -> None:
        super().__init__()
        self.codes: list[Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.gelu:
            self.codes.append((args[0] > 0).flatten(1))
        return func(*args, **(kwargs or {}))


# ---- the proxies --------------------------------------------------------------------------------
def _params(model: nn.Module, batches: Sequence[Batch]) -> float:
    return float(sum(p.numel() for p in model.parameters()))


def _flops(model: nn.Module, batches: Sequence[Batch]) -> float:
    if not isinstance(model, SubnetModel):
        raise TypeError(f"the flops proxy counts a SubnetModel's architecture, got {type(model).__name__}")
    return float(count_macs(model.spec, model.arch))


def _naswot(model: nn.Module, batches: Sequence[Batch]) -> float:
    values = []
    for x, _ in batches:
        with torch.no_grad(), _GeluCodes() as mode:
            model(x)
        c = torch.cat(mode.codes, dim=1).double()  # (B, units) of 0/1
        k = c @ c.T + (1 - c) @ (1 - c).T  # (B, B): units where two samples agree
        values.append(torch.linalg.slogdet(k + torch.eye(len(k), dtype=k.dtype)).logabsdet.item())
    return float(np.mean(values))


def _synflow(model: nn.Module, batches: Sequence[Batch]) -> float:
    net = _without_norms(model).double()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    ones = torch.ones((1, *batches[0][0].shape[1:]), dtype=torch.float64)
    weights = _layer_weights(net)
    # the plain attention kernel: the fused CPU kernel's backward gives NaN at these magnitudes
    with sdpa_kernel(SDPBackend.MATH):
        grads = torch.autograd.grad(net(ones).sum(), weights, allow_unused=True)
    total = sum(float((w.detach() * g).abs().sum()) for w, g in zip(weights, grads) if g is not None)
    return math.log(total) if total > 0 else -math.inf


def _grad_norm(model: nn.Module, batches: Sequence[Batch]) -> float:
    weights = _layer_weights(model)
    values = []
    for x, y in batches:
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights, allow_unused=True)
        values.append(sum(float(g.norm()) for g in grads if g is not None))
    return float(np.mean(values))


def _jacob_cov(model: nn.Module, batches: Sequence[Batch]) -> float:
    values = []
    for x, _ in batches:
        x = x[: x[0].numel() - 1].detach().clone().requires_grad_(True)  # (B, ...), B < input size: see above
        (jac,) = torch.autograd.grad(model(x).sum(), x)
        corr = torch.nan_to_num(torch.corrcoef(jac.flatten(1).double()))  # (B, B); a constant row: 0
        v = torch.linalg.eigvalsh(corr).clamp(min=0.0)
        values.append(-float(torch.sum(torch.log(v + JACOB_K) + 1.0 / (v + JACOB_K))))
    return float(np.mean(values))


for _proxy in (Proxy("params", _params, uses_data=False, reads_only=True),
               Proxy("flops", _flops, uses_data=False, reads_only=True),
               Proxy("naswot", _naswot, uses_data=True), Proxy("synflow", _synflow, uses_data=False),
               Proxy("grad_norm", _grad_norm, uses_data=True), Proxy("jacob_cov", _jacob_cov, uses_data=True)):
    register_proxy(_proxy)
