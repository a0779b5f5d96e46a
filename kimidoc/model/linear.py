"""``nn.Linear`` / ``nn.Embedding`` without random initialisation, and mixed-precision matmuls.

Weights always come from a checkpoint. Initialising them is wasted work on real tensors, and on
the meta device the init functions route through torch's reference ops, which import
``torch._dynamo`` (seconds) for nothing.

Weights may be stored in a narrower dtype than the activations (BF16 weights, float32
activations: half the memory and the bytes a decode step reads, while CPUs without BF16 units
multiply many rows far faster in float32). :func:`linear` then runs a single row in the weight's
dtype (or the row kernel's float32) and several rows in the activation dtype.

Decode multiplies one row by each weight, a memory-bound GEMV, so the kernel's read speed is the
step's speed. On CPU:

* on AVX512 CPUs a row times a BF16 or float32 weight goes to the row kernels (:mod:`.rows`): they
  read the plain layout at the memory's speed, in float32 arithmetic (BF16 weights widened
  exactly), 1.05-2.6x faster than the oneDNN paths below (``benchmarks/bench_linear.py``);
* elsewhere float32 GEMVs go to oneDNN (:func:`matmul_nt`): MKL's ``sgemv`` runs one thread there
  (20 GB/s on the 2-core AMD development machine, where oneDNN reads 33-45 GB/s);
* and BF16 weights can be stored in oneDNN's blocked layout (:func:`pack_rows`, done at load
  time by :meth:`~.model.KimiForCausalLM.pack_linears`): a row then reads them at 40-44 GB/s
  instead of the 26 GB/s of ``F.linear`` on the plain layout. The packed tensor replaces the
  plain one (no second copy); several float32 rows (prefill) unpack it per call, as they convert
  the plain BF16 weight to float32 per call;
* and a float32 head (many more outputs than inputs) is stored column-major at load time, which
  oneDNN reads at one row ~10% faster (44 against 39 GB/s on a [32000, 1024] head).

``benchmarks/bench_decode.py`` shows the effect on whole steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import rows

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


# oneDNN costs ~12 us more per call than MKL; below this many weight bytes MKL's sgemv wins.
_ONEDNN_MIN_BYTES = 1 << 19


def matmul_nt(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b.T (+ bias)`` for ``a`` ``[..., K]`` and ``b`` ``[N, K]`` (any strides): oneDNN for
    a large float32 ``b`` on CPU where it is built in and enabled, else ``F.linear``."""
    if (
        a.dtype == b.dtype == torch.float32
        and b.numel() * 4 >= _ONEDNN_MIN_BYTES
        and a.device.type == "cpu"
        and uses_onednn()
    ):
        return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")
    return F.linear(a, b, bias)


def uses_onednn() -> bool:
    """Whether float32 products on CPU go through oneDNN (built in and enabled)."""
    return _ONEDNN and torch.backends.mkldnn.enabled


def can_pack_rows() -> bool:
    """Whether :func:`pack_rows` is available: oneDNN built in and enabled, with BF16 support."""
    return uses_onednn() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def pack_rows(weight: torch.Tensor) -> torch.Tensor:
    """A BF16 ``[out, in]`` CPU weight in oneDNN's blocked layout for one-row products (an opaque
    tensor: only :func:`linear` and ``to_dense()`` read it)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), 1)


def _packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if x.dtype == weight.dtype or x.numel() == x.shape[-1]:
        b = None if bias is None else bias.to(weight.dtype)
        return torch.ops.mkldnn._linear_pointwise(x.to(weight.dtype), weight, b, "none", [], "").to(x.dtype)
    return F.linear(x, weight.to_dense(x.dtype), None if bias is None else bias.to(x.dtype))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    if weight.is_mkldnn:
        return _packed_linear(x, weight, bias)
    if x.numel() == x.shape[-1] and rows.usable(weight, x):
        # float32 products with the exactly widened weight, rounded once to the activation dtype
        y = rows.row(x, weight).view(*x.shape[:-1], weight.shape[0])
        return (y if bias is None else y + bias).to(x.dtype)
    if weight.dtype == x.dtype:
        return matmul_nt(x, weight, bias) if x.numel() == x.shape[-1] else F.linear(x, weight, bias)
    if x.numel() == x.shape[-1]:  # one row: bandwidth-bound, read the narrow weight as is
        return F.linear(x.to(weight.dtype), weight, bias).to(x.dtype)
    return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


class Linear(nn.Linear):
    def reset_parameters(self) -> None:
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        self.weight.requires_grad_(False)
