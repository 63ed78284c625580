"""PyTorch twins of the mmfuse fusion operators, written from the same equations.

Each twin stores its parameters exactly as the operator's functional form does
(``mmfuse.fusion.functional``: the same names, shapes and layout, e.g. kernels as
``[d_in, d_out]``), so ``twin.load(params)`` copies a JAX operator's parameters into it
and the two compute the same function. Inputs are M tensors ``[..., d_m]`` sharing
their leading (batch[, time]) dims; outputs are ``[..., C]``.

    op = mmfuse.fusion.create("tensor", (300, 74, 35), 128, rngs=nnx.Rngs(0))
    twin = torch_twins.create("tensor", (300, 74, 35), 128)
    twin.load(op.functional_params())

Only PyTorch and NumPy are imported here, so the twins run where JAX does not.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Tensors = Sequence[torch.Tensor]


def _normal(*shape: int, fan_in: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) / math.sqrt(fan_in))


def _zeros(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape))


def _ones(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.ones(*shape))


def _append_one(x: torch.Tensor, position: str = "last") -> torch.Tensor:
    """``[x; 1]`` (or ``[1; x]``): ``[..., d]`` -> ``[..., d + 1]``."""
    one = x.new_ones((*x.shape[:-1], 1))
    return torch.cat([x, one] if position == "last" else [one, x], dim=-1)


def _check_inputs(xs: Tensors, in_dims: Sequence[int], name: str) -> None:
    if len(xs) != len(in_dims):
        raise ValueError(f"{name}: expected {len(in_dims)} modalities, got {len(xs)}")
    for m, (x, d) in enumerate(zip(xs, in_dims, strict=True)):
        if x.shape[-1] != d or x.shape[:-1] != xs[0].shape[:-1]:
            raise ValueError(
                f"{name}: modality {m} has shape {tuple(x.shape)}, expected [..., {d}]"
            )


class FusionTwin(nn.Module):
    """Base of the twins: parameters named and shaped as in the JAX functional form."""

    def __init__(self, in_dims: Sequence[int], out_dim: int):
        super().__init__()
        self.in_dims, self.out_dim = tuple(in_dims), out_dim
        self.param_names: list[str] = []

    def register(self, name: str, value: nn.Parameter | list[nn.Parameter]) -> None:
        """Adds one parameter (or a list of them) under the functional form's key."""
        setattr(self, name, nn.ParameterList(value) if isinstance(value, list) else value)
        self.param_names.append(name)

    @torch.no_grad()
    def load(self, params: Mapping[str, Any]) -> FusionTwin:
        """Copies a functional-form parameter pytree (JAX or NumPy arrays) into the twin."""
        if set(params) != set(self.param_names):
            raise ValueError(
                f"{type(self).__name__}: parameters {sorted(params)} do not match the "
                f"twin's {sorted(self.param_names)} (build both with the same options)"
            )
        for name in self.param_names:
            target, value = getattr(self, name), params[name]
            pairs = (
                zip(target, value, strict=True) if isinstance(value, list) else [(target, value)]
            )
            for t, v in pairs:
                v = torch.from_numpy(np.array(v, dtype=np.float32))
                if tuple(t.shape) != tuple(v.shape):
                    raise ValueError(
                        f"{type(self).__name__}.{name}: shape {tuple(v.shape)}, expected "
                        f"{tuple(t.shape)}"
                    )
                t.copy_(v)
        return self

    def grads(self) -> dict[str, Any]:
        """The parameters' ``.grad`` as NumPy arrays, in the functional form's layout."""

        def grad(p: nn.Parameter) -> np.ndarray:
            return np.zeros(p.shape, np.float32) if p.grad is None else p.grad.cpu().numpy()

        out = {}
        for name in self.param_names:
            value = getattr(self, name)
            out[name] = (
                [grad(p) for p in value] if isinstance(value, nn.ParameterList) else grad(value)
            )
        return out


class Additive(FusionTwin):
    """``z = Σ_m W_m x_m + b``."""

    def __init__(self, in_dims, out_dim):
        super().__init__(in_dims, out_dim)
        self.register("kernels", [_normal(d, out_dim, fan_in=d) for d in in_dims])
        self.register("bias", _zeros(out_dim))

    def forward(self, xs: Tensors) -> torch.Tensor:
        _check_inputs(xs, self.in_dims, "additive")
        return sum(x @ k for x, k in zip(xs, self.kernels, strict=True)) + self.bias


