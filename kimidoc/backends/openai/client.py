"""K2.6 (or any model) behind an OpenAI-compatible ``/v1/chat/completions`` server.

vLLM and SGLang started with ``--tool-call-parser kimi_k2 --reasoning-parser kimi_k2``,
Moonshot's API and OpenRouter all speak this protocol; so does llama.cpp's server. One
:class:`OpenAICompatible` is safe to share between threads and event loops: requests in flight
are bounded by ``max_concurrency`` (per process for threads, per event loop for tasks), rate
limits and transient failures are retried with backoff, and a server that returns K2.6's raw
tool-call markup in ``content`` (no tool parser configured) is parsed here instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import httpx

from kimidoc.backends.base import BackendError, BaseBackend
from kimidoc.backends.openai.providers import PROVIDERS, api_key_for, provider_of
from kimidoc.backends.openai.retry import RETRY_ERRORS, RetryPolicy
from kimidoc.backends.openai.sse import DONE, SSEDecoder
from kimidoc.backends.openai.wire import check_tool_calls, delta_of, finish_of, message_of, request_body
from kimidoc.chat.parser import KimiParser
from kimidoc.messages import AssistantMessage, Delta, Message, ToolSchema, Usage, accumulate

KIMI_CONTEXT_WINDOW = 262144


class OpenAICompatible(BaseBackend):
    """A chat-completions endpoint as a :class:`~kimidoc.backends.base.Backend`.

    ``base_url`` ends before ``/chat/completions`` (``http://gpu-node:8000/v1``). ``model=None``
    asks the server's ``/models`` once and takes its only model, or the one naming K2.6.
    ``context_window`` defaults to what the server reports (vLLM's ``max_model_len``,
    OpenRouter's ``context_length``), else K2.6's 262,144. ``timeout`` bounds each wait for
    bytes (a hung server is retried, then reported). ``count_tokens`` may be given the served
    model's tokenizer; without one, counts are a conservative estimate.
    """

    name = "openai-compatible"

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_concurrency: int = 64,
        context_window: int | None = None,
        thinking_style: str | None = None,
        headers: dict[str, str] | None = None,
        count_tokens: Callable[[str], int] | None = None,
        **default_sampling: Any,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        provider = provider_of(self.base_url)
        self.model = model
        self.thinking_style = thinking_style or (
            PROVIDERS[provider]["thinking_style"] if provider else "chat_template_kwargs"
        )
        self.retry = RetryPolicy(max_retries=max_retries, backoff=backoff, max_backoff=max_backoff)
        self.max_concurrency = max(1, max_concurrency)
        self.default_sampling = default_sampling
        self._window = context_window
        self._served_window: int | None = None
        self._count = count_tokens
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        key = api_key_for(self.base_url, api_key)
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._limits = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )
        self._lock = threading.Lock()
        self._sem = threading.BoundedSemaphore(self.max_concurrency)
        self._client: httpx.Client | None = None
        # One AsyncClient and semaphore per event loop: neither may cross loops.
        self._aio: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary()
        )

    # ---- configuration ----------------------------------------------------------------------
    @property
    def context_window(self) -> int:  # type: ignore[override]
        return self._window or self._served_window or KIMI_CONTEXT_WINDOW

    def count_tokens(self, text: str) -> int:
        return self._count(text) if self._count is not None else super().count_tokens(text)

    def _sync_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    base_url=self.base_url, headers=self._headers, timeout=self._timeout, limits=self._limits
                )
            return self._client

    def _async_client(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        with self._lock:
            pair = self._aio.get(loop)
            if pair is None:
                client = httpx.AsyncClient(
                    base_url=self.base_url, headers=self._headers, timeout=self._timeout, limits=self._limits
                )
                pair = (client, asyncio.Semaphore(self.max_concurrency))
                self._aio[loop] = pair
            return pair

    def close(self) -> None:
        """Close the pooled connections of the sync client (async ones: :meth:`aclose`)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        with self._lock:
            pair = self._aio.pop(asyncio.get_running_loop(), None)
        if pair is not None:
            await pair[0].aclose()

    def __enter__(self) -> OpenAICompatible:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- the served model -------------------------------------------------------------------
    def served_model(self) -> str:
        """The model id requests name: the one given, else discovered once from ``/models``."""
        if self.model is not None:
            return self.model
        with self._lock:
            if self.model is not None:
                return self.model
            data = self._get_json("/models")
            self.model, self._served_window = pick_model(data, self.base_url)
            return self.model

    def _get_json(self, path: str) -> Any:
        client = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self._timeout)
        try:
            for attempt in range(self.retry.max_retries + 1):
                try:
                    resp = client.get(path)
                except RETRY_ERRORS as exc:
                    time.sleep(self._backoff(attempt, error=exc, request=f"GET {path}"))
                    continue
                if resp.status_code == 200:
                    return _json(resp)
                time.sleep(
                    self._backoff(
                        attempt,
                        status=resp.status_code,
                        text=resp.text,
                        retry_after=resp.headers.get("retry-after"),
                        request=f"GET {path}",
                    )
                )
        finally:
            client.close()
        raise AssertionError("unreachable: the last attempt returns or raises")

    # ---- requests ---------------------------------------------------------------------------
    def _body(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None, sampling: dict[str, Any], stream: bool
    ) -> dict[str, Any]:
        merged = {**self.default_sampling, **sampling}
        return request_body(
            self.served_model(), messages, tools, merged, stream=stream, thinking_style=self.thinking_style
        )

    def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> AssistantMessage:
        body = self._body(messages, tools, sampling, stream=False)
        client = self._sync_client()
        for attempt in range(self.retry.max_retries + 1):
            try:
                with self._sem:
                    resp = client.post("/chat/completions", json=body)
            except RETRY_ERRORS as exc:
                time.sleep(self._backoff(attempt, error=exc))
                continue
            if resp.status_code == 200:
                return self._finish(message_of(_json(resp)), messages, tools)
            time.sleep(
                self._backoff(
                    attempt, status=resp.status_code, text=resp.text, retry_after=resp.headers.get("retry-after")
                )
            )
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def acomplete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> AssistantMessage:
        if self.model is None:
            await asyncio.to_thread(self.served_model)
        body = self._body(messages, tools, sampling, stream=False)
        client, sem = self._async_client()
        for attempt in range(self.retry.max_retries + 1):
            try:
                async with sem:
                    resp = await client.post("/chat/completions", json=body)
            except RETRY_ERRORS as exc:
                await asyncio.sleep(self._backoff(attempt, error=exc))
                continue
            if resp.status_code == 200:
                return self._finish(message_of(_json(resp)), messages, tools)
            await asyncio.sleep(
                self._backoff(
                    attempt, status=resp.status_code, text=resp.text, retry_after=resp.headers.get("retry-after")
                )
            )
        raise AssertionError("unreachable: the last attempt returns or raises")

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> Iterator[Delta]:
        body = self._body(messages, tools, sampling, stream=True)
        client = self._sync_client()
        for attempt in range(self.retry.max_retries + 1):
            state = _StreamState(self, messages, tools)
            status = None
            try:
                with self._sem, client.stream("POST", "/chat/completions", json=body) as resp:
                    if resp.status_code == 200:
                        decoder = SSEDecoder()
                        for line in resp.iter_lines():
                            payload = decoder.feed(line)
                            if payload is DONE:
                                break
                            if payload is not None:
                                yield from state.feed(payload)
                        else:
                            payload = decoder.flush()
                            if payload is not None and payload is not DONE:
                                yield from state.feed(payload)
                        yield from state.finish()
                        return
                    status, text, retry_after = (
                        resp.status_code,
                        resp.read().decode("utf-8", "replace"),
                        resp.headers.get("retry-after"),
                    )
            except RETRY_ERRORS as exc:
                time.sleep(self._backoff(attempt, error=exc, mid_stream=state.started))
                continue
            time.sleep(self._backoff(attempt, status=status, text=text, retry_after=retry_after))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def astream(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema] | None = None, **sampling: Any
    ) -> AsyncIterator[Delta]:
        if self.model is None:
            await asyncio.to_thread(self.served_model)
        body = self._body(messages, tools, sampling, stream=True)
        client, sem = self._async_client()
        for attempt in range(self.retry.max_retries + 1):
            state = _StreamState(self, messages, tools)
            status = None
            try:
                async with sem, client.stream("POST", "/chat/completions", json=body) as resp:
                    if resp.status_code == 200:
                        decoder = SSEDecoder()
                        done = False
                        async for line in resp.aiter_lines():
                            payload = decoder.feed(line)
                            if payload is DONE:
                                done = True
                                break
                            if payload is not None:
                                for d in state.feed(payload):
                                    yield d
                        if not done:
                            payload = decoder.flush()
                            if payload is not None and payload is not DONE:
                                for d in state.feed(payload):
                                    yield d
                        for d in state.finish():
                            yield d
                        return
                    status, text, retry_after = (
                        resp.status_code,
                        (await resp.aread()).decode("utf-8", "replace"),
                        resp.headers.get("retry-after"),
                    )
            except RETRY_ERRORS as exc:
                await asyncio.sleep(self._backoff(attempt, error=exc, mid_stream=state.started))
                continue
            await asyncio.sleep(self._backoff(attempt, status=status, text=text, retry_after=retry_after))
        raise AssertionError("unreachable: the last attempt returns or raises")

    # ---- results ----------------------------------------------------------------------------
    def _finish(
        self, msg: AssistantMessage, messages: Sequence[Message], tools: Sequence[ToolSchema] | None
    ) -> AssistantMessage:
        """Parse raw K2.6 markup left in content, fill in missing usage, set invalid calls aside."""
        if _has_markup(msg.content):
            parsed = _parse_markup(msg.content, tools)
            msg.content = parsed.content
            msg.reasoning = msg.reasoning + parsed.reasoning
            msg.tool_calls.extend(parsed.tool_calls)
            msg.invalid_tool_calls.extend(parsed.invalid_tool_calls)
            msg.finish_reason = finish_of(msg.finish_reason, bool(msg.tool_calls))
        msg.usage = self._usage(msg.usage if msg.usage.total_tokens else None, msg, messages, tools)
        return check_tool_calls(msg)

    def _usage(
        self,
        reported: Usage | None,
        msg: AssistantMessage,
        messages: Sequence[Message],
        tools: Sequence[ToolSchema] | None,
    ) -> Usage:
        # Servers that report nothing still leave budgets to keep: estimate (conservatively).
        if reported is None:
            reported = Usage(
                prompt_tokens=self.count_message_tokens(messages, tools),
                completion_tokens=self.count_tokens(
                    msg.content + msg.reasoning + "".join(c.arguments for c in msg.tool_calls)
                ),
            )
        if msg.reasoning and not reported.reasoning_tokens:
            reported.reasoning_tokens = min(
                self.count_tokens(msg.reasoning), reported.completion_tokens or self.count_tokens(msg.reasoning)
            )
        return reported

    def _backoff(
        self,
        attempt: int,
        *,
        error: BaseException | None = None,
        status: int | None = None,
        text: str = "",
        retry_after: str | None = None,
        mid_stream: bool = False,
        request: str = "POST /chat/completions",
    ) -> float:
        """Seconds to wait before trying again after a failed attempt, or the error to report.

        Once deltas of a stream have reached the caller a retry would repeat them, so a
        transport failure mid-stream is reported instead.
        """
        if error is not None:
            if mid_stream or not self.retry.should_retry(attempt, error=error):
                what = "timed out" if isinstance(error, httpx.TimeoutException) else "failed"
                during = " in the middle of a stream (not retried: output had been delivered)" if mid_stream else ""
                raise BackendError(
                    f"{self._where(attempt, request)} {what}{during}: {type(error).__name__}: {error}"
                ) from error
            return self.retry.delay(attempt)
        if not self.retry.should_retry(attempt, status=status):
            raise status_error(status, text, self._where(attempt, request))
        return self.retry.delay(attempt, retry_after)

    def _where(self, attempt: int, request: str) -> str:
        method, _, path = request.partition(" ")
        tries = f" after {attempt + 1} attempts" if attempt else ""
        return f"{method} {self.base_url}{path}{tries}"


