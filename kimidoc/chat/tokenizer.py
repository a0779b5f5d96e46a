"""K2.6's tokenizer: the official ``tiktoken.model`` BPE ranks, pre-tokenizer pattern and special block.

A checkpoint directory holds ``tiktoken.model`` (one ``base64(token) rank`` per line, ranks
contiguous from 0) and ``tokenizer_config.json`` whose ``added_tokens_decoder`` names the special
ids. Special ids keep the values the config gives them (163584..163839 in K2.6) even when a small
test vocabulary has fewer ranks: the ids in between are simply unused.

Encoding follows the official ``tokenization_kimi.py``: input is cut into 400,000-character windows
and runs of more than 25,000 whitespace or non-whitespace characters are cut, because those cuts
change the ids (and keep tiktoken's BPE out of its quadratic worst case).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import tiktoken

PAT_STR = "|".join(
    [
        r"""[\p{Han}]+""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

NUM_SPECIAL = 256
SPECIAL_BASE = 163584  # first special id in K2 / K2.5 / K2.6

# The named special ids of the official vocabulary (the rest of the block is <|reserved_token_N|>).
SPECIAL_TOKENS: dict[str, int] = {
    "[BOS]": 163584,
    "[EOS]": 163585,
    "<|im_end|>": 163586,
    "<|im_user|>": 163587,
    "<|im_assistant|>": 163588,
    "<|im_system|>": 163594,
    "<|tool_calls_section_begin|>": 163595,
    "<|tool_calls_section_end|>": 163596,
    "<|tool_call_begin|>": 163597,
    "<|tool_call_argument_begin|>": 163598,
    "<|tool_call_end|>": 163599,
    "<|im_middle|>": 163601,
    "<|media_begin|>": 163602,
    "<|media_content|>": 163603,
    "<|media_end|>": 163604,
    "<|media_pad|>": 163605,
    "<think>": 163606,
    "</think>": 163607,
    "[UNK]": 163838,
    "[PAD]": 163839,
}

TIKTOKEN_MAX_ENCODE_CHARS = 400_000
MAX_NO_WHITESPACES_CHARS = 25_000
_SPACES = re.compile(r"\s*")
_NON_SPACES = re.compile(r"\S*")


class TokenizerError(ValueError):
    """A tokenizer file that cannot be read, or an id outside the vocabulary."""


def reserved_name(token_id: int) -> str:
    return f"<|reserved_token_{token_id}|>"