class Tensor(FusionTwin):
    """TFN ``z = W · vec(⊗_m [x_m; 1])``, kernel ``[d_1 + 1, ..., d_M + 1, C]``.

    The product of modalities 0..M-2 meets the kernel (viewed as ``[Π_{m<M-1}(d_m + 1),
    (d_M + 1)·C]``, a free reshape) in one matmul, then the last modality contracts:
    the ``Π(d_m + 1)`` feature vector of all M modalities is never built.
    """

    def __init__(self, in_dims, out_dim, *, append_one: str = "last"):
        super().__init__(in_dims, out_dim)
        self.append = append_one
        fan_in = math.prod(d + 1 for d in in_dims)
        self.register("kernel", _normal(*(d + 1 for d in in_dims), out_dim, fan_in=fan_in))

    def forward(self, xs: Tensors) -> torch.Tensor:
        _check_inputs(xs, self.in_dims, "tensor")
        zs = [_append_one(x, self.append) for x in xs]  # M x [..., d_m + 1]
        lead = zs[0]
        for z in zs[1:-1]:
            lead = (lead.unsqueeze(-1) * z.unsqueeze(-2)).flatten(-2)  # [..., Π(d_m + 1)]
        last = zs[-1]
        h = lead @ self.kernel.reshape(lead.shape[-1], -1)  # [..., (d_M + 1)·C]
        h = h.unflatten(-1, (last.shape[-1], self.out_dim))  # [..., d_M + 1, C]
        return (last.unsqueeze(-1) * h).sum(-2)  # [..., C]


class Multiplicative(FusionTwin):
    """``z = ⊙_m (W_m x_m + b_m)`` [then ``W_o z + b_o``]."""

    def __init__(self, in_dims, out_dim, *, hidden_dim: int | None = None):
        super().__init__(in_dims, out_dim)
        width = out_dim if hidden_dim is None else hidden_dim
        self.register("kernels", [_normal(d, width, fan_in=d) for d in in_dims])
        self.register("biases", [_zeros(width) for _ in in_dims])
        if hidden_dim is not None:
            self.register("out_kernel", _normal(width, out_dim, fan_in=width))
            self.register("out_bias", _zeros(out_dim))

    def forward(self, xs: Tensors) -> torch.Tensor:
        _check_inputs(xs, self.in_dims, "multiplicative")
        z = None
        for x, k, b in zip(xs, self.kernels, self.biases, strict=True):
            z = x @ k + b if z is None else z * (x @ k + b)  # [..., H]
        if "out_kernel" in self.param_names:
            z = z @ self.out_kernel + self.out_bias  # [..., C]
        return z


class Bilinear(FusionTwin):
    """``z_k = x_Aᵀ W_k x_B [+ U_kᵀ x_A + V_kᵀ x_B] + b_k``; full, MFB or MLB kernel."""

    def __init__(
        self,
        in_dims,
        out_dim,
        *,
        rank: int | None = None,
        factorization: str = "mfb",
        linear_terms: bool = False,
    ):
        super().__init__(in_dims, out_dim)
        d_a, d_b = in_dims
        if rank is None:
            self.register("kernel", _normal(d_a, d_b, out_dim, fan_in=d_a * d_b))
        elif factorization == "mfb":
            self.register("u", _normal(d_a, out_dim, rank, fan_in=d_a))
            self.register("v", _normal(d_b, out_dim, rank, fan_in=d_b * rank))
        else:
            self.register("u", _normal(d_a, rank, fan_in=d_a))
            self.register("v", _normal(d_b, rank, fan_in=d_b))
            self.register("p", _normal(rank, out_dim, fan_in=rank))
        self.register("bias", _zeros(out_dim))
        if linear_terms:
            self.register("linear_a", _normal(d_a, out_dim, fan_in=d_a))
            self.register("linear_b", _normal(d_b, out_dim, fan_in=d_b))

    def forward(self, xs: Tensors) -> torch.Tensor:
        _check_inputs(xs, self.in_dims, "bilinear")
        x_a, x_b = xs
        names = self.param_names
        if "kernel" in names:
            # (x_A W) over the flattened [d_B·C] columns, then contract with x_B
            h = (x_a @ self.kernel.flatten(1)).unflatten(-1, (x_b.shape[-1], self.out_dim))
            z = (x_b.unsqueeze(-1) * h).sum(-2)  # [..., C]
        elif "p" in names:
            z = ((x_a @ self.u) * (x_b @ self.v)) @ self.p  # [..., C]
        else:
            h_a = torch.einsum("...a,akr->...kr", x_a, self.u)  # [..., C, r]
            h_b = torch.einsum("...b,bkr->...kr", x_b, self.v)
            z = (h_a * h_b).sum(-1)
        if "linear_a" in names:
            z = z + x_a @ self.linear_a + x_b @ self.linear_b
        return z + self.bias