class _StreamState:
    """Turns a server's chunks into our deltas for one streamed request.

    Content goes through K2.6's incremental parser only once markup shows up, so a server
    without a tool parser still yields proper tool calls; finish reason and usage are held back
    for the last delta, as the :class:`~kimidoc.messages.Delta` contract says.
    """

    def __init__(
        self, backend: OpenAICompatible, messages: Sequence[Message], tools: Sequence[ToolSchema] | None
    ) -> None:
        self.backend = backend
        self.messages = messages
        self.tools = tools
        self.started = False
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.parser: KimiParser | None = None
        self.pending = ""  # content held while it may be the start of a marker
        self.seen: list[Delta] = []  # for usage estimates when the server sends none

    def feed(self, payload: Any) -> list[Delta]:
        d = delta_of(payload)
        if d.finish_reason:
            self.finish_reason = d.finish_reason
        if d.usage is not None:
            self.usage = d.usage
        d.finish_reason, d.usage = None, None
        out = self._route(d)
        return self._emit(out)

    def _route(self, d: Delta) -> list[Delta]:
        if not d.content and self.parser is None and not self.pending:
            return [d] if (d.reasoning or d.tool_calls) else []
        text, d.content = self.pending + d.content, ""
        self.pending = ""
        out = [d] if (d.reasoning or d.tool_calls) else []
        if self.parser is None:
            if _has_markup(text):
                self.parser = KimiParser(thinking=False, tools=_tool_names(self.tools))
            else:
                keep = _partial_marker_len(text)
                self.pending = text[len(text) - keep :] if keep else ""
                text = text[: len(text) - keep]
                if text:
                    out.append(Delta(content=text))
                return out
        out.extend(self.parser.feed(text))
        return out

    def finish(self) -> list[Delta]:
        out: list[Delta] = []
        if self.parser is not None:
            out.extend(self.parser.finish())
        elif self.pending:
            out.append(Delta(content=self.pending))
            self.pending = ""
        self._emit(out)
        folded = accumulate(self.seen)
        usage = self.backend._usage(
            self.usage if self.usage and self.usage.total_tokens else None, folded, self.messages, self.tools
        )
        out.append(Delta(finish_reason=finish_of(self.finish_reason, bool(folded.tool_calls)), usage=usage))
        return out

    def _emit(self, deltas: list[Delta]) -> list[Delta]:
        if deltas:
            self.started = True
            self.seen.extend(deltas)
        return deltas


