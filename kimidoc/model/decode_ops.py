"""Decode's fused one-token ops on x86 CPUs (``decode_ops.c``): RMSNorm, the rotary embedding, the
router's expert choice, absorbed attention (with ``kv_b_proj``'s two products), the attention's
projections (query and latent, the cache write included) and a SwiGLU MLP.

A decode step runs ~4 norms, two rotations, three projections, a routing, one attention and a
shared expert's MLP per layer on a single row.
PyTorch spells them as 6-12 ops each, and once the step's weight stream has flushed the caches each
op costs 10-40 us of dispatch, several times the arithmetic (``benchmarks/bench_decode.py
--overhead``). Each is one C call here, in float32; and a decoder layer's two halves (attention,
feed-forward) are one call each (:func:`fused_attention` / :func:`decode_attention`,
:func:`fused_ffn` / :func:`decode_ffn`), the kernels above in ``decode_step``'s order.

Built by :mod:`.ckernels` with the row kernels' switch: used on CPUs with AVX512 unless
``KIMIDOC_ROW_KERNEL`` is ``aten``, where :func:`load` returns ``None`` and callers keep
PyTorch's ops. None has a backward, so inputs that want a gradient keep PyTorch's ops too.
"""

from __future__ import annotations

import ctypes
import functools
import os

import torch

from . import ckernels
from .rows import cpu_has_avx512

_P, _I = ctypes.c_void_p, ctypes.c_int
_SIGNATURES = {
    # X, R, K, W, w_bf16, eps, Y
    "kimidoc_rms_norm": [_P, _I, _I, _P, _I, ctypes.c_float, _P],
    # X, R, x_stride, P, cos, sin, Y
    "kimidoc_rope": [_P, _I, ctypes.c_int64, _I, _P, _P, _P],
    # x, H, W, bias, E, k, norm, factor, idx, weight, threads
    "kimidoc_route": [_P, _I, _P, _P, _I, _I, _I, ctypes.c_float, _P, _P, _I],
    # q_lat, q_pe, scale, keys, keys_bf16, length, H, R, P, out, threads
    "kimidoc_attend_one": [_P, _P, ctypes.c_float, _P, _I, _I, _I, _I, _I, _P, _I],
    # q_nope, q_pe, kv_b, w_bf16, scale, keys, keys_bf16, length, H, N, R, P, out, threads
    "kimidoc_attend_absorbed": [_P, _P, _P, _I, ctypes.c_float, _P, _I, _I, _I, _I, _I, _I, _P, _I],
    # x, hidden, w_qa, Q, w_kva, R, P, w_qb, H, N, w_bf16, g_qa, g_kva, g_bf16, eps_q, eps_kv, cos, sin,
    # q_nope, q_pe, latent, latent_bf16, threads
    "kimidoc_mla_project": [_P, _I, _P, _I, _P, _I, _I, _P, _I, _I, _I, _P, _P, _I, ctypes.c_float, ctypes.c_float]
    + [_P] * 5
    + [_I, _I],
    # x, H, W, w_gate, w_up, w_down, w_bf16, out, threads
    "kimidoc_swiglu_mlp": [_P, _I, _I, _P, _P, _P, _I, _P, _I],
    # layer, x, cos, sin, keys, keys_bf16, length, threads
    "kimidoc_decode_attention": [_P, _P, _P, _P, _P, _I, _I, _I],
    # layer, x, threads
    "kimidoc_decode_ffn": [_P, _P, _I],
}
_DTYPES = (torch.float32, torch.bfloat16)


@functools.cache
def load() -> dict[str, ctypes._CFuncPtr] | None:
    """The kernels, or ``None`` where they cannot run here (the reason is logged once)."""
    return ckernels.load(
        "decode_ops.c",
        _SIGNATURES,
        ["-mavx512f", "-ffp-contract=off"],  # the rotary embedding's products rounded as PyTorch's
        switch="KIMIDOC_ROW_KERNEL",
        feature="AVX512",
        cpu_has=cpu_has_avx512,
        what="decode's norms, rotations, projections, routing and attention use PyTorch's ops",
    )


