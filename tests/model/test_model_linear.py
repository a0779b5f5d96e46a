"""The one-row fast paths: oneDNN float32 products and BF16 weights packed in oneDNN's layout
(where the row kernels cannot run: these tests switch them off; see test_model_rows)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kimidoc.model import decode_ops, decode_step, load, rows
from kimidoc.model import linear as lin
from kimidoc.testing import tiny_text_config, write_checkpoint

needs_onednn = pytest.mark.skipif(not lin._ONEDNN, reason="this torch has no oneDNN")
needs_packing = pytest.mark.skipif(not lin.can_pack_rows(), reason="oneDNN without BF16 support here")


@pytest.fixture
def no_rows_kernel(monkeypatch):
    """One-row products as on a CPU without the row kernels: oneDNN, BF16 weights packed for it
    (and PyTorch's norms and attention: the fused decode ops go with the row kernels)."""
    monkeypatch.setattr(rows, "load", lambda: None)
    monkeypatch.setattr(decode_ops, "load", lambda: None)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@needs_onednn
@pytest.mark.parametrize("shape", [(1, 96), (1, 1, 96), (5, 96)])
def test_onednn_products_equal_f_linear_for_any_weight_strides(monkeypatch, shape, no_rows_kernel):
    monkeypatch.setattr(lin, "_ONEDNN_MIN_BYTES", 0)  # every float32 product through oneDNN
    g = _gen(0)
    x = torch.randn(*shape, generator=g)
    plain = torch.randn(300, 96, generator=g)
    bias = torch.randn(300, generator=g)
    for w in (plain, torch.randn(96, 300, generator=g).t(), torch.randn(2, 300, 96, generator=g)[1]):
        # float32 sums of 96 products of N(0,1) values (|y| ~ 10): a few ulp of reordering apart.
        torch.testing.assert_close(lin.matmul_nt(x, w), F.linear(x, w), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(lin.matmul_nt(x, w, bias), F.linear(x, w, bias), rtol=1e-5, atol=1e-4)


@needs_packing
def test_packed_bf16_weight_gives_the_plain_results(no_rows_kernel):
    g = _gen(1)
    w = torch.randn(384, 128, generator=g).to(torch.bfloat16)
    packed = lin.pack_rows(w)
    assert packed.is_mkldnn and torch.equal(packed.to_dense(), w)
    row = torch.randn(1, 1, 128, generator=g)
    rows = torch.randn(7, 128, generator=g)
    # One float32 row: computed in BF16 like the plain weight's one-row path (its result is
    # rounded to BF16: about 2^-8 of |y| ~ 11).
    y = lin.linear(row, packed)
    assert y.dtype == torch.float32 and y.shape == (1, 1, 384)
    torch.testing.assert_close(y, lin.linear(row, w), rtol=2**-7, atol=0.1)
    # Several float32 rows: the weight widened to float32, exactly as for the plain weight.
    torch.testing.assert_close(lin.linear(rows, packed), F.linear(rows, w.float()), rtol=1e-5, atol=1e-4)
    # BF16 activations.
    rb = rows.to(torch.bfloat16)
    torch.testing.assert_close(lin.linear(rb, packed).float(), F.linear(rb, w).float(), rtol=2**-7, atol=0.1)


@needs_packing
def test_loading_bf16_packs_the_linears_decode_reads_and_nothing_else(tmp_path, no_rows_kernel):
    path = write_checkpoint(tmp_path / "ckpt", config=tiny_text_config(num_hidden_layers=2), int4=True, text_only=True)
    packed = load(path, dtype=torch.bfloat16, activation_dtype=torch.float32)
    plain = load(path, dtype=torch.bfloat16, activation_dtype=torch.float32, pack=False)
    attn = packed.model.layers[1].self_attn
    assert attn.q_a_proj.weight.is_mkldnn and attn.o_proj.weight.is_mkldnn and packed.lm_head.weight.is_mkldnn
    assert packed.model.layers[1].mlp.shared_experts.down_proj.weight.is_mkldnn
    assert not attn.kv_b_proj.weight.is_mkldnn  # absorbed attention reads it as a matrix
    assert not packed.model.embed_tokens.weight.is_mkldnn
    assert not any(p.is_mkldnn for p in plain.parameters())
    assert packed.pack_linears() == 0  # already packed: nothing left to do
    ids = torch.tensor([[163587, 1000, 2000, 3000, 4000]])
    a, b = packed.new_cache(), plain.new_cache()
    # Prefill widens either weight to float32: the same numbers.
    torch.testing.assert_close(packed(ids, cache=a), plain(ids, cache=b), rtol=1e-5, atol=1e-4)
    # Decode multiplies in BF16 either way; only the summation order differs.
    x, y = decode_step(packed, 42, a), decode_step(plain, 42, b)
    assert (x - y).abs().max().item() < 0.02 * y.abs().max().item()


@needs_onednn
def test_a_float32_head_is_stored_column_major_and_gives_the_same_logits(tmp_path, no_rows_kernel):
    path = write_checkpoint(tmp_path / "ckpt", config=tiny_text_config(num_hidden_layers=2), int4=True, text_only=True)
    laid_out = load(path, dtype=torch.float32)
    plain = load(path, dtype=torch.float32, pack=False)
    head = laid_out.lm_head.weight  # [163840, 64]: far wider than deep
    assert head.t().is_contiguous() and not head.is_contiguous()
    assert torch.equal(head, plain.lm_head.weight)
    assert laid_out.model.layers[1].self_attn.q_b_proj.weight.is_contiguous()  # not wide enough to change
    ids = torch.tensor([[163587, 1000, 2000, 3000, 4000]])
    a, b = laid_out.new_cache(), plain.new_cache()
    torch.testing.assert_close(laid_out(ids, cache=a), plain(ids, cache=b), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(decode_step(laid_out, 42, a), decode_step(plain, 42, b), rtol=1e-5, atol=1e-4)


@needs_packing
def test_moving_a_packed_model_says_how_to_keep_it_movable(tmp_path, no_rows_kernel):
    path = write_checkpoint(tmp_path / "ckpt", config=tiny_text_config(num_hidden_layers=2), int4=True, text_only=True)
    with pytest.raises(RuntimeError, match=r"model\.layers\.0\.self_attn\.q_a_proj\.weight is packed.*pack=False"):
        load(path, dtype=torch.bfloat16).to(torch.float32)
    load(path, dtype=torch.bfloat16, pack=False).to(torch.float32)  # plain weights move