_MARKUP_STARTS = ("<|tool_calls_section_begin|>", "<|tool_call_section_begin|>", "<|tool_call_begin|>", "<think>")


def _has_markup(text: str) -> bool:
    return any(m in text for m in _MARKUP_STARTS)


def _partial_marker_len(text: str) -> int:
    """Length of a tail of ``text`` that could grow into a markup start."""
    lt = text.rfind("<")
    if lt < 0:
        return 0
    tail = text[lt:]
    return len(tail) if any(m.startswith(tail) for m in _MARKUP_STARTS) else 0


def _tool_names(tools: Sequence[ToolSchema] | None) -> list[str] | None:
    return [t["function"]["name"] for t in tools] if tools else None


def _parse_markup(content: str, tools: Sequence[ToolSchema] | None) -> AssistantMessage:
    p = KimiParser(thinking=False, tools=_tool_names(tools))
    return accumulate(p.feed(content) + p.finish())


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise BackendError(
            f"server answered 200 with a body that is not JSON: {resp.text[:300]!r}", status=200, body=resp.text[:2000]
        ) from exc


def status_error(status: int | None, text: str, where: str) -> BackendError:
    hint = {
        401: " (check the API key)",
        403: " (key lacks access)",
        404: " (check the base URL and model name)",
        413: " (prompt too large)",
    }.get(status or 0, "")
    return BackendError(f"{where} returned HTTP {status}{hint}: {text[:500]}", status=status, body=text[:2000])


def pick_model(data: Any, base_url: str) -> tuple[str, int | None]:
    """The model to use from a ``/models`` listing, and its context window if the server says."""
    models = [
        m for m in (data.get("data") if isinstance(data, dict) else None) or [] if isinstance(m, dict) and m.get("id")
    ]
    if not models:
        raise BackendError(f"{base_url}/models lists no models; pass model= explicitly")
    chosen = models[0] if len(models) == 1 else None
    for needle in ("kimi-k2.6", "kimi-k2.5", "kimi-k2"):
        if chosen is None:
            chosen = next((m for m in models if needle in m["id"].lower()), None)
    if chosen is None:
        ids = ", ".join(m["id"] for m in models[:20])
        raise BackendError(f"{base_url} serves several models and none is Kimi K2; pass model= (served: {ids})")
    window = chosen.get("max_model_len") or chosen.get("context_length") or chosen.get("context_window")
    return chosen["id"], int(window) if window else None
