"""A small tokenizer in the official K2.6 file format, for tiny test checkpoints.

``tiktoken.model`` holds the 256 single bytes plus a few hundred BPE merges learned from the
English and Python text below (ranks contiguous from 0, as in the official file, which has
163,584 of them); ``tokenizer_config.json`` names the real special tokens at their real ids
163584..163839, the unnamed ones ``<|reserved_token_N|>`` as the official file does.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

from kimidoc.chat.tokenizer import NUM_SPECIAL, SPECIAL_BASE, SPECIAL_TOKENS, reserved_name

N_MERGES = 400

_CORPUS = '''
The model reads whole documents, pages and repositories, and answers questions about them with
citations to the file, the page and the line. When a question needs a calculation, it writes a
short Python program, runs it in the sandbox, reads the result and then continues the answer.
Each tool call names a function and passes its arguments as a JSON object; the result of the call
comes back as a message from the tool, and the assistant decides what to do next. The weather in
Paris is sunny today, with a temperature of 21 degrees and a light wind from the west. Please
return the total of the invoice, the date it was issued and the name of the company that sent it.
The quick brown fox jumps over the lazy dog. This is a test of the tokenizer: it should split
words, numbers such as 2026 and 163584, punctuation, and whitespace the same way every time.

def read_config(path: str) -> dict:
    """Read a JSON config file and return its contents."""
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


class Agent:
    def __init__(self, backend, tools=None, max_steps: int = 50) -> None:
        self.backend = backend
        self.tools = {t.name: t for t in tools or []}
        self.max_steps = max_steps

    def run(self, messages: list[dict]) -> str:
        for step in range(self.max_steps):
            reply = self.backend.complete(messages, tools=list(self.tools.values()))
            if not reply.tool_calls:
                return reply.content
            for call in reply.tool_calls:
                result = self.tools[call.name](**call.parsed_arguments())
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        raise RuntimeError("the agent did not finish within the step limit")

{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
'''

# A simpler cousin of the official pre-tokenizer, only to decide which merges are learned.
_WORDS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]{1,3}| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")


@lru_cache(maxsize=1)
def learned_ranks(n_merges: int = N_MERGES) -> tuple[bytes, ...]:
    """Tokens in rank order: the 256 single bytes, then merges learned greedily from the corpus."""
    words = Counter(tuple(bytes([b]) for b in w.encode("utf-8")) for w in _WORDS.findall(_CORPUS))
    vocab: list[bytes] = [bytes([b]) for b in range(256)]
    known = set(vocab)
    for _ in range(n_merges):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        # Most frequent pair; ties broken by the bytes themselves so the file is deterministic.
        (a, b), _count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merged = a + b
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
        new_words: Counter[tuple[bytes, ...]] = Counter()
        for word, count in words.items():
            out: list[bytes] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += count
        words = new_words
    return tuple(vocab)


def special_block() -> dict[int, str]:
    """id -> name for the whole official special block (named tokens plus reserved slots)."""
    named = {i: t for t, i in SPECIAL_TOKENS.items()}
    return {i: named.get(i, reserved_name(i)) for i in range(SPECIAL_BASE, SPECIAL_BASE + NUM_SPECIAL)}


def write_tokenizer(directory: str | Path) -> Path:
    """Write ``tiktoken.model`` and ``tokenizer_config.json`` into ``directory``; returns it."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(tok).decode()} {rank}\n" for rank, tok in enumerate(learned_ranks())]
    (d / "tiktoken.model").write_text("".join(lines), encoding="ascii")
    entry = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    config = {
        "added_tokens_decoder": {str(i): {"content": name, **entry} for i, name in special_block().items()},
        "bos_token": "[BOS]",
        "eos_token": "[EOS]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1048576,
        "tokenizer_class": "TikTokenTokenizer",
    }
    (d / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return d