class LowRankTensor(FusionTwin):
    """LMF ``z = Σ_r w_r Π_m (W_m^(r)ᵀ [x_m; 1]) + b``, factors ``[r, d_m + 1, C]``."""

    def __init__(
        self,
        in_dims,
        out_dim,
        *,
        rank: int = 4,
        rank_weights: str = "learned",
        append_one: str = "last",
    ):
        super().__init__(in_dims, out_dim)
        self.append = append_one
        self.register("factors", [_normal(rank, d + 1, out_dim, fan_in=d + 1) for d in in_dims])
        self.register("bias", _zeros(out_dim))
        if rank_weights == "learned":
            self.register("rank_weights", nn.Parameter(torch.full((rank,), rank**-0.5)))

    def forward(self, xs: Tensors) -> torch.Tensor:
        _check_inputs(xs, self.in_dims, "low_rank_tensor")
        product = None
        for x, factor in zip(xs, self.factors, strict=True):
            # one matmul per modality: [..., d + 1] @ [d + 1, r·C]
            flat = factor.permute(1, 0, 2).flatten(1)  # [d + 1, r·C]
            h = (_append_one(x, self.append) @ flat).unflatten(-1, factor.shape[::2])
            product = h if product is None else product * h  # [..., r, C]
        if "rank_weights" in self.param_names:
            z = torch.einsum("...rk,r->...k", product, self.rank_weights)
        else:
            z = product.sum(-2)
        return z + self.bias


def _safe_norm(x: torch.Tensor) -> torch.Tensor:
    """``‖x‖`` over the last axis, ``[..., 1]``, with a zero (not NaN) gradient at 0."""
    sq = (x * x).sum(-1, keepdim=True)
    positive = sq > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))), 0.0)


