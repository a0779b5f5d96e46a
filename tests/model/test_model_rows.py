"""The row kernels: float32 products with BF16 (exactly widened) or float32 weights, for expert banks
and one-row linears, and PyTorch's ops where they are switched off."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kimidoc.model import decode_step, load, rows
from kimidoc.model import linear as lin
from kimidoc.model.moe import DenseExperts, combine
from kimidoc.testing import tiny_text_config, write_checkpoint

needs_kernel = pytest.mark.skipif(rows.load() is None, reason="no AVX512 CPU or no C compiler here")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _exact(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x @ w.T`` in float64 from the widened weights, and the worst float32 summation error of
    any order: ``K`` roundings of at most 2^-24 of the running sum, itself at most sum|x||w|."""
    exact = x.double() @ w.double().transpose(-1, -2)
    bound = x.shape[-1] * 2.0**-24 * (x.abs().double() @ w.abs().double().transpose(-1, -2))
    return exact, bound


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_products_are_float32_math_on_the_widened_weights_for_each_job(dtype):
    g = _gen(0)
    w = torch.randn(5, 70, 96, generator=g).to(dtype)
    x = torch.randn(3, 96, generator=g)
    experts = [4, 0, 4]
    y = rows.matmul(x, w, experts, shared_x=True)
    assert y.shape == (3, 3, 70) and y.dtype == torch.float32
    for j, e in enumerate(experts):
        exact, bound = _exact(x, w[e])
        assert ((y[j].double() - exact).abs() <= bound).all()
    # The bound tells the kernel from a product that rounds the activations to bf16 first.
    exact, bound = _exact(x, w[4].to(torch.bfloat16))
    rounded = x.to(torch.bfloat16).double() @ w[4].to(torch.bfloat16).double().t()
    assert ((rounded - exact).abs() > bound).any()
    # Per-job rows: each job reads its own activations.
    xs = torch.randn(2, 4, 96, generator=g)
    y = rows.matmul(xs, w, [1, 3], shared_x=False)
    for j, e in enumerate([1, 3]):
        exact, bound = _exact(xs[j], w[e])
        assert ((y[j].double() - exact).abs() <= bound).all()


