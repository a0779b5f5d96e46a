"""``LocalKimi``: K2.6 run in this process, behind the one backend interface.

Messages and tool schemas are rendered with K2.6's own template (:mod:`kimidoc.chat.template`),
images go through the MoonViT tower when the checkpoint has one, the text runtime
(:func:`kimidoc.model.generate`) produces ids, and :class:`~kimidoc.chat.parser.KimiParser` turns
them into streamed reasoning, content and tool calls.

    backend = LocalKimi("/models/Kimi-K2.6")                     # planned for this machine
    backend = LocalKimi("/models/Kimi-K2.6", machine=Machine(gpus=[24 * 2**30], cpu=700 * 2**30))
    reply = backend.complete([{"role": "user", "content": "Hi"}], tools=[...])

The checkpoint is loaded through a placement plan (:func:`kimidoc.placement.runtime.load_placed`):
the machine given, or the one detected here (free GPU memory and RAM), decides which parts go to
GPU, RAM or the disk tier; a model that cannot fit is refused before any weight is read, with
the plan's shortfall in the message (:class:`~kimidoc.placement.DoesNotFit`).

Generation runs in a worker thread so ``stream`` yields while the model works; calls are
serialised on the model (one latent cache, reused across calls for the common prompt prefix).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimidoc.backends.base import BaseBackend
from kimidoc.chat.parser import KimiParser
from kimidoc.chat.template import declare_style_for, encode_chat, image_parts
from kimidoc.chat.tokenizer import Tokenizer
from kimidoc.messages import Delta, Message, ToolSchema, Usage, image_bytes
from kimidoc.placement import DEFAULT_CONTEXT, Machine, machine_for


class _StopStrings:
    """Ends content at the first of ``stops`` (OpenAI ``stop``), holding back a possible partial match."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.tail = ""
        self.hit = False

    def __call__(self, deltas: list[Delta]) -> list[Delta]:
        if not self.stops:
            return deltas
        out: list[Delta] = []
        for d in deltas:
            if self.hit:
                break
            if d.content:
                text = self.tail + d.content
                cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
                if cuts:
                    self.hit, self.tail = True, ""
                    if min(cuts):
                        out.append(Delta(content=text[: min(cuts)]))
                    break
                split = max(0, len(text) - self.keep)
                self.tail = text[split:]
                d.content = text[:split]
                if d.content or d.reasoning:
                    out.append(d)
            else:
                if self.tail and (d.tool_calls or d.invalid_tool_calls):
                    out.append(Delta(content=self.tail))
                    self.tail = ""
                out.append(d)
        return out

    def flush(self) -> list[Delta]:
        tail, self.tail = self.tail, ""
        return [Delta(content=tail)] if tail and not self.hit else []


_DONE = object()


def load_local(
    path: Path,
    machine: Machine | None = None,
    *,
    context: int = DEFAULT_CONTEXT,
    disk_cache: str | Path | None = None,
    **load_kwargs: Any,
) -> Any:
    """The checkpoint at ``path`` loaded through its plan on ``machine`` (default: detected here);
    the vision tower too when the checkpoint has one."""
    from kimidoc.placement.runtime import load_placed
    from kimidoc.vision.multimodal import with_tower

    if "device" in load_kwargs:
        raise ValueError(
            "LocalKimi places the model by its plan: give machine=Machine(gpus=[...], cpu=...) instead of device="
        )
    if machine is None:
        machine = machine_for(disk_cache=disk_cache)
    elif disk_cache is not None and machine.disk is None:
        raise ValueError(
            f"disk_cache={str(disk_cache)!r} needs a disk tier, but the machine has none (Machine(disk=...))"
        )
    return load_placed(path, machine, context=context, offload_folder=disk_cache, wrap=with_tower, **load_kwargs)


@dataclass
class _Request:
    prompt: list[int]
    vision: Any  # VisionInputs for the prompt's images, or None
    forced: list[int]  # ids the answer must continue with once reasoning ends (tool_choice)
    thinking: bool
    max_tokens: int
    sample: dict[str, Any]  # temperature, top_p, top_k, seed


def _given(sampling: dict[str, Any], key: str, default: float) -> Any:
    """A sampling value, K2.6's recommended one when absent or None."""
    value = sampling.get(key)
    return default if value is None else value


