"""The tiktoken loader: official pattern, special block at official ids, the official long-run cuts."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimidoc.chat.tokenizer import MAX_NO_WHITESPACES_CHARS, SPECIAL_TOKENS, Tokenizer, TokenizerError, split_long_runs
from kimidoc.testing.tokenizer import write_tokenizer

OFFICIAL_NAMES = {i: t for t, i in SPECIAL_TOKENS.items()}


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    return Tokenizer.load(write_tokenizer(tmp_path_factory.mktemp("tok")))


def _tok_with(*merges: bytes) -> Tokenizer:
    ranks = {bytes([b]): b for b in range(256)}
    for m in merges:
        ranks[m] = len(ranks)
    return Tokenizer(ranks, OFFICIAL_NAMES)


def test_written_tokenizer_is_official_format(tok, tmp_path):
    d = write_tokenizer(tmp_path)
    lines = (d / "tiktoken.model").read_text().splitlines()
    assert [int(line.split()[1]) for line in lines] == list(range(len(lines)))
    assert 256 + 300 <= len(lines) < 163584
    decoder = json.loads((d / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert sorted(map(int, decoder)) == list(range(163584, 163840))
    assert decoder["163592"]["content"] == "<|reserved_token_163592|>"


def test_special_tokens_are_single_ids_at_official_values(tok):
    for name, i in SPECIAL_TOKENS.items():
        assert tok.encode(name) == [i]
        assert tok.decode([i]) == name
    assert tok.encode("<|reserved_token_163592|>") == [163592]
    # 163839 is named [PAD], so the reserved spelling of that slot is ordinary text
    assert len(tok.encode("<|reserved_token_163839|>")) > 1
    assert tok.vocab_size == 163840 and tok.im_end_id == 163586 and tok.eos_id == 163585
    assert 163586 not in tok.encode("<|im_end|>", allow_special=False)
    assert tok.count("<|im_end|>") == len(tok.encode_ordinary("<|im_end|>"))


def test_pretokenizer_whitespace_lookahead():
    t = _tok_with(b"  ", b" b")
    # "a  b" splits "a" / " " / " b": the run gives its last space to the next word
    assert t.encode("a  b") == [ord("a"), ord(" "), 257]
    assert t.encode("a  ") == [ord("a"), 256]


def test_pretokenizer_keeps_han_apart_from_latin():
    ni = "你".encode()
    t = _tok_with(b"b" + ni[:1])
    assert 256 not in t.encode("ab你")
    assert t.decode(t.encode("ab你好")) == "ab你好"


def test_pretokenizer_digits_in_threes_and_case_insensitive_contractions():
    t = _tok_with(b"12", b"123", b"1234", b"N'", b"N'T")
    assert t.encode("12345") == [257, ord("4"), ord("5")]
    assert t.encode("DON'T")[-1] == 260


def test_long_runs_are_cut_as_the_official_tokenizer_does():
    t = _tok_with(b"ab", b"  ")
    s = "b" + "ab" * 12500  # 25,001 non-space characters: cut after 25,000
    assert len(s) == MAX_NO_WHITESPACES_CHARS + 1
    expected = t._enc.encode_ordinary(s[:MAX_NO_WHITESPACES_CHARS]) + t._enc.encode_ordinary(
        s[MAX_NO_WHITESPACES_CHARS:]
    )
    assert expected != t._enc.encode_ordinary(s)  # the cut matters
    assert t.encode(s) == expected
    assert t.count(s) == len(expected)
    ws = "x" + " " * 30001 + "y"
    run = ws[1:-1]
    cut = [" " * MAX_NO_WHITESPACES_CHARS, run[MAX_NO_WHITESPACES_CHARS:] + "y"]
    assert t.encode(ws) == t._enc.encode_ordinary("x" + cut[0]) + t._enc.encode_ordinary(cut[1])


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.text(max_size=200))
def test_encode_decode_roundtrip(tok, text):
    assert tok.decode(tok.encode(text, allow_special=False)) == text
    assert tok.count(text) == len(tok.encode_ordinary(text))


def test_stream_decoder_holds_split_characters(tok):
    ids = tok.encode("é😀 ok")
    dec = tok.stream_decoder()
    pieces = [dec.feed(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == "é😀 ok"
    assert all("\ufffd" not in p for p in pieces)


def test_unused_ids_decode_to_nothing_and_out_of_range_ids_raise(tok):
    gap = tok.n_ranks + 10
    assert gap < 163584
    assert tok.decode([ord("a"), gap, 163586]) == "a<|im_end|>"
    with pytest.raises(TokenizerError, match="163840"):
        tok.decode([163840])


def test_bad_files_are_named(tmp_path):
    (tmp_path / "tiktoken.model").write_text(
        f"{base64.b64encode(b'a').decode()} 0\n{base64.b64encode(b'b').decode()} 2\n"
    )
    with pytest.raises(TokenizerError, match="not contiguous"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tiktoken.model").write_text("YQ== 0\nnot-a-line\n")
    with pytest.raises(TokenizerError, match=r"tiktoken.model:2"):
        Tokenizer.load(tmp_path)
    with pytest.raises(TokenizerError, match="no tiktoken.model"):
        Tokenizer.load(tmp_path / "missing")


def _official_split(s: str, max_len: int):
    """``_split_whitespaces_or_nonwhitespaces`` of the official tokenization_kimi.py."""
    current_len, current_is_space, start = 0, (s[0].isspace() if s else False), 0
    for i in range(len(s)):
        is_space = s[i].isspace()
        if current_is_space ^ is_space:
            current_len, current_is_space = 1, is_space
        else:
            current_len += 1
            if current_len > max_len:
                yield s[start:i]
                start, current_len = i, 1
    yield s[start:]


@settings(max_examples=150, derandomize=True, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(" \t\n\x1c\x85\xa0\u2028"),
            st.sampled_from("ab_é你"),
            st.integers(0, 30),
            st.integers(0, 30),
        ),
        max_size=8,
    ),
    st.integers(2, 9),
    st.integers(10, 60),
)
def test_long_run_cuts_equal_the_official_loop(runs, max_run, window):
    text = "".join(sp * a + ch * b for sp, ch, a, b in runs)
    expected = [p for w in range(0, len(text), window) for p in _official_split(text[w : w + window], max_run)]
    got = list(split_long_runs(text, max_run, window))
    assert [p for p in got if p] == [p for p in expected if p]