class ModalityShift(FusionTwin):
    """MAG / RAVEN: ``LayerNorm(z + α·H)``, ``H = Σ_m g_m ⊙ (W_m x_m) + b_H``,
    ``g_m = act(W_gm [z; x_m] + b_m)``, ``α = min(β‖z‖ / (‖H‖ + ε), 1)``."""

    def __init__(
        self,
        in_dims,
        out_dim,
        *,
        gate: str = "relu",
        beta: float = 1e-3,
        eps: float = 1e-6,
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__(in_dims, out_dim)
        self.gate, self.beta, self.eps, self.layer_norm_eps = gate, beta, eps, layer_norm_eps
        d0, secondary = in_dims[0], in_dims[1:]
        self.register("gate_kernels", [_normal(d0 + d, d0, fan_in=d0 + d) for d in secondary])
        self.register("gate_biases", [_zeros(d0) for _ in secondary])
        self.register("shift_kernels", [_normal(d, d0, fan_in=d) for d in secondary])
        self.register("shift_bias", _zeros(d0))
        self.register("norm_scale", _ones(d0))
        self.register("norm_bias", _zeros(d0))
        if out_dim != d0:
            self.register("out_kernel", _normal(d0, out_dim, fan_in=d0))
            self.register("out_bias", _zeros(out_dim))

    def forward(self, xs: Tensors) -> torch.Tensor:
        _check_inputs(xs, self.in_dims, "modality_shift")
        act = torch.relu if self.gate == "relu" else torch.sigmoid
        z, secondary = xs[0], xs[1:]
        h = self.shift_bias
        for x, gk, gb, sk in zip(
            secondary, self.gate_kernels, self.gate_biases, self.shift_kernels, strict=True
        ):
            g = act(torch.cat([z, x], dim=-1) @ gk + gb)  # [..., d_0]
            h = h + g * (x @ sk)
        alpha = torch.clamp(self.beta * _safe_norm(z) / (_safe_norm(h) + self.eps), max=1.0)
        shifted = z + alpha * h
        out = F.layer_norm(
            shifted, (shifted.shape[-1],), self.norm_scale, self.norm_bias, self.layer_norm_eps
        )
        if "out_kernel" in self.param_names:
            out = out @ self.out_kernel + self.out_bias
        return out


class Film(FusionTwin):
    """FiLM ``z = (offset + W_γ c + b_γ) ⊙ x_0 + W_β c + b_β``, ``c = [x_1; …; x_{M-1}]``."""

    def __init__(self, in_dims, out_dim, *, gamma_offset: float = 1.0):
        super().__init__(in_dims, out_dim)
        self.gamma_offset = gamma_offset
        d0, conditioning = in_dims[0], in_dims[1:]
        fan_in = sum(conditioning)
        self.register("gamma_kernels", [_normal(d, d0, fan_in=fan_in) for d in conditioning])
        self.register("gamma_bias", _zeros(d0))
        self.register("beta_kernels", [_normal(d, d0, fan_in=fan_in) for d in conditioning])
        self.register("beta_bias", _zeros(d0))
        if out_dim != d0:
            self.register("out_kernel", _normal(d0, out_dim, fan_in=d0))
            self.register("out_bias", _zeros(out_dim))

    def forward(self, xs: Tensors) -> torch.Tensor:
        _check_inputs(xs, self.in_dims, "film")
        x, conditioning = xs[0], xs[1:]
        gamma = sum(c @ k for c, k in zip(conditioning, self.gamma_kernels, strict=True))
        shift = sum(c @ k for c, k in zip(conditioning, self.beta_kernels, strict=True))
        z = (gamma + self.gamma_bias + self.gamma_offset) * x + shift + self.beta_bias
        if "out_kernel" in self.param_names:
            z = z @ self.out_kernel + self.out_bias
        return z


ACTIVATIONS = {
    "relu": torch.relu,
    "gelu": lambda x: F.gelu(x, approximate="tanh"),  # jax.nn.gelu's default
    "tanh": torch.tanh,
    "silu": F.silu,
}


class Nonlinear(FusionTwin):
    """Early fusion ``z = MLP([x_1; …; x_M])``; the last layer is linear."""

    def __init__(self, in_dims, out_dim, *, hidden_dims=(64,), activation: str = "relu"):
        super().__init__(in_dims, out_dim)
        self.activation = ACTIVATIONS[activation]
        widths = (sum(in_dims), *hidden_dims, out_dim)
        self.register("input_kernels", [_normal(d, widths[1], fan_in=widths[0]) for d in in_dims])
        self.register(
            "kernels", [_normal(a, b, fan_in=a) for a, b in itertools.pairwise(widths[1:])]
        )
        self.register("biases", [_zeros(w) for w in widths[1:]])

    def forward(self, xs: Tensors) -> torch.Tensor:
        _check_inputs(xs, self.in_dims, "nonlinear")
        h = torch.cat(list(xs), dim=-1)  # [..., Σ d_m]
        kernels = [torch.cat(list(self.input_kernels), dim=0), *self.kernels]
        for i, (k, b) in enumerate(zip(kernels, self.biases, strict=True)):
            h = h @ k + b
            if i < len(kernels) - 1:
                h = self.activation(h)
        return h


class Gated(FusionTwin):
    """Soft gated fusion ``z = Σ_m g_m ⊙ h_m`` (GMU and kin); options as in mmfuse."""

    def __init__(
        self,
        in_dims,
        out_dim,
        *,
        projection: str = "tanh",
        gate_source: str = "all",
        gate: str = "sigmoid",
        granularity: str = "feature",
    ):
        super().__init__(in_dims, out_dim)
        self.projection, self.gate_source, self.gate = projection, gate_source, gate
        total = sum(in_dims)
        if gate == "gmu":
            sources = [total]
        elif gate_source == "all":
            sources = [total] * len(in_dims)
        elif gate_source == "self":
            sources = list(in_dims)
        else:
            sources = [total - d for d in in_dims]
        width = out_dim if granularity == "feature" else 1
        self.register("kernels", [_normal(d, out_dim, fan_in=d) for d in in_dims])
        if projection == "linear":
            self.register("biases", [_zeros(out_dim) for _ in in_dims])
        self.register("gate_kernels", [_normal(s, width, fan_in=s) for s in sources])
        self.register("gate_biases", [_zeros(width) for _ in sources])

    def forward(self, xs: Tensors) -> torch.Tensor:
        _check_inputs(xs, self.in_dims, "gated")
        if self.projection == "tanh":
            hs = [torch.tanh(x @ k) for x, k in zip(xs, self.kernels, strict=True)]
        else:
            hs = [x @ k + b for x, k, b in zip(xs, self.kernels, self.biases, strict=True)]
        h = torch.stack(hs, dim=-2)  # [..., M, C]
        if self.gate == "gmu" or self.gate_source == "all":
            sources = [torch.cat(list(xs), dim=-1)] * len(self.gate_kernels)
        elif self.gate_source == "self":
            sources = list(xs)
        else:
            sources = [
                torch.cat([x for j, x in enumerate(xs) if j != m], dim=-1) for m in range(len(xs))
            ]
        logits = torch.stack(
            [
                s @ k + b
                for s, k, b in zip(sources, self.gate_kernels, self.gate_biases, strict=True)
            ],
            dim=-2,
        )  # [..., M, G]
        if self.gate == "softmax":
            g = torch.softmax(logits, dim=-2)
        else:
            g = torch.sigmoid(logits)
            if self.gate == "gmu":
                g = torch.cat([g, 1.0 - g], dim=-2)
        return (g * h).sum(-2)  # [..., C]


class HardGated(FusionTwin):
    """``z = Σ_m c_m (W_m x_m + b_m)``, ``c`` one-hot from gate logits ``V [x_1; …] + c``.

    In training mode (``module.train()``) the choice is a straight-through Gumbel-softmax
    sample: forward one-hot ``argmax(l + ε)``, gradient of ``softmax((l + ε) / τ)``;
    pass ``noise`` (Gumbel, ``[..., M]``) to reuse the JAX operator's draw. In eval mode
    the choice is ``argmax(l)`` and the gate gets no gradient.
    """

    def __init__(self, in_dims, out_dim, *, estimator: str = "gumbel", temperature: float = 1.0):
        super().__init__(in_dims, out_dim)
        if estimator != "gumbel":
            raise ValueError("hard_gated twin: only the straight-through Gumbel estimator")
        self.temperature = temperature
        num = len(in_dims)
        self.register("kernels", [_normal(d, out_dim, fan_in=d) for d in in_dims])
        self.register("biases", [_zeros(out_dim) for _ in in_dims])
        self.register("gate_kernel", _normal(sum(in_dims), num, fan_in=sum(in_dims)))
        self.register("gate_bias", _zeros(num))

    def forward(self, xs: Tensors, noise: torch.Tensor | None = None) -> torch.Tensor:
        _check_inputs(xs, self.in_dims, "hard_gated")
        experts = torch.stack(
            [x @ k + b for x, k, b in zip(xs, self.kernels, self.biases, strict=True)], dim=-2
        )  # [..., M, C]
        logits = torch.cat(list(xs), dim=-1) @ self.gate_kernel + self.gate_bias  # [..., M]
        num = logits.shape[-1]
        if not self.training and noise is None:
            choice = F.one_hot(logits.argmax(-1), num).to(logits.dtype)
        else:
            if noise is None:  # Gumbel(0, 1) = -log(-log U)
                u = torch.rand_like(logits).clamp_min(torch.finfo(logits.dtype).tiny)
                noise = -torch.log(-torch.log(u))
            perturbed = logits + noise
            hard = F.one_hot(perturbed.argmax(-1), num).to(logits.dtype)
            soft = torch.softmax(perturbed / self.temperature, dim=-1)
            choice = hard + (soft - soft.detach())
        return (choice.unsqueeze(-1) * experts).sum(-2)  # [..., C]


TWINS: dict[str, type[FusionTwin]] = {
    "additive": Additive,
    "bilinear": Bilinear,
    "film": Film,
    "gated": Gated,
    "hard_gated": HardGated,
    "low_rank_tensor": LowRankTensor,
    "modality_shift": ModalityShift,
    "multiplicative": Multiplicative,
    "nonlinear": Nonlinear,
    "tensor": Tensor,
}


def create(name: str, in_dims: Sequence[int], out_dim: int, **options: Any) -> FusionTwin:
    """The twin of ``mmfuse.fusion.create(name, in_dims, out_dim, **options)``."""
    if name not in TWINS:
        raise ValueError(f"no PyTorch twin for {name!r}; twins: {', '.join(TWINS)}")
    return TWINS[name](in_dims, out_dim, **options)
