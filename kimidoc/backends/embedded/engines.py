"""Two ways to run the embedded GGUF model: llama.cpp (fast, grammar-constrained) or transformers.

Both expose the same small surface to :class:`~kimidoc.backends.embedded.Embedded`: the
special tokens, ``tokenize``, and ``generate``, which yields
``(text, finish_reason)`` once per generated token (``finish_reason`` is set on the last item
only). Neither is thread-safe; the backend serialises calls.
"""

from __future__ import annotations

import codecs
import inspect
import json
import re
import weakref
from pathlib import Path
from typing import Any, Iterator

Step = tuple[str, "str | None"]

# A 135M model loops on its own phrases without this; 1.1 over the last 64 tokens is llama.cpp's
# usual setting, applied by both engines so they sample alike.
REPEAT_PENALTY = 1.1
REPEAT_WINDOW = 64


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


class LlamaCppEngine:
    """llama-cpp-python over the GGUF file; tool calls are constrained by a JSON-schema grammar."""

    name = "llama.cpp"
    constrains_json = True

    def __init__(self, gguf: Path, *, threads: int | None = None, n_ctx: int | None = None) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx or 0, n_threads=threads, n_threads_batch=threads, verbose=False)
        # Free the model while the interpreter is still whole: llama-cpp-python's own finaliser
        # fails (and prints a traceback) when it runs during interpreter shutdown.
        weakref.finalize(self, self.llm.close)
        self.context_window = int(self.llm.n_ctx())
        self.bos_token = self._piece(self.llm.token_bos())
        self.eos_token = self._piece(self.llm.token_eos())
        self._stop_ids = {self.llm.token_eos(), *self.tokenize("<|im_end|>")[-1:]}

    def _piece(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) if text else []

    def generate(self, prompt: str, *, max_tokens: int, temperature: float, top_p: float, top_k: int, seed: int | None, grammar: str | None) -> Iterator[Step]:
        from llama_cpp import LlamaGrammar

        if seed is not None:
            self.llm.set_seed(seed)
        constrained = LlamaGrammar.from_string(grammar, verbose=False) if grammar else None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        n = 0
        tokens = self.tokenize(prompt)
        for token in self.llm.generate(tokens, top_k=top_k, top_p=top_p, min_p=0.0, temp=temperature, repeat_penalty=REPEAT_PENALTY, grammar=constrained):
            if token in self._stop_ids:
                yield decoder.decode(b"", final=True), "stop"
                return
            n += 1
            text = decoder.decode(self.llm.detokenize([token]))
            if n >= max_tokens:
                yield text + decoder.decode(b"", final=True), "length"
                return
            yield text, None
        yield decoder.decode(b"", final=True), "stop"


def tool_grammar(call_schema: dict[str, Any], *, forced: bool) -> str:
    """GBNF for a reply: forced, exactly one call object; else free text or a ``<tool_call>`` block.

    Free text may not start with ``<``, so a reply that opens a tool call must finish it as JSON
    that fits the declared schemas.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    rules = json_schema_to_gbnf(json.dumps(call_schema))
    if forced:
        return rules
    rules = re.sub(r"^root ::=", "kd-call ::=", rules, flags=re.M)
    return (
        'root ::= kd-calls | kd-text\n'
        'kd-calls ::= "<tool_call>" [ \\n]* "[" [ \\n]* kd-call ([ \\n]* "," [ \\n]* kd-call)* [ \\n]* "]" [ \\n]* "</tool_call>"\n'
        "kd-text ::= [^<] [^\\x00]*\n" + rules
    )


class TransformersEngine:
    """transformers' GGUF loader (dequantised to float32; fine for a 135M model), greedy or sampled."""

    name = "transformers"
    constrains_json = False

    def __init__(self, gguf: Path, *, n_ctx: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        self.model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
        self.context_window = int(n_ctx or getattr(self.model.config, "max_position_embeddings", 8192))
        self.bos_token = self.tokenizer.bos_token or ""
        self.eos_token = self.tokenizer.eos_token or ""
        # transformers renamed ``past_key_values`` to ``cache`` (5.2x); use whichever this version takes.
        self._cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._stop_ids = {i for i in (self.tokenizer.eos_token_id, im_end) if isinstance(i, int) and i >= 0}

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def generate(self, prompt: str, *, max_tokens: int, temperature: float, top_p: float, top_k: int, seed: int | None, grammar: str | None) -> Iterator[Step]:
        torch = self.torch
        from transformers import DynamicCache

        gen = torch.Generator()
        if seed is not None:
            gen.manual_seed(seed)
        else:
            gen.seed()
        prompt_ids = self.tokenize(prompt)
        ids = torch.tensor([prompt_ids])
        cache = DynamicCache()
        out: list[int] = []
        shown = 0
        with torch.inference_mode():
            while True:
                logits = self.model(input_ids=ids, use_cache=True, **{self._cache_kw: cache}).logits[0, -1].float()
                logits = _penalize_repeats(torch, logits, (prompt_ids + out)[-REPEAT_WINDOW:])
                token = _sample(torch, logits, temperature, top_p, top_k, gen)
                if token in self._stop_ids:
                    yield "", "stop"
                    return
                out.append(token)
                text = self.tokenizer.decode(out, skip_special_tokens=False)
                if len(out) >= max_tokens:
                    yield text[shown:], "length"
                    return
                # A character split over tokens decodes to U+FFFD until its last byte arrives.
                piece = "" if text.endswith("\ufffd") else text[shown:]
                shown += len(piece)
                yield piece, None
                ids = torch.tensor([[token]])


def _penalize_repeats(torch: Any, logits: Any, recent: list[int]) -> Any:
    """llama.cpp's repeat penalty, so both engines sample alike: recent tokens' logits are divided
    (positive) or multiplied (negative) by ``REPEAT_PENALTY``."""
    if not recent or REPEAT_PENALTY == 1.0:
        return logits
    idx = torch.tensor(sorted(set(recent)))
    picked = logits[idx]
    logits[idx] = torch.where(picked > 0, picked / REPEAT_PENALTY, picked * REPEAT_PENALTY)
    return logits


def _sample(torch: Any, logits: Any, temperature: float, top_p: float, top_k: int, gen: Any) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if 0 < top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, 0) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=gen))
