"""The AVX512-VNNI INT4 kernel: numerics against the dequantize reference, the bank built on it, the fallback."""

from __future__ import annotations

import ctypes
import logging

import pytest
import torch

from kimidoc.model import ckernels, int4, int4_vnni
from kimidoc.model.moe import Int4Experts

needs_vnni = pytest.mark.skipif(int4_vnni.load() is None, reason="no AVX512-VNNI CPU or no C compiler here")
HIDDEN, WIDTH = 384, 256  # multiples of the kernel's 128 columns


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weights(experts: int, out_f: int, in_f: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 [E, out, in/2] and bf16 scales [E, out, in/32] as the checkpoint packs them, and the float reference."""
    g = _gen(seed)
    packed, scales, ref = [], [], []
    for _ in range(experts):
        q, scale = int4.quantize(torch.randn(out_f, in_f, generator=g) * in_f**-0.5)
        packed.append(int4.pack(q).view(torch.uint8))
        scales.append(scale)
        ref.append(int4.dequantize(int4.pack(q), scale, (out_f, in_f)))
    return torch.stack(packed), torch.stack(scales), torch.stack(ref)


def _bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Worst-case error of int8 activations: each x is off by at most half a step, max|x_group| / 254."""
    step = x.abs().view(*x.shape[:-1], -1, 32).amax(-1).repeat_interleave(32, -1) / 254
    return step @ w.abs().transpose(-1, -2)


@needs_vnni
@pytest.mark.parametrize("tokens", [1, 3])
def test_kernel_is_within_the_int8_activation_bound_of_the_reference(tokens):
    w, s, ref = _weights(4, 192, 512, seed=1)
    x = torch.randn(tokens, 512, generator=_gen(2)) * 3
    x[:, 7] = 40.0  # an outlier column: its group's step is coarse, the other groups' are not
    experts = [2, 0, 2]
    got = int4_vnni.matmul(x, w, s, experts, shared_x=True)
    assert got.shape == (3, tokens, 192)
    for j, e in enumerate(experts):
        exact = x @ ref[e].t()
        err = (got[j] - exact).abs()
        assert (err <= _bound(x, ref[e]) * 1.001 + 1e-5).all()
        # and far below the bound's scale on average: rounding errors cancel
        assert err.mean() < 0.2 * _bound(x, ref[e]).mean()


@needs_vnni
def test_per_job_activations_go_with_their_expert():
    w, s, ref = _weights(3, 128, 256, seed=3)
    x = torch.randn(2, 1, 256, generator=_gen(4))
    got = int4_vnni.matmul(x, w, s, [1, 2], shared_x=False)
    for j, e in enumerate([1, 2]):
        exact = x[j] @ ref[e].t()
        assert ((got[j] - exact).abs() <= _bound(x[j], ref[e]) * 1.001 + 1e-5).all()
    # a zero row quantizes to zeros (no division by a zero scale)
    assert torch.equal(int4_vnni.matmul(torch.zeros(1, 256), w, s, [0], shared_x=True), torch.zeros(1, 1, 128))


@needs_vnni
def test_bad_arguments_are_refused_before_the_c_code_reads_memory():
    w, s, _ = _weights(2, 128, 256, seed=5)
    x = torch.randn(1, 256)
    with pytest.raises(IndexError, match="out of range"):
        int4_vnni.matmul(x, w, s, [2], shared_x=True)
    with pytest.raises(ValueError, match="does not fit"):
        int4_vnni.matmul(torch.randn(1, 128), w, s, [0], shared_x=True)
    with pytest.raises(ValueError, match="scale"):
        int4_vnni.matmul(x, w, s.float(), [0], shared_x=True)
    with pytest.raises(ValueError, match="contiguous"):
        int4_vnni.matmul(x, w, s.transpose(1, 2).contiguous().transpose(1, 2), [0], shared_x=True)
    with pytest.raises(ValueError, match="per-job"):
        int4_vnni.matmul(torch.randn(3, 1, 256), w, s, [0, 1], shared_x=False)


def _bank(num_experts: int, seed: int) -> tuple[Int4Experts, dict]:
    bank = Int4Experts(num_experts, HIDDEN, WIDTH, compute_dtype=torch.bfloat16)
    slots = bank.checkpoint_slots("")
    g = _gen(seed)
    reference = {}
    for e in range(num_experts):
        for proj, (out_f, in_f) in {
            "gate_proj": (WIDTH, HIDDEN),
            "up_proj": (WIDTH, HIDDEN),
            "down_proj": (HIDDEN, WIDTH),
        }.items():
            q, scale = int4.quantize(torch.randn(out_f, in_f, generator=g) * in_f**-0.5)
            slots[f"{e}.{proj}.weight_shape"].fill(torch.tensor([out_f, in_f], dtype=torch.int32))
            slots[f"{e}.{proj}.weight_packed"].fill(int4.pack(q))
            slots[f"{e}.{proj}.weight_scale"].fill(scale)
            reference[(e, proj)] = int4.dequantize(int4.pack(q), scale, (out_f, in_f))
    return bank, reference


@needs_vnni
def test_bank_keeps_checkpoint_bytes_and_matches_the_naive_loop():
    bank, reference = _bank(5, seed=6)
    assert bank.vnni and bank.unfinished() == []
    for e in range(5):
        for proj, w in bank.expert_weights(e).items():
            assert torch.equal(w, reference[(e, proj)]), (e, proj)
    g = _gen(7)
    x = torch.randn(4, HIDDEN, generator=g)
    idx = torch.tensor([[0, 3], [4, 1], [3, 2], [1, 0]])
    wts = torch.rand(4, 2, generator=g)
    expected = torch.zeros(4, HIDDEN)
    for t in range(4):
        for j in range(2):
            e = int(idx[t, j])
            h = torch.nn.functional.silu(x[t] @ reference[(e, "gate_proj")].t()) * (
                x[t] @ reference[(e, "up_proj")].t()
            )
            expected[t] += wts[t, j] * (h @ reference[(e, "down_proj")].t())
    tol = 2e-2 * expected.abs().max().item()  # int8 activations, bf16 outputs (as the bf16 kernel's)
    assert (bank(x, idx, wts) - expected).abs().max() < tol  # prefill: one kernel chain per expert
    for t in range(4):  # decode: all chosen experts in one call per projection
        assert (bank(x[t : t + 1], idx[t : t + 1], wts[t : t + 1]) - expected[t]).abs().max() < tol
    # decode and the per-expert path agree exactly (a bank split across tiers sums what one bank sums)
    one = torch.cat([bank.run_expert(e, x[:1]) for e in (0, 3)])
    assert torch.equal(bank.decode(x[:1], [0, 3], wts[0]), (wts[0].float()[None] @ one.float()).to(x.dtype))


@needs_vnni
@pytest.mark.parametrize("scale", [1.0, 300.0])  # 300: gates far into both of silu's tails
def test_one_token_swiglu_call_equals_the_two_call_chain_and_the_reference(scale):
    gu_w, gu_s, gu_ref = _weights(4, 2 * WIDTH, HIDDEN, seed=11)
    d_w, d_s, d_ref = _weights(4, HIDDEN, WIDTH, seed=12)
    x = torch.randn(1, HIDDEN, generator=_gen(13)) * scale
    experts = [3, 0, 2]
    got = int4_vnni.swiglu(x, (gu_w, gu_s), (d_w, d_s), experts)
    assert got.shape == (3, HIDDEN) and got.dtype == torch.bfloat16
    h = int4_vnni.matmul(x, gu_w, gu_s, experts, shared_x=True)
    two_calls = int4_vnni.matmul(
        torch.nn.functional.silu(h[..., :WIDTH]) * h[..., WIDTH:], d_w, d_s, experts, shared_x=False
    )[:, 0]
    for j, e in enumerate(experts):
        h64 = x.double() @ gu_ref[e].double().t()
        g, u = h64[0, :WIDTH], h64[0, WIDTH:]
        a64 = torch.nn.functional.silu(g) * u
        exact = a64 @ d_ref[e].double().t()
        # x's int8 step moves g and u by at most eh; silu' <= 1.1, so a moves by at most da; then a's
        # own int8 step and the final bf16 rounding (2^-8 relative)
        eh = _bound(x, gu_ref[e])[0].double()
        eg, eu = eh[:WIDTH], eh[WIDTH:]
        da = 1.1 * eg * (u.abs() + eu) + torch.nn.functional.silu(g).abs() * eu
        bound = (da + eh.new_tensor(1e-30)) @ d_ref[e].double().abs().t() + _bound(a64.float()[None], d_ref[e])[0]
        assert ((got[j].double() - exact).abs() <= 1.001 * bound + 2**-8 * exact.abs() + 1e-6).all(), e
        # against the two calls: the same but for silu's last ulp, which can move one int8 step of a
        step_a = _bound(a64.float()[None], d_ref[e])[0]
        assert ((got[j].float() - two_calls[j]).abs() <= 2 * step_a + 2**-7 * two_calls[j].abs() + 1e-6).all(), e
    # one expert's result does not depend on the others in the call (tiers run experts alone)
    for j, e in enumerate(experts):
        assert torch.equal(int4_vnni.swiglu(x, (gu_w, gu_s), (d_w, d_s), [e])[0], got[j])


@needs_vnni
def test_one_token_swiglu_refuses_bad_arguments():
    gu, d = _weights(2, 2 * WIDTH, HIDDEN, seed=14)[:2], _weights(2, HIDDEN, WIDTH, seed=15)[:2]
    x = torch.randn(1, HIDDEN)
    with pytest.raises(IndexError, match="out of range"):
        int4_vnni.swiglu(x, gu, d, [2])
    with pytest.raises(ValueError, match="one row"):
        int4_vnni.swiglu(torch.randn(2, HIDDEN), gu, d, [0])
    with pytest.raises(ValueError, match="expected"):
        int4_vnni.swiglu(x, gu, (d[0][:, :-1], d[1]), [0])
    with pytest.raises(ValueError, match="expected"):
        int4_vnni.swiglu(x, (gu[0], gu[1].float()), d, [0])


def test_fallback_when_the_kernel_is_switched_off_or_cannot_build(monkeypatch, tmp_path, caplog):
    int4_vnni.load.cache_clear()
    try:
        monkeypatch.setenv("KIMIDOC_INT4_KERNEL", "aten")
        assert int4_vnni.load() is None
        assert not Int4Experts(1, HIDDEN, WIDTH).vnni  # the tinygemm layout, as before
        int4_vnni.load.cache_clear()
        monkeypatch.delenv("KIMIDOC_INT4_KERNEL")
        monkeypatch.setenv("KIMIDOC_CACHE", str(tmp_path))
        monkeypatch.setenv("CC", "false")  # a "compiler" that fails
        monkeypatch.setattr(int4_vnni, "cpu_has_vnni", lambda: True)
        with caplog.at_level(logging.WARNING, logger="kimidoc.model.int4_vnni"):
            assert int4_vnni.load() is None
        assert "PyTorch's kernel" in caplog.text
        bank = Int4Experts(1, HIDDEN, WIDTH)
        assert not bank.vnni and hasattr(bank, "gate_up_scale_zeros")
    finally:
        int4_vnni.load.cache_clear()


def test_float32_activations_keep_the_exact_kernel():
    assert not Int4Experts(1, HIDDEN, WIDTH, compute_dtype=torch.float32).vnni
    assert not Int4Experts(1, 64, 32).vnni  # widths the kernel does not take


@pytest.mark.skipif(ckernels.compiler() is None, reason="no C compiler here")
def test_a_changed_header_builds_a_new_library(tmp_path, monkeypatch):
    monkeypatch.setenv("KIMIDOC_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "k.c").write_text('#include "k.h"\nint kimidoc_k(void) { return K; }\n')
    (src / "k.h").write_text("#define K 1\n")
    cc = ckernels.compiler()
    first = ckernels.build(src / "k.c", ckernels.BASE_FLAGS, cc)
    assert ckernels.build(src / "k.c", ckernels.BASE_FLAGS, cc) == first  # cached
    (src / "k.h").write_text("#define K 2\n")  # the source is unchanged: its header is not
    second = ckernels.build(src / "k.c", ckernels.BASE_FLAGS, cc)
    assert second != first
    assert ctypes.CDLL(str(second)).kimidoc_k() == 2