class LocalKimi(BaseBackend):
    """K2.6 (or K2 / K2-Thinking) from a checkpoint folder.

    ``model`` skips loading (any module :func:`kimidoc.model.generate` accepts). Otherwise the
    checkpoint is placed on ``machine`` (default: this machine, detected, see
    :func:`kimidoc.placement.machine_for`) with room for ``context`` tokens of latent cache;
    ``disk_cache`` (a folder) turns the disk tier on and keeps disk-tier experts there in the
    kernel layout (with a given ``machine``, its ``disk`` must be set). ``load_kwargs`` go to
    :func:`~kimidoc.placement.runtime.load_placed` (``dtype``, ``int4_compute_dtype``,
    ``disk_cache_bytes``, ``shrink``, ...). ``thinking`` is the default mode (a call's
    ``thinking=`` overrides it); ``max_tokens`` the default completion budget.
    """

    name = "local-kimi"

    def __init__(
        self,
        path: str | Path,
        *,
        model: Any = None,
        tokenizer: Tokenizer | None = None,
        thinking: bool = True,
        max_tokens: int = 4096,
        generate_fn: Callable[..., list[int]] | None = None,
        machine: Machine | None = None,
        context: int = DEFAULT_CONTEXT,
        disk_cache: str | Path | None = None,
        **load_kwargs: Any,
    ) -> None:
        from kimidoc.model import generate, load_config

        self.path = Path(path)
        self.config = load_config(self.path)
        self.tokenizer = tokenizer or Tokenizer.load(self.path)
        self.model = (
            model
            if model is not None
            else load_local(self.path, machine, context=context, disk_cache=disk_cache, **load_kwargs)
        )
        self.plan = getattr(self.model, "plan", None)
        self._generate = generate_fn or generate
        self.thinking = thinking
        self.max_tokens = max_tokens
        self.declare_style = declare_style_for(self.config.raw)
        self.context_window = self.config.text.max_position_embeddings
        self.stop_ids = self._read_stop_ids()
        self._lock = threading.Lock()
        self._cache: Any = None

    def _read_stop_ids(self) -> frozenset[int]:
        ids = {self.tokenizer.im_end_id, self.tokenizer.eos_id}
        gen = self.path / "generation_config.json"
        if gen.is_file():
            eos = json.loads(gen.read_text()).get("eos_token_id")
            ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        return frozenset(ids)

    # ---- token accounting ---------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return self.tokenizer.count(text)

    def count_message_tokens(self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None) -> int:
        return len(
            encode_chat(self.tokenizer, messages, tools, thinking=self.thinking, declare_style=self.declare_style)
        )

    # ---- generation ---------------------------------------------------------------------------
    def _vision(self, messages: Sequence[Message]) -> Any:
        parts = image_parts(messages)
        if not parts:
            return None
        if not hasattr(self.model, "encode_images"):
            raise ValueError(
                f"{self.path}: this checkpoint has no vision tower, but the messages contain {len(parts)} image(s)"
            )
        from kimidoc.vision.preprocess import preprocess

        return preprocess([image_bytes(p) for p in parts])

    def _forced(self, choice: Any, tools: Sequence[ToolSchema] | None, messages: Sequence[Message]) -> list[int]:
        """Ids the answer must continue with for ``tool_choice`` (after the reasoning, if any)."""
        if choice in (None, "auto", "none"):
            return []
        names = [t["function"]["name"] for t in tools or [] if t.get("type") == "function" and t.get("function")]
        if not names:
            raise ValueError(f"tool_choice {choice!r} needs tools, and none were given")
        if choice == "required":
            return self.tokenizer.encode("<|tool_calls_section_begin|>")
        name = (
            choice.get("function", {}).get("name")
            if isinstance(choice, dict) and choice.get("type") == "function"
            else None
        )
        if name is None:
            raise ValueError(
                f"tool_choice must be 'auto', 'none', 'required' or {{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}"
            )
        if name not in names:
            raise ValueError(f"tool_choice names {name!r}, which is not among the tools ({', '.join(names)})")
        idx = sum(len(m.get("tool_calls") or []) for m in messages if m.get("role") == "assistant")
        return self.tokenizer.encode(
            f"<|tool_calls_section_begin|><|tool_call_begin|>functions.{name}:{idx}<|tool_call_argument_begin|>"
        )

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> Iterator[Delta]:
        """Sampling: ``temperature`` / ``top_p`` (K2.6's recommended 1.0 / 0.95 thinking, 0.6 / 0.95
        instant), ``top_k``, ``seed``, ``max_tokens``, ``stop``, ``thinking`` and ``tool_choice``
        (``required`` or a named function is honoured by writing the call's opening markup for the
        model once its reasoning ends)."""
        thinking = self.thinking if sampling.get("thinking") is None else bool(sampling["thinking"])
        choice = sampling.get("tool_choice")
        forced = self._forced(choice, tools, messages)
        if choice == "none":
            tools = None
        vision = self._vision(messages)
        prompt = encode_chat(
            self.tokenizer,
            messages,
            tools,
            thinking=thinking,
            declare_style=self.declare_style,
            image_tokens=vision.tokens_per_image if vision is not None else [],
        )
        room = self.context_window - len(prompt) - len(forced)
        if room <= 0:
            raise ValueError(f"the prompt has {len(prompt)} tokens; the context window is {self.context_window}")
        names = {t["function"]["name"] for t in tools or [] if t.get("type") == "function" and t.get("function")}
        request = _Request(
            prompt=prompt,
            vision=vision,
            forced=forced,
            thinking=thinking,
            max_tokens=min(int(sampling.get("max_tokens") or self.max_tokens), room),
            sample=dict(
                temperature=float(_given(sampling, "temperature", 1.0 if thinking else 0.6)),
                top_p=float(_given(sampling, "top_p", 0.95)),
                top_k=int(sampling.get("top_k") or 0),
                seed=sampling.get("seed"),
            ),
        )
        parser = KimiParser(thinking=thinking, tools=names, tokenizer=self.tokenizer)
        yield from self._run(request, parser, _StopStrings(sampling.get("stop") or []))

    def _generate_request(self, req: _Request, emit: Callable[[int], bool], cancelled: Callable[[], bool]) -> None:
        """Run the model for ``req`` (holding the model lock), passing every answer id to ``emit``:
        one generation, or, with a forced tool call after reasoning, two: up to ``</think>``, then
        from the call's opening markup (the latent cache makes the second prefill only the new ids)."""
        embeds = None
        if req.vision is not None:
            embeds = lambda ids, _text_embeds: self.model.embed(ids, req.vision)  # noqa: E731
        think_end = self.tokenizer.token_id("</think>")
        with self._lock:
            if self._cache is None:
                self._cache = self.model.new_cache()

            def run(ids: list[int], budget: int, stop_ids: frozenset[int]) -> list[int]:
                return self._generate(
                    self.model,
                    ids,
                    max_new_tokens=budget,
                    stop_ids=tuple(stop_ids),
                    on_token=emit,
                    inputs_embeds=embeds,
                    cache=self._cache,
                    **req.sample,
                )

            ids = list(req.prompt)
            if req.forced and not req.thinking:
                for t in req.forced:
                    emit(t)
                ids += req.forced
            first_stops = self.stop_ids | {think_end} if req.forced and req.thinking else self.stop_ids
            out = run(ids, req.max_tokens, first_stops)
            if (
                not (req.forced and req.thinking)
                or not out
                or out[-1] not in first_stops
                or len(out) >= req.max_tokens
                or cancelled()
            ):
                return
            # Reasoning ended (or the turn did): close the reasoning and open the call for the model.
            body = out if out[-1] == think_end else out[:-1]
            bridge = ([] if out[-1] == think_end else [think_end]) + req.forced
            for t in bridge:
                emit(t)
            run(ids + body + bridge, req.max_tokens - len(out), self.stop_ids)

    def _run(self, req: _Request, parser: KimiParser, stops: _StopStrings) -> Iterator[Delta]:
        tokens: queue.Queue[Any] = queue.Queue()
        cancel = threading.Event()

        def emit(token: int) -> bool:
            tokens.put(token)
            return not cancel.is_set()

        def work() -> None:
            try:
                self._generate_request(req, emit, cancel.is_set)
            except BaseException as exc:  # re-raised in the consumer
                tokens.put(exc)
            finally:
                tokens.put(_DONE)

        worker = threading.Thread(target=work, name="local-kimi-generate", daemon=True)
        worker.start()
        generated: list[int] = []
        calls = 0
        try:
            while True:
                item = tokens.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                generated.append(item)
                if item in self.stop_ids or stops.hit:
                    continue
                for d in stops(parser.feed_ids(item)):
                    calls += len(d.tool_calls)
                    yield d
                if stops.hit:
                    cancel.set()
            for d in stops(parser.finish()) + stops.flush():
                calls += len(d.tool_calls)
                yield d
            ended = bool(generated) and generated[-1] in self.stop_ids
            finish = "tool_calls" if calls else "stop" if ended or stops.hit else "length"
            usage = Usage(
                prompt_tokens=len(req.prompt),
                completion_tokens=len(generated),
                reasoning_tokens=parser.reasoning_tokens,
            )
            yield Delta(finish_reason=finish, usage=usage)
        finally:
            cancel.set()
            worker.join()