def read_ranks(path: Path) -> dict[bytes, int]:
    """Parse a tiktoken BPE file; ranks must be unique and contiguous from 0."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token_b64, rank_s = line.split()
                token, rank = base64.b64decode(token_b64, validate=True), int(rank_s)
            except (ValueError, binascii.Error) as exc:
                raise TokenizerError(f"{path}:{lineno}: expected '<base64 token> <rank>', got {line[:80]!r}") from exc
            if token in ranks:
                raise TokenizerError(f"{path}:{lineno}: token {token!r} listed twice (ranks {ranks[token]} and {rank})")
            ranks[token] = rank
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise TokenizerError(f"{path}: ranks are not contiguous from 0 ({len(ranks)} tokens)")
    return ranks


def read_special_names(path: Path) -> dict[int, str]:
    """id -> name of the special tokens a ``tokenizer_config.json`` declares."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"{path}: cannot read tokenizer config: {exc}") from exc
    decoder = cfg.get("added_tokens_decoder") or {}
    try:
        return {int(i): entry["content"] for i, entry in decoder.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenizerError(f"{path}: malformed added_tokens_decoder: {exc}") from exc


def _long_runs(window: str, max_run: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each maximal run of only-whitespace or only-non-whitespace longer than
    ``max_run``. Such a run covers a whole aligned block of ``max_run // 2`` characters, so only
    blocks that are all one class are examined (C-speed string checks; no per-character loop)."""
    block = max(1, max_run // 2)
    n = len(window)
    resume = 0
    for start in range(0, n - block + 1, block):
        if start < resume:
            continue
        piece = window[start : start + block]
        if piece.isspace():
            space = True
        elif piece.split(None, 1) == [piece]:
            space = False
        else:
            continue
        lo = start
        while lo > 0 and window[lo - 1].isspace() == space:
            lo -= 1
        hi = (_SPACES if space else _NON_SPACES).match(window, start + block).end()
        resume = hi
        if hi - lo > max_run:
            yield lo, hi


def split_long_runs(
    text: str, max_run: int = MAX_NO_WHITESPACES_CHARS, window: int = TIKTOKEN_MAX_ENCODE_CHARS
) -> Iterator[str]:
    """The official cuts: ``window``-character windows, then each same-class run (whitespace or
    not) cut every ``max_run`` characters from its start, exactly as ``tokenization_kimi.py``'s
    ``_split_whitespaces_or_nonwhitespaces`` does."""
    for w0 in range(0, len(text), window):
        chunk = text[w0 : w0 + window]
        prev = 0
        for lo, hi in _long_runs(chunk, max_run):
            for cut in range(lo + max_run, hi, max_run):
                yield chunk[prev:cut]
                prev = cut
        yield chunk[prev:]


class Tokenizer:
    """Encode / decode / count with K2.6's vocabulary. Thread-safe (tiktoken is)."""

    def __init__(self, ranks: dict[bytes, int], special_names: dict[int, str], *, name: str = "kimi") -> None:
        if not ranks:
            raise TokenizerError("tokenizer has no BPE ranks")
        n_ranks = len(ranks)
        base = min(special_names) if special_names else n_ranks
        if base < n_ranks:
            raise TokenizerError(f"special id {base} collides with BPE ranks 0..{n_ranks - 1}")
        # Every slot of the special block has a spelling; unnamed ones are reserved tokens.
        block = {i: special_names.get(i, reserved_name(i)) for i in range(base, base + NUM_SPECIAL)}
        block.update(special_names)
        self.special_tokens: dict[str, int] = {tok: i for i, tok in block.items()}
        self.special_names: dict[int, str] = dict(block)
        self.n_ranks = n_ranks
        self.vocab_size = max(max(block) + 1, n_ranks)
        self._enc = tiktoken.Encoding(
            name=name, pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=self.special_tokens
        )
        self._special_bytes = {i: t.encode("utf-8") for i, t in block.items()}

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """From a checkpoint directory (or the ``tiktoken.model`` file inside it); cached per file."""
        p = Path(path)
        directory = p.parent if p.is_file() else p
        model = directory / "tiktoken.model"
        if not model.is_file():
            raise TokenizerError(f"{directory}: no tiktoken.model")
        st = model.stat()
        return _load_cached(str(model.resolve()), st.st_mtime_ns, st.st_size)

    # ---- ids of named tokens ------------------------------------------------------------------
    def token_id(self, token: str) -> int:
        try:
            return self.special_tokens[token]
        except KeyError:
            raise TokenizerError(f"{token!r} is not a special token of this vocabulary") from None

    @property
    def bos_id(self) -> int:
        return self.token_id("[BOS]")

    @property
    def eos_id(self) -> int:
        return self.token_id("[EOS]")

    @property
    def im_end_id(self) -> int:
        return self.token_id("<|im_end|>")

    def is_special(self, token_id: int) -> bool:
        return token_id in self.special_names

    # ---- encode -------------------------------------------------------------------------------
    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        """Token ids of ``text``; with ``allow_special`` (the official default) special-token
        spellings become their single ids, otherwise they are encoded as ordinary text."""
        if len(text) <= MAX_NO_WHITESPACES_CHARS:  # no cut possible: skip the scan
            pieces: Iterable[str] = (text,)
        else:
            pieces = split_long_runs(text)
        ids: list[int] = []
        for piece in pieces:
            ids.extend(
                self._enc.encode(piece, allowed_special="all") if allow_special else self._enc.encode_ordinary(piece)
            )
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encode(text, allow_special=False)

    def count(self, text: str) -> int:
        """Number of tokens of ``text`` as ordinary text (special spellings are not special)."""
        if len(text) <= MAX_NO_WHITESPACES_CHARS:
            return len(self._enc.encode_ordinary(text))
        return sum(len(self._enc.encode_ordinary(piece)) for piece in split_long_runs(text))

    # ---- decode -------------------------------------------------------------------------------
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one id; ids in the unused gap below the special block decode to nothing."""
        if token_id < self.n_ranks and token_id >= 0:
            return self._enc.decode_single_token_bytes(token_id)
        special = self._special_bytes.get(token_id)
        if special is not None:
            return special
        if 0 <= token_id < self.vocab_size:
            return b""
        raise TokenizerError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = list(ids)
        try:
            return self._enc.decode_bytes(ids)
        except (KeyError, ValueError, OverflowError, TypeError):
            return b"".join(self.token_bytes(int(i)) for i in ids)

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


class StreamDecoder:
    """Turns ids arriving one by one into text, holding back bytes of an unfinished UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids: Sequence[int] | int) -> str:
        if isinstance(ids, int):
            ids = [ids]
        return self._utf8.decode(b"".join(self._tok.token_bytes(i) for i in ids))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


_load_lock = threading.Lock()


@lru_cache(maxsize=4)
def _load_cached(model_path: str, mtime_ns: int, size: int) -> Tokenizer:
    del mtime_ns, size  # part of the cache key only: a rewritten file is read again
    with _load_lock:
        model = Path(model_path)
        ranks = read_ranks(model)
        config = model.parent / "tokenizer_config.json"
        if config.is_file():
            names = read_special_names(config)
        elif len(ranks) <= SPECIAL_BASE:
            names = {i: t for t, i in SPECIAL_TOKENS.items()}
        else:
            raise TokenizerError(
                f"{model.parent}: no tokenizer_config.json to name the special tokens of a {len(ranks)}-rank vocabulary"
            )
        return Tokenizer(ranks, names, name=model.parent.name or "kimi")


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer of a checkpoint directory."""
    return Tokenizer.load(path)