@functools.cache
def bf16_products() -> bool:
    """Whether attention over a bf16 cache multiplies in bf16 (``vdpbf16ps``, summing in float32, as
    GPU MLA kernels do): on CPUs with AVX512-BF16, unless ``KIMIDOC_ATTENTION_PRODUCTS`` is ``float32``."""
    return os.environ.get("KIMIDOC_ATTENTION_PRODUCTS", "").lower() != "float32" and (
        "avx512_bf16" in ckernels.cpu_flags()
    )


def _keys(keys: torch.Tensor) -> int:
    """How the kernels read a cache: 0 float32, 1 bf16 with float32 products, 2 with bf16 products."""
    if keys.dtype == torch.float32:
        return 0
    if keys.dtype == torch.bfloat16:
        return 2 if bf16_products() else 1
    raise ValueError(f"a latent cache of {keys.dtype}: the kernels read float32 or bf16")


def _plain(t: torch.Tensor) -> bool:
    """A CPU tensor the C code can read as it is, that wants no gradient."""
    return t.device.type == "cpu" and t.is_contiguous() and not (torch.is_grad_enabled() and t.requires_grad)


def norm_usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`rms_norm` runs for float32 rows ``x`` and this weight."""
    return (
        x.dtype == torch.float32
        and weight.dtype in _DTYPES
        and x.shape[-1] % 16 == 0
        and _plain(x)
        and _plain(weight)
        and load() is not None
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``x * rsqrt(mean(x^2) + eps) * weight`` over the last dimension of float32 ``x``, for
    arguments :func:`norm_usable` accepted."""
    k = x.shape[-1]
    if weight.shape != (k,):
        raise ValueError(f"norm weight {tuple(weight.shape)} for rows of {k}")
    y = torch.empty_like(x)
    load()["kimidoc_rms_norm"](
        x.data_ptr(), x.numel() // k, k, weight.data_ptr(), weight.dtype == torch.bfloat16, eps, y.data_ptr()
    )
    return y