@needs_kernel
def test_bad_arguments_are_refused_before_the_kernel_reads_them():
    w = torch.zeros(2, 8, 64, dtype=torch.bfloat16)
    x = torch.zeros(1, 64)
    with pytest.raises(ValueError, match="bf16 or float32"):
        rows.matmul(x, w.half(), [0], shared_x=True)
    with pytest.raises(ValueError, match="contiguous"):
        rows.matmul(x, torch.zeros(2, 64, 8, dtype=torch.bfloat16).transpose(1, 2), [0], shared_x=True)
    with pytest.raises(ValueError, match="multiple of 32"):
        rows.matmul(torch.zeros(1, 48), torch.zeros(2, 8, 48, dtype=torch.bfloat16), [0], shared_x=True)
    with pytest.raises(ValueError, match="activation width"):
        rows.matmul(torch.zeros(1, 32), w, [0], shared_x=True)
    with pytest.raises(IndexError, match="out of range"):
        rows.matmul(x, w, [2], shared_x=True)
    with pytest.raises(ValueError, match="per-job"):
        rows.matmul(x, w, [0, 1], shared_x=False)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_one_row_linear_runs_the_kernel_and_several_rows_do_not(monkeypatch, dtype):
    calls = []
    real = rows.row
    monkeypatch.setattr(rows, "row", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    g = _gen(1)
    w = torch.randn(300, 128, generator=g).to(dtype)
    bias = torch.randn(300, generator=g)
    row = torch.randn(1, 1, 128, generator=g)
    y = lin.linear(row, w, bias)
    assert calls and y.shape == (1, 1, 300) and y.dtype == torch.float32
    exact, bound = _exact(row, w)
    assert ((y.double() - exact - bias.double()).abs() <= bound + 2.0**-24 * y.abs().double()).all()
    # BF16 activations: the float32 result, rounded once to bf16.
    yb = lin.linear(row.to(torch.bfloat16), w.to(torch.bfloat16))
    assert yb.dtype == torch.bfloat16
    reference = F.linear(row.to(torch.bfloat16).float(), w.to(torch.bfloat16).float()).to(torch.bfloat16)
    torch.testing.assert_close(yb, reference)
    # A product that wants a gradient keeps PyTorch's op (the kernels have no backward).
    calls.clear()
    wg = w.float().requires_grad_()
    lin.linear(row, wg).sum().backward()
    assert not calls and wg.grad is not None
    with pytest.raises(ValueError, match="activation of 64 values"):
        rows.row(torch.zeros(64), w)
    calls.clear()
    several = torch.randn(5, 128, generator=g)
    torch.testing.assert_close(lin.linear(several, w), F.linear(several, w.float()), rtol=1e-5, atol=1e-4)
    assert not calls  # several rows are compute-bound: PyTorch's GEMM


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_an_expert_bank_sums_one_token_as_its_experts_do_one_by_one(dtype):
    g = _gen(2)
    bank = DenseExperts(6, 96, 64)
    bank.gate_up.data = torch.randn(6, 128, 96, generator=g).to(dtype)
    bank.down.data = torch.randn(6, 96, 64, generator=g).to(dtype) * 0.1
    x = torch.randn(1, 96, generator=g)
    experts, weights = [5, 1, 2], torch.tensor([0.5, 0.3, 0.2])
    y = bank.decode(x, experts, weights)
    # What a bank split across tiers computes: each expert alone, then the same sum.
    alone = torch.cat([bank.run_expert(e, x) for e in experts])
    assert torch.equal(y, combine(alone, weights, x.dtype))
    # And it is the float32 SwiGLU of the widened weights.
    ref = []
    for e in experts:
        gate, up = (x @ bank.gate_up[e].float().t()).chunk(2, dim=-1)
        ref.append((F.silu(gate) * up) @ bank.down[e].float().t())
    ref = torch.cat(ref)  # two float32 products and a silu apart: a few ulp of the outputs' scale
    torch.testing.assert_close(alone, ref, rtol=1e-5, atol=2.0**-17 * ref.abs().max().item())


@needs_kernel
def test_a_bf16_model_decodes_as_the_float32_model_of_its_weights(tmp_path):
    # hidden 64 and every projection width a multiple of 32: every linear and the expert banks run the kernel
    cfg = tiny_text_config(num_hidden_layers=2, q_lora_rank=64, kv_lora_rank=32)
    path = write_checkpoint(tmp_path / "ckpt", config=cfg, int4=False, text_only=True)
    bf16 = load(path, dtype=torch.bfloat16, activation_dtype=torch.float32)
    fp32 = load(path, dtype=torch.float32)  # the same bf16 values, widened at load
    attn = bf16.model.layers[1].self_attn
    assert not any(p.is_mkldnn for p in bf16.parameters())  # plain weights: the kernel reads them
    assert rows.usable(attn.q_a_proj.weight) and rows.usable(bf16.lm_head.weight)
    assert isinstance(bf16.model.layers[1].mlp.experts, DenseExperts)
    ids = torch.tensor([[163587, 1000, 2000, 3000, 4000]])
    a, b = bf16.new_cache(), fp32.new_cache()
    torch.testing.assert_close(bf16(ids, cache=a), fp32(ids, cache=b), rtol=1e-5, atol=1e-4)
    # Decode: float32 products on both sides, so only the summation order differs (the one-row
    # bf16 path of before rounded every activation to bf16: ~1e-2 here).
    x, y = decode_step(bf16, 42, a), decode_step(fp32, 42, b)
    torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)


def test_switched_off_the_kernel_leaves_pytorch_ops(monkeypatch):
    rows.load.cache_clear()
    try:
        monkeypatch.setenv("KIMIDOC_ROW_KERNEL", "aten")
        w = torch.randn(40, 128).to(torch.bfloat16)
        assert rows.load() is None and not rows.usable(w)
        row = torch.randn(1, 128)
        torch.testing.assert_close(lin.linear(row, w), F.linear(row.to(torch.bfloat16), w).float())
        with pytest.raises(RuntimeError, match="not available"):
            rows.matmul(row, w[None], [0], shared_x=True)
    finally:
        monkeypatch.delenv("KIMIDOC_ROW_KERNEL")
        rows.load.cache_clear()
