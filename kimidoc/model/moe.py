"""Feed-forward blocks: the dense SwiGLU MLP, the noaux_tc router and the routed-expert banks.

Routed experts live in one object per MoE layer, an :class:`ExpertBank`. This is the seam for
placement and offload: a bank is called as ``bank(x, topk_idx, topk_weight) -> combined output``,
sorts the tokens by expert and runs **one matmul chain per active expert** (never a Python loop
over all experts); its weights are addressable per expert (``bank.expert_weights(e)`` gives the
dequantized gate/up/down, ``bank.run_expert(e, x)`` runs one expert). Two banks exist:

* :class:`DenseExperts`: ``gate_up`` ``[E, 2I, H]`` and ``down`` ``[E, H, I]`` in the model dtype;
* :class:`Int4Experts`: the same, in the INT4 kernel layout (see :mod:`.int4`); gate and up are
  fused into one ``[2I, H]`` weight per expert, converted once at load time from the checkpoint's
  ``weight_packed`` / ``weight_scale`` tensors.

To place experts elsewhere (GPU cache, disk), replace ``moe.experts`` with another object that
follows :class:`ExpertBank`'s call and ``run_expert`` contract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import decode_ops, int4, int4_vnni, rows
from .config import TextConfig
from .linear import Linear, linear
from .slots import Slot, tensor_slot

_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` -- the dense first layer and the shared expert."""

    def __init__(self, hidden: int, width: int):
        super().__init__()
        self.gate_proj = Linear(hidden, width, bias=False)
        self.up_proj = Linear(hidden, width, bias=False)
        self.down_proj = Linear(width, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = (self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight)
        if x.numel() == x.shape[-1] and decode_ops.mlp_usable(x, weights):  # one row: one call (~7 ops)
            return decode_ops.swiglu_mlp(x, weights).view(x.shape)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    """Sigmoid scores; ``e_score_correction_bias`` only for choosing; optional group-limited top-k.

    Kept in float32 (as transformers does) so expert choice does not flip on rounding.
    """

    def __init__(self, config: TextConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.num_experts = config.n_routed_experts
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.norm_topk_prob = config.norm_topk_prob
        self.routed_scaling_factor = config.routed_scaling_factor
        self.weight = nn.Parameter(
            torch.empty(self.num_experts, config.hidden_size, dtype=torch.float32), requires_grad=False
        )
        self.register_buffer("e_score_correction_bias", torch.zeros(self.num_experts, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[N, H]`` -> (``topk_idx`` ``[N, k]`` int64, ``topk_weight`` ``[N, k]`` float32)."""
        x, bias = x.float(), self.e_score_correction_bias
        if self.n_group <= 1 and decode_ops.route_usable(x, self.weight, bias, self.top_k):  # one token: one call
            return decode_ops.route(x, self.weight, bias, self.top_k, self.norm_topk_prob, self.routed_scaling_factor)
        logits = linear(x, self.weight)
        scores = logits.sigmoid()
        choice = scores + bias
        if self.n_group > 1:
            grouped = choice.view(-1, self.n_group, self.num_experts // self.n_group)
            group_scores = grouped.topk(2, dim=-1)[0].sum(-1)
            keep = torch.zeros_like(group_scores, dtype=torch.bool)
            keep.scatter_(1, group_scores.topk(self.topk_group, dim=-1, sorted=False)[1], True)
            choice = grouped.masked_fill(~keep[..., None], float("-inf")).view(-1, self.num_experts)
        idx = choice.topk(self.top_k, dim=-1, sorted=False)[1]
        weight = scores.gather(1, idx)
        if self.norm_topk_prob:
            weight = weight / (weight.sum(-1, keepdim=True) + 1e-20)
        return idx, weight * self.routed_scaling_factor


class ExpertBank(nn.Module):
    """Routed experts of one layer; subclasses provide ``run_expert`` and the checkpoint slots."""

    num_experts: int
    hidden: int
    width: int
    _bank_names: tuple[str, ...] = ()  # per-expert tensors (expert on the first dim), see _expert_views

    def __init__(self) -> None:
        super().__init__()
        self._views: list[tuple[torch.Tensor, ...]] = []
        self._views_key: tuple[int, ...] = ()

    def _expert_views(self) -> list[tuple[torch.Tensor, ...]]:
        """Per expert, views of its slice of each ``_bank_names`` tensor, made once per storage:
        indexing the banks anew costs an op per tensor and expert on every decode step."""
        banks = [getattr(self, name) for name in self._bank_names]
        key = tuple(b.data_ptr() for b in banks)
        if self._views_key != key:
            self._views = list(zip(*(b.unbind(0) for b in banks)))
            self._views_key = key
        return self._views

    def run_expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def by_expert(self) -> ExpertBank | None:
        """The bank holding every expert of the layer at its own index (this one), for callers that
        run the kernels on a bank's tensors directly (``decode_step``); None where the experts are
        spread over several."""
        return self

    def expert_weights(self, e: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, x: torch.Tensor, experts: list[int], weights: torch.Tensor) -> torch.Tensor:
        """One token ``x`` ``[1, H]`` through ``experts``, summed with ``weights`` ``[k]``."""
        return combine(torch.cat([self.run_expert(e, x) for e in experts]), weights, x.dtype)

    def forward(self, x: torch.Tensor, topk_idx: torch.Tensor, topk_weight: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, H]``; returns ``sum_k topk_weight[:, k] * expert_{topk_idx[:, k]}(x)``."""
        if x.shape[0] == 1:  # decode: no sorting or scattering, just the chosen experts in turn
            return self.decode(x, topk_idx[0].tolist(), topk_weight[0])
        g = group_by_expert(x, topk_idx, topk_weight)
        out = torch.zeros_like(x)
        start = 0
        for e, n in zip(g.experts, g.counts):
            rows = slice(start, start + n)
            y = self.run_expert(e, g.xs[rows]) * g.ws[rows]
            out.index_add_(0, g.token[rows], y.to(out.dtype))
            start += n
        return out


def swiglu_rows(
    x: torch.Tensor,
    experts: list[int],
    gate_up: Callable[[int, torch.Tensor], torch.Tensor],
    down: Callable[[int, torch.Tensor], torch.Tensor],
    width: int,
) -> torch.Tensor:
    """``[k, H]``: row ``i`` is expert ``experts[i]``'s SwiGLU of one row ``x``, given each expert's
    fused gate/up and down products; the elementwise work is done once on ``[k, *]`` (a decode
    step's Python and dispatch cost is per op, see ``benchmarks/bench_decode.py --overhead``)."""
    h = torch.cat([gate_up(e, x) for e in experts])
    a = F.silu(h[:, :width]) * h[:, width:]
    return torch.cat([down(e, r) for r, e in zip(a.split(1), experts)])


def swiglu_jobs(
    x: torch.Tensor, experts: list[int], matmul: Callable[..., torch.Tensor], gate_up: tuple, down: tuple, width: int
) -> torch.Tensor:
    """``[k, T, H]`` float32: each of ``experts``' SwiGLU of the ``T`` rows ``x`` in two calls of a
    job kernel (:mod:`.ckernels`): ``matmul(x, *gate_up, experts, shared_x=True)`` for the fused
    gate/up weights, then ``matmul(a, *down, experts, shared_x=False)`` on each expert's own rows."""
    h = matmul(x, *gate_up, experts, shared_x=True)
    return matmul(F.silu(h[..., :width]) * h[..., width:], *down, experts, shared_x=False)


def combine(ys: torch.Tensor, weights: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``sum_k weights[k] * ys[k]`` as ``[1, H]`` in ``dtype``, accumulated in float32."""
    return (weights.float()[None] @ ys.float()).to(dtype)


class Routed(NamedTuple):
    """Token rows sorted by the expert they go to: expert ``experts[i]`` takes the next ``counts[i]``
    rows of ``xs`` (from token ``token[row]``, weighted ``ws[row]``)."""

    experts: list[int]
    counts: list[int]
    token: torch.Tensor
    xs: torch.Tensor
    ws: torch.Tensor


def group_by_expert(x: torch.Tensor, topk_idx: torch.Tensor, topk_weight: torch.Tensor) -> Routed:
    """Sort (token, expert) pairs by expert so each active expert runs one matmul chain."""
    k = topk_idx.shape[1]
    flat = topk_idx.reshape(-1)
    order = flat.argsort(stable=True)
    experts, counts = torch.unique_consecutive(flat[order], return_counts=True)
    token = order // k
    return Routed(experts.tolist(), counts.tolist(), token, x[token], topk_weight.reshape(-1)[order, None])


class DenseExperts(ExpertBank):
    _bank_names = ("gate_up", "down")

    def __init__(self, num_experts: int, hidden: int, width: int):
        super().__init__()
        self.num_experts, self.hidden, self.width = num_experts, hidden, width
        self.gate_up = nn.Parameter(torch.empty(num_experts, 2 * width, hidden), requires_grad=False)
        self.down = nn.Parameter(torch.empty(num_experts, hidden, width), requires_grad=False)

    def _rows_kernel(self, x: torch.Tensor) -> bool:
        """Whether one row runs the row kernels (:mod:`.rows`: an AVX512 CPU): rows of one
        token, in :meth:`decode` and :meth:`run_expert` alike, so that a bank split across tiers
        sums what one bank sums."""
        return x.shape[0] == 1 and rows.usable(self.gate_up, x) and rows.usable(self.down, x)

    def _rows_swiglu(self, x: torch.Tensor, experts: list[int]) -> torch.Tensor:
        return swiglu_jobs(x, experts, rows.matmul, (self.gate_up,), (self.down,), self.width)

    def run_expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        if self._rows_kernel(x):
            return self._rows_swiglu(x, [e])[0]
        gate, up = linear(x, self.gate_up[e]).chunk(2, dim=-1)
        return linear(F.silu(gate) * up, self.down[e])

    def decode(self, x: torch.Tensor, experts: list[int], weights: torch.Tensor) -> torch.Tensor:
        if self._rows_kernel(x):
            return combine(self._rows_swiglu(x, experts)[:, 0], weights, x.dtype)
        views = self._expert_views()
        y = swiglu_rows(
            x, experts, lambda e, v: linear(v, views[e][0]), lambda e, v: linear(v, views[e][1]), self.width
        )
        return combine(y, weights, x.dtype)

    def expert_weights(self, e: int) -> dict[str, torch.Tensor]:
        return {
            "gate_proj": self.gate_up[e, : self.width],
            "up_proj": self.gate_up[e, self.width :],
            "down_proj": self.down[e],
        }

    def checkpoint_slots(self, prefix: str) -> dict[str, Slot]:
        slots = {}
        for e in range(self.num_experts):
            for proj, view in self.expert_weights(e).items():
                slots[f"{prefix}{e}.{proj}.weight"] = tensor_slot(view)
        return slots


class Int4Experts(ExpertBank):
    """INT4 experts; ``compute_dtype`` is the kernel's activation dtype.

    Two layouts, chosen at construction. With bf16 activations on a CPU with AVX512-VNNI (and the
    widths multiples of 128), the checkpoint's bytes are kept as they are and run by
    :mod:`.int4_vnni` (int8 activations per 32-column group, all chosen experts in one call per
    projection). Otherwise (float32 activations for exact parity, CUDA, other CPUs) gate and up are
    fused and converted to PyTorch's tinygemm layout (:func:`.int4.to_kernel_layout`).
    """

    def __init__(
        self,
        num_experts: int,
        hidden: int,
        width: int,
        *,
        group_size: int = int4.GROUP_SIZE,
        compute_dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str = "cpu",
        vnni: bool = True,
    ):
        super().__init__()
        self.num_experts, self.hidden, self.width = num_experts, hidden, width
        self.group_size = group_size
        self.compute_dtype = compute_dtype
        dev = torch.device(device)
        # Stored 0..15 values of a gate or up weight waiting for its partner before fused conversion
        # (the tinygemm layout only: the VNNI one copies each weight on its own).
        self._pending: dict[tuple[int, str], torch.Tensor] = {}
        self.vnni = (  # ``vnni=False``: PyTorch's kernel even where the VNNI one would run (to compare)
            vnni and group_size == int4_vnni.GROUP and int4_vnni.runs(hidden, width, compute_dtype, dev)
        )
        if self.vnni:
            self._bank_names = ("gate_up", "gate_up_scale", "down", "down_scale")
            self.register_buffer("gate_up", torch.empty(num_experts, 2 * width, hidden // 2, dtype=torch.uint8))
            self.register_buffer(
                "gate_up_scale", torch.empty(num_experts, 2 * width, hidden // group_size, dtype=torch.bfloat16)
            )
            self.register_buffer("down", torch.empty(num_experts, hidden, width // 2, dtype=torch.uint8))
            self.register_buffer(
                "down_scale", torch.empty(num_experts, hidden, width // group_size, dtype=torch.bfloat16)
            )
            return
        self._bank_names = ("gate_up", "gate_up_scale_zeros", "down", "down_scale_zeros")
        wdtype = int4.kernel_weight_dtype(dev)
        self.register_buffer(
            "gate_up", torch.empty(num_experts, *int4.kernel_weight_shape(2 * width, hidden, dev), dtype=wdtype)
        )
        self.register_buffer(
            "gate_up_scale_zeros", torch.empty(num_experts, hidden // group_size, 2 * width, 2, dtype=compute_dtype)
        )
        self.register_buffer(
            "down", torch.empty(num_experts, *int4.kernel_weight_shape(hidden, width, dev), dtype=wdtype)
        )
        self.register_buffer(
            "down_scale_zeros", torch.empty(num_experts, width // group_size, hidden, 2, dtype=compute_dtype)
        )

    def _vnni_swiglu(self, x: torch.Tensor, experts: list[int]) -> torch.Tensor:
        """``[k, T, H]``: each of ``experts``' SwiGLU of the ``T`` rows ``x``, in one kernel call for
        one row (``int4_vnni.swiglu``), two for more.

        Rounded to ``compute_dtype`` as the other layout's kernel returns it, so that a bank split
        across tiers (each part combined on its own) gives the same sums as one bank."""
        gate_up, down = (self.gate_up, self.gate_up_scale), (self.down, self.down_scale)
        if x.shape[0] == 1:  # one token: both products and the SwiGLU in one call (~8 ops otherwise)
            return int4_vnni.swiglu(x, gate_up, down, experts)[:, None]
        return swiglu_jobs(x, experts, int4_vnni.matmul, gate_up, down, self.width).to(self.compute_dtype)

    def run_expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        if self.vnni:
            return self._vnni_swiglu(x, [e])[0].to(x.dtype)
        h = int4.int4_matmul(x.to(self.compute_dtype), self.gate_up[e], self.gate_up_scale_zeros[e], self.group_size)
        gate, up = h.chunk(2, dim=-1)
        y = int4.int4_matmul(F.silu(gate) * up, self.down[e], self.down_scale_zeros[e], self.group_size)
        return y.to(x.dtype)

    def decode(self, x: torch.Tensor, experts: list[int], weights: torch.Tensor) -> torch.Tensor:
        if self.vnni:
            return combine(self._vnni_swiglu(x, experts)[:, 0], weights, x.dtype)
        mm, g, views = int4.int4_matmul, self.group_size, self._expert_views()
        xc = x.to(self.compute_dtype)  # once, not per expert as run_expert does
        y = swiglu_rows(
            xc, experts, lambda e, v: mm(v, *views[e][:2], g), lambda e, v: mm(v, *views[e][2:], g), self.width
        )
        return combine(y, weights, x.dtype)

    def expert_weights(self, e: int) -> dict[str, torch.Tensor]:
        """Dequantized weights of expert ``e``, recovered from the bank's layout (slow; for checks)."""
        if self.vnni:
            g = self.group_size
            gate_up = int4.dequantize(
                self.gate_up[e].view(torch.int32), self.gate_up_scale[e], (2 * self.width, self.hidden), g
            )
            down = int4.dequantize(self.down[e].view(torch.int32), self.down_scale[e], (self.hidden, self.width), g)
            return {"gate_proj": gate_up[: self.width], "up_proj": gate_up[self.width :], "down_proj": down}
        eye = torch.eye(self.hidden, dtype=self.compute_dtype, device=self.gate_up.device)
        gate_up = int4.int4_matmul(eye, self.gate_up[e], self.gate_up_scale_zeros[e], self.group_size).t()
        eye = torch.eye(self.width, dtype=self.compute_dtype, device=self.down.device)
        down = int4.int4_matmul(eye, self.down[e], self.down_scale_zeros[e], self.group_size).t()
        return {"gate_proj": gate_up[: self.width], "up_proj": gate_up[self.width :], "down_proj": down}

    # -- loading ------------------------------------------------------------------------------

    def _rows(self, proj: str) -> slice:
        return slice(0, self.width) if proj == "gate_proj" else slice(self.width, 2 * self.width)

    def _fill_packed(self, e: int, proj: str, packed: torch.Tensor) -> None:
        if self.vnni:  # the checkpoint's words, read as little-endian bytes, are the kernel's layout
            self._vnni_targets(e, proj)[0].copy_(packed)
            return
        if proj == "down_proj":
            u = int4.unpack_u8(packed)
            self.down[e].copy_(int4.to_kernel_layout(u, self.down.device))
            return
        other = "up_proj" if proj == "gate_proj" else "gate_proj"
        u = int4.unpack_u8(packed)
        partner = self._pending.pop((e, other), None)
        if partner is None:
            self._pending[(e, proj)] = u
            return
        gate, up = (u, partner) if proj == "gate_proj" else (partner, u)
        # Converted together: the kernel layout of a concatenation is not the concatenation of layouts.
        self.gate_up[e].copy_(int4.to_kernel_layout(torch.cat([gate, up]), self.gate_up.device))

    def _fill_scale(self, e: int, proj: str, scale: torch.Tensor) -> None:
        if self.vnni:
            self._vnni_targets(e, proj)[1].copy_(scale)
            return
        table = int4.scales_and_zeros(scale, self.compute_dtype)
        if proj == "down_proj":
            self.down_scale_zeros[e].copy_(table)
        else:
            self.gate_up_scale_zeros[e, :, self._rows(proj)].copy_(table)

    def _check_shape(self, name: str, proj: str, shape: torch.Tensor) -> None:
        expected = (self.hidden, self.width) if proj == "down_proj" else (self.width, self.hidden)
        if tuple(int(v) for v in shape.tolist()) != expected:
            raise ValueError(f"{name}: weight_shape {shape.tolist()} does not match the config's {list(expected)}")

    def _vnni_targets(self, e: int, proj: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Where expert ``e``'s packed words (int32 view) and scales go in the VNNI layout, the
        checkpoint's own, so the loader can read them straight from the file; ``None``s for the
        layout that converts them."""
        if not self.vnni:
            return None, None
        if proj == "down_proj":
            return self.down[e].view(torch.int32), self.down_scale[e]
        rows = self._rows(proj)
        return self.gate_up[e, rows].view(torch.int32), self.gate_up_scale[e, rows]

    def checkpoint_slots(self, prefix: str) -> dict[str, Slot]:
        g = self.group_size
        slots: dict[str, Slot] = {}
        for e in range(self.num_experts):
            for proj in _PROJECTIONS:
                out_f, in_f = (self.hidden, self.width) if proj == "down_proj" else (self.width, self.hidden)
                base = f"{prefix}{e}.{proj}."
                packed, scale = self._vnni_targets(e, proj)
                slots[base + "weight_packed"] = Slot(
                    (out_f, in_f // 8),
                    lambda t, e=e, p=proj: self._fill_packed(e, p, t),
                    target=packed,
                    dtype=torch.int32,
                )
                slots[base + "weight_scale"] = Slot(
                    (out_f, in_f // g), lambda t, e=e, p=proj: self._fill_scale(e, p, t), target=scale
                )
                slots[base + "weight_shape"] = Slot(
                    (2,), lambda t, n=base + "weight_shape", p=proj: self._check_shape(n, p, t), dtype=torch.int32
                )
        return slots

    def unfinished(self) -> list[str]:
        """Experts whose gate or up weight arrived without its partner (names, for errors)."""
        return [f"{e}.{proj}" for e, proj in self._pending]


class MoE(nn.Module):
    """Router + routed experts + shared expert (names: ``gate``, ``experts``, ``shared_experts``)."""

    def __init__(self, config: TextConfig, experts: ExpertBank):
        super().__init__()
        self.gate = Router(config)
        self.experts = experts
        self.shared_experts = (
            SwiGLU(config.hidden_size, config.moe_intermediate_size * config.n_shared_experts)
            if config.n_shared_experts
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        idx, weight = self.gate(flat)
        out = self.experts(flat, idx, weight).view(shape)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        return out