def rope_usable(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:
    """Whether :func:`rope` runs: float32 rows ``x`` ``[1, ..., 1, R, P]`` (rows evenly strided, as
    a per-head slice of the queries is) rotated by one position's ``cos`` / ``sin``."""
    p = x.shape[-1]
    return (
        x.dtype == cos.dtype == sin.dtype == torch.float32
        and p % 2 == 0
        and cos.numel() == sin.numel() == p // 2
        and x.numel() == (x.shape[-2] if x.dim() > 1 else 1) * p
        and x.stride(-1) == 1
        and cos.is_contiguous()
        and sin.is_contiguous()
        and x.device.type == cos.device.type == sin.device.type == "cpu"
        and not (torch.is_grad_enabled() and x.requires_grad)
        and load() is not None
    )


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """:func:`kimidoc.model.rope.apply_interleaved` for one position, as :func:`rope_usable`
    accepted: the same bits, in one call."""
    p = x.shape[-1]
    rows = x.numel() // p
    y = torch.empty(x.shape)
    load()["kimidoc_rope"](
        x.data_ptr(), rows, x.stride(-2) if x.dim() > 1 else p, p, cos.data_ptr(), sin.data_ptr(), y.data_ptr()
    )
    return y


def route_usable(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int) -> bool:
    """Whether :func:`route` runs: one token's float32 row ``x`` ``[1, H]`` and the router's plain
    float32 weight ``[E, H]`` (``H`` a multiple of 32, as the row kernels take) and bias, ``k <= E``."""
    return (
        x.dim() == 2
        and x.shape[0] == 1
        and x.dtype == torch.float32
        and _plain(x)
        and _router_ok(weight, bias, k)
        and x.shape[1] == weight.shape[1]
    )


def _router_ok(weight: torch.Tensor, bias: torch.Tensor, k: int) -> bool:
    """A router the kernel takes: plain float32 weight ``[E, H]`` (``H`` a multiple of 32) and bias
    ``[E]``, ``0 < k <= E``."""
    return (
        weight.dim() == 2
        and weight.shape[1] % 32 == 0
        and 0 < k <= weight.shape[0]
        and weight.dtype == bias.dtype == torch.float32
        and bias.shape == weight.shape[:1]
        and _plain(weight)
        and _plain(bias)
        and load() is not None
    )


def route(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int, norm: bool, factor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token's ``(idx [1, k] int64, weight [1, k] float32)`` from its row ``x`` and the router's
    ``weight``, as :class:`kimidoc.model.moe.Router` chooses without expert groups
    (:func:`route_usable`): the logits, sigmoid, choice and weights in one call."""
    e, h = weight.shape
    idx = torch.empty(1, k, dtype=torch.int64)
    out = torch.empty(1, k)
    if load()["kimidoc_route"](
        x.data_ptr(), h, weight.data_ptr(), bias.data_ptr(), e, k, norm, factor, idx.data_ptr(), out.data_ptr(),
        torch.get_num_threads(),
    ):  # fmt: skip
        raise MemoryError(f"the router kernel could not allocate scratch for {e} experts")
    return idx, out


def _attention_ok(rank: int, queries: tuple[torch.Tensor, ...], keys: torch.Tensor) -> bool:
    """Latents ``keys`` ``[length, rank + rope]`` and CPU queries the attention kernel can take."""
    return (
        keys.dim() == 2
        and keys.dtype in _DTYPES
        and keys.shape[0] > 0
        and rank % 16 == 0
        and all(q.device.type == "cpu" and not (torch.is_grad_enabled() and q.requires_grad) for q in queries)
        and _plain(keys)
        and load() is not None
    )


def attend_usable(q_lat: torch.Tensor, q_pe: torch.Tensor, keys: torch.Tensor) -> bool:
    """Whether :func:`attend_one` runs for these queries over latents ``keys`` ``[length, D]``."""
    return _attention_ok(q_lat.shape[-1], (q_lat, q_pe), keys)


def attend_one(q_lat: torch.Tensor, q_pe: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
    """One query's absorbed attention, every head, over every row of ``keys``: float32 ``[H, R]``
    ``softmax((q[h] @ keys.T) * scale) @ keys[:, :R]`` with ``q[h] = [q_lat[h], q_pe[h]]``.

    ``q_lat`` ``[H, R]``, ``q_pe`` ``[H, P]`` (any float dtype), ``keys`` ``[length, R + P]``
    float32 or bf16 (the latent cache: ``[c_kv, k_pe]``), ``R`` a multiple of 16, as
    :func:`attend_usable` accepted.
    """
    h, r = q_lat.shape
    p = q_pe.shape[-1]
    length, d = keys.shape
    if q_pe.shape != (h, p) or d != r + p or r % 16:
        raise ValueError(
            f"queries {tuple(q_lat.shape)} + {tuple(q_pe.shape)} against latents {tuple(keys.shape)}: "
            "need [H, R] + [H, P] and [length, R + P], R a multiple of 16"
        )
    q_lat, q_pe = (t.float().contiguous() for t in (q_lat, q_pe))
    out = torch.empty(h, r)
    rc = load()["kimidoc_attend_one"](
        q_lat.data_ptr(), q_pe.data_ptr(), scale, keys.data_ptr(), _keys(keys),
        length, h, r, p, out.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if rc:
        raise MemoryError(f"the attention kernel could not allocate scratch for {h} heads x {r}")
    return out


def absorbed_usable(q_nope: torch.Tensor, q_pe: torch.Tensor, kv_b: torch.Tensor, keys: torch.Tensor) -> bool:
    """Whether :func:`attend_absorbed` runs: :func:`attend_usable`, and ``kv_b_proj``'s weight a plain
    float32 or bf16 CPU matrix wanting no gradient."""
    rank = keys.shape[-1] - q_pe.shape[-1]
    return (
        kv_b.dim() == 2
        and kv_b.dtype in _DTYPES
        and kv_b.shape[-1] == rank
        and not kv_b.is_mkldnn
        and _plain(kv_b)
        and _attention_ok(rank, (q_nope, q_pe), keys)
    )


def attend_absorbed(
    q_nope: torch.Tensor, q_pe: torch.Tensor, kv_b: torch.Tensor, keys: torch.Tensor, scale: float
) -> torch.Tensor:
    """One token's absorbed attention with ``kv_b_proj``'s products, every head, as float32 ``[H, N]``:
    ``q_lat[h] = q_nope[h] @ W_uk[h]``, :func:`attend_one`, then ``W_uv[h] @ o_lat[h]``.

    ``q_nope`` ``[H, N]``, ``q_pe`` ``[H, P]``, ``kv_b`` ``[2 H N, R]`` (per head its ``N`` k_nope
    rows, then its ``N`` v rows: ``qk_nope_head_dim == v_head_dim``), ``keys`` ``[length, R + P]``,
    as :func:`absorbed_usable` accepted. ``kv_b`` is read as stored, with no float copy.
    """
    h, n = q_nope.shape
    p = q_pe.shape[-1]
    length, d = keys.shape
    r = d - p
    if q_pe.shape != (h, p) or kv_b.shape != (2 * h * n, r) or r % 16:
        raise ValueError(
            f"queries {tuple(q_nope.shape)} + {tuple(q_pe.shape)}, kv_b_proj {tuple(kv_b.shape)} and latents "
            f"{tuple(keys.shape)}: need [H, N] + [H, P], [2 H N, R] and [length, R + P], R a multiple of 16"
        )
    q_nope, q_pe = (t.float().contiguous() for t in (q_nope, q_pe))
    out = torch.empty(h, n)
    rc = load()["kimidoc_attend_absorbed"](
        q_nope.data_ptr(), q_pe.data_ptr(), kv_b.data_ptr(), kv_b.dtype == torch.bfloat16, scale,
        keys.data_ptr(), _keys(keys), length, h, n, r, p, out.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if rc:
        raise MemoryError(f"the attention kernel could not allocate scratch for {h} heads x {r}")
    return out


def project_usable(
    x: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    norms: tuple[torch.Tensor, torch.Tensor],
    cos: torch.Tensor,
    sin: torch.Tensor,
    latent_dtype: torch.dtype,
) -> bool:
    """Whether :func:`project` runs: one token's float32 ``x``, the plain ``(q_a, kv_a, q_b)``
    weights all bf16 or all float32 with widths the kernel takes, the two norm weights of one such
    dtype, one position's float32 ``cos`` / ``sin``, and a float32 or bf16 cache."""
    return (
        x.dtype == cos.dtype == sin.dtype == torch.float32
        and x.numel() == weights[0].shape[-1]
        and latent_dtype in _DTYPES
        and sin.numel() == cos.numel()
        and all(_plain(t) for t in (x, cos, sin))
        and _projections_ok(weights, norms, 2 * cos.numel())
    )


def _projections_ok(
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor], norms: tuple[torch.Tensor, torch.Tensor], rope: int
) -> bool:
    """Plain ``(q_a, kv_a, q_b)`` weights all bf16 or all float32, and q_a's and kv_a's norm weights of one
    such dtype, with widths the projection kernel takes (``rope`` rotary values in kv_a's rows)."""
    w_qa, w_kva, w_qb = weights
    if not all(w.dim() == 2 for w in weights):
        return False
    q_rank, hidden = w_qa.shape
    rank = w_kva.shape[0] - rope
    return (
        _weights_ok(*weights)
        and _weights_ok(*norms)
        and hidden % 32 == 0
        and q_rank % 32 == 0
        and rank > 0
        and rank % 16 == 0
        and w_kva.shape[1] == hidden
        and w_qb.shape[1] == q_rank
        and norms[0].shape == (q_rank,)
        and norms[1].shape == (rank,)
        and load() is not None
    )


def project(
    x: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    norms: tuple[torch.Tensor, torch.Tensor],
    eps: tuple[float, float],
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
    latent: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token's MLA projections (``q_a_proj``, ``kv_a_proj_with_mqa``, their norms, ``q_b_proj``,
    both rotations) in one call, for arguments :func:`project_usable` accepted: returns ``q_nope``
    ``[heads, nope]`` and the rotated ``q_pe`` ``[heads, rope]``, and writes the token's
    ``[c_kv, k_pe]`` into ``latent`` (a contiguous row of the cache, rounded to its dtype as
    ``Tensor.to`` rounds)."""
    w_qa, w_kva, w_qb = weights
    q_rank, hidden = w_qa.shape
    rope = 2 * cos.numel()
    rank = w_kva.shape[0] - rope
    nope = w_qb.shape[0] // heads - rope
    if w_qb.shape != (heads * (nope + rope), q_rank) or nope <= 0:
        raise ValueError(f"q_b_proj weight {tuple(w_qb.shape)} for {heads} heads of rope width {rope}")
    if latent.numel() != rank + rope or latent.dtype not in _DTYPES or not _plain(latent):
        raise ValueError(f"latent row {tuple(latent.shape)} {latent.dtype} for {rank} + {rope} values")
    q_nope, q_pe = torch.empty(heads, nope), torch.empty(heads, rope)
    rc = load()["kimidoc_mla_project"](
        x.data_ptr(), hidden, w_qa.data_ptr(), q_rank, w_kva.data_ptr(), rank, rope, w_qb.data_ptr(), heads, nope,
        w_qa.dtype == torch.bfloat16, norms[0].data_ptr(), norms[1].data_ptr(), norms[0].dtype == torch.bfloat16,
        eps[0], eps[1], cos.data_ptr(), sin.data_ptr(), q_nope.data_ptr(), q_pe.data_ptr(), latent.data_ptr(),
        latent.dtype == torch.bfloat16, torch.get_num_threads(),
    )  # fmt: skip
    if rc:
        raise MemoryError(f"the projection kernel could not allocate scratch for {heads} heads")
    return q_nope, q_pe


def mlp_usable(x: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> bool:
    """Whether :func:`swiglu_mlp` runs: one float32 row ``x`` and plain ``(gate, up, down)`` weights
    ``[W, H], [W, H], [H, W]``, all bf16 or all float32, ``H`` and ``W`` multiples of 32."""
    return x.dtype == torch.float32 and x.numel() == weights[0].shape[1] and _plain(x) and _mlp_ok(weights)


def _mlp_ok(weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> bool:
    """Plain ``(gate, up, down)`` weights ``[W, H], [W, H], [H, W]`` the MLP kernel takes: all bf16 or
    all float32, ``H`` and ``W`` multiples of 32."""
    gate, up, down = weights
    width, hidden = gate.shape
    return (
        _weights_ok(*weights)
        and up.shape == gate.shape
        and down.shape == (hidden, width)
        and hidden % 32 == 0
        and width % 32 == 0
        and load() is not None
    )


def swiglu_mlp(x: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``down(silu(gate x) * up x)`` as float32 ``[H]`` for one row, in one call, for arguments
    :func:`mlp_usable` accepted."""
    gate, up, down = weights
    width, hidden = gate.shape
    out = torch.empty(hidden)
    rc = load()["kimidoc_swiglu_mlp"](
        x.data_ptr(), hidden, width, gate.data_ptr(), up.data_ptr(), down.data_ptr(), gate.dtype == torch.bfloat16,
        out.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if rc:
        raise MemoryError(f"the MLP kernel could not allocate scratch for a width of {width}")
    return out


# -- a decoder layer's halves, one call each ------------------------------------------------------------


class _AttentionArgs(ctypes.Structure):
    """``kimidoc_attention`` of decode_ops.c, field for field."""

    _fields_ = (
        [(n, _P) for n in ("norm", "w_qa", "w_kva", "w_qb", "g_qa", "g_kva", "kv_b", "w_o")]
        + [(n, _I) for n in ("hidden", "Q", "R", "P", "H", "N", "norm_bf16", "proj_bf16", "kv_b_bf16", "o_bf16")]
        + [(n, ctypes.c_float) for n in ("eps", "eps_q", "eps_kv", "scale")]
    )


class _FFNArgs(ctypes.Structure):
    """``kimidoc_ffn`` of decode_ops.c, field for field."""

    _fields_ = [
        ("norm", _P), ("hidden", _I), ("norm_bf16", _I), ("eps", ctypes.c_float),
        ("gate", _P), ("up", _P), ("down", _P), ("width", _I), ("mlp_bf16", _I),
        ("router", _P), ("bias", _P), ("E", _I), ("k", _I), ("norm_topk", _I), ("factor", ctypes.c_float),
        ("experts", _P), ("w_gu", _P), ("s_gu", _P), ("w_d", _P), ("s_d", _P), ("expert_width", _I),
    ]  # fmt: skip


class Fused:
    """One half of a decoder layer as one C call: the argument block the C side reads, and the
    tensors its addresses point into (held here, so that they outlive it)."""

    def __init__(self, args: ctypes.Structure, tensors: list[torch.Tensor]):
        self.args = args
        self._tensors = tensors


def _bf16(t: torch.Tensor) -> bool:
    return t.dtype == torch.bfloat16


def _weights_ok(*weights: torch.Tensor) -> bool:
    """Plain (not oneDNN-packed) CPU weights of one float dtype the kernels read, wanting no gradient."""
    return all(w.dtype == weights[0].dtype and not w.is_mkldnn and _plain(w) for w in weights) and (
        weights[0].dtype in _DTYPES
    )


def fused_attention(
    norm: tuple[torch.Tensor, float],
    projections: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    norms: tuple[tuple[torch.Tensor, float], tuple[torch.Tensor, float]],
    kv_b: torch.Tensor,
    o_proj: torch.Tensor,
    heads: int,
    rope: int,
    scale: float,
) -> Fused | None:
    """The attention half of a decode step's layer, ``x += o_proj(attention(project(rms(x))))``, for
    :func:`decode_attention`, or ``None`` where the kernels cannot take it. ``norm`` is the input norm's
    ``(weight, eps)``, ``projections`` ``(q_a, kv_a, q_b)`` (no biases), ``norms`` q_a's and kv_a's
    ``(weight, eps)``, ``kv_b`` ``[2 H N, R]`` (``qk_nope_head_dim == v_head_dim``), ``o_proj``
    ``[hidden, H N]``."""
    w_qa, w_kva, w_qb = projections
    (g_qa, eps_q), (g_kva, eps_kv) = norms
    q_rank, hidden = w_qa.shape
    rank = w_kva.shape[0] - rope
    nope = o_proj.shape[1] // heads
    if not (
        _projections_ok(projections, (g_qa, g_kva), rope)
        and _weights_ok(norm[0], g_qa)  # one dtype flag for the four norms
        and _weights_ok(kv_b)
        and _weights_ok(o_proj)
        and rope % 2 == 0
        and (heads * nope) % 32 == 0
        and w_qb.shape[0] == heads * (nope + rope)
        and kv_b.shape == (2 * heads * nope, rank)
        and o_proj.shape == (hidden, heads * nope)
        and norm[0].shape == (hidden,)
    ):
        return None
    tensors = [norm[0], w_qa, w_kva, w_qb, g_qa, g_kva, kv_b, o_proj]
    args = _AttentionArgs(
        *(t.data_ptr() for t in tensors),
        hidden, q_rank, rank, rope, heads, nope,
        _bf16(norm[0]), _bf16(w_qa), _bf16(kv_b), _bf16(o_proj),
        norm[1], eps_q, eps_kv, scale,
    )  # fmt: skip
    return Fused(args, tensors)


def _check_row(x: torch.Tensor, hidden: int) -> None:
    """The residual row a half adds to in place: one contiguous float32 row of ``hidden`` values."""
    if x.dtype != torch.float32 or x.numel() != hidden or not x.is_contiguous():
        raise ValueError(f"one float32 row of {hidden} values expected, got {tuple(x.shape)} {x.dtype}")


def decode_attention(layer: Fused, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor) -> None:
    """``x += attention(x)`` in place for one token's float32 row ``x``, a :func:`fused_attention` half:
    its latent is written to the last row of ``keys`` (the layer's cache, ``[length + 1, R + P]``, as
    :meth:`~.cache.LatentCache.claim` hands it out) and the attention reads every row."""
    a = layer.args
    _check_row(x, a.hidden)
    if keys.dim() != 2 or keys.shape[1] != a.R + a.P or keys.dtype not in _DTYPES or not keys.is_contiguous():
        raise ValueError(f"latents {tuple(keys.shape)} {keys.dtype}: expected [length, {a.R + a.P}]")
    if cos.numel() != a.P // 2 or sin.numel() != a.P // 2 or cos.dtype != torch.float32 or sin.dtype != torch.float32:
        raise ValueError(f"one position's float32 cos / sin of {a.P // 2} values expected")
    if load()["kimidoc_decode_attention"](
        ctypes.addressof(a), x.data_ptr(), cos.data_ptr(), sin.data_ptr(), keys.data_ptr(), _keys(keys),
        keys.shape[0] - 1, torch.get_num_threads(),
    ):  # fmt: skip
        raise MemoryError(f"the attention kernels could not allocate scratch for {a.H} heads")


def fused_ffn(
    norm: tuple[torch.Tensor, float],
    mlp: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    router: tuple[torch.Tensor, torch.Tensor, int, bool, float] | None = None,
    experts: tuple[int, tuple[torch.Tensor, ...], int, int] | None = None,
) -> Fused | None:
    """The feed-forward half of a decode step's layer for :func:`decode_ffn`, or ``None`` where the
    kernels cannot take it: ``x += mlp(rms(x))`` for a dense layer (``router`` None), or
    ``x += sum_k w_k expert_k(h) + shared(h)`` for a MoE layer. ``norm`` is ``(weight, eps)``; ``mlp``
    the dense MLP's or the shared experts' ``(gate, up, down)`` (None: no shared experts);
    ``router`` ``(weight [E, H] float32, bias [E], top_k, norm_topk_prob, routed_scaling_factor)``,
    routing without expert groups; ``experts`` what :func:`.int4_vnni.swiglu_kernel` gives for the
    routed bank."""
    weight = norm[0]
    (hidden,) = weight.shape
    if load() is None or not _weights_ok(weight) or hidden % 32 or (router is None and mlp is None):
        return None
    args = _FFNArgs(norm=weight.data_ptr(), hidden=hidden, norm_bf16=_bf16(weight), eps=norm[1])
    tensors = [weight]
    if mlp is not None:
        gate = mlp[0]
        width = gate.shape[0]
        if not (_mlp_ok(mlp) and gate.shape[1] == hidden):
            return None
        args.gate, args.up, args.down = (t.data_ptr() for t in mlp)
        args.width, args.mlp_bf16 = width, _bf16(gate)
        tensors += mlp
    if router is not None:
        if experts is None:
            return None
        w_router, bias, k, norm_topk, factor = router
        e = w_router.shape[0]
        address, bank, expert_hidden, expert_width = experts
        if not (
            _router_ok(w_router, bias, k)
            and w_router.shape[1] == hidden == expert_hidden
            and bank[0].shape[0] == e
            and all(_plain(t) for t in bank)
        ):
            return None
        args.router, args.bias, args.E, args.k = w_router.data_ptr(), bias.data_ptr(), e, k
        args.norm_topk, args.factor = norm_topk, factor
        args.experts, args.expert_width = address, expert_width
        args.w_gu, args.s_gu, args.w_d, args.s_d = (t.data_ptr() for t in bank)
        tensors += [w_router, bias, *bank]
    return Fused(args, tensors)


def decode_ffn(layer: Fused, x: torch.Tensor) -> None:
    """``x += ffn(x)`` in place for one token's float32 row ``x``, a :func:`fused_ffn` half."""
    a = layer.args
    _check_row(x, a.hidden)
    if load()["kimidoc_decode_ffn"](ctypes.addressof(a), x.data_ptr(), torch.get_num_threads()):
        raise MemoryError(f"the feed-forward kernels could not allocate scratch for a row of {a.hidden}")
