"""ChatKimi: a LangChain chat model over any kimidoc backend.

It behaves like ``ChatOpenAI``: invoke / stream / batch and their async forms, ``bind_tools``
with ``tool_choice``, tool-call chunks while streaming, ``usage_metadata`` with reasoning tokens,
reasoning kept in ``additional_kwargs["reasoning_content"]``, image content blocks,
``with_structured_output`` and stop sequences. The backend does the work; this class only
converts messages (see :mod:`kimidoc.integrations.langchain.messages`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, SecretStr, model_validator

from kimidoc.backends.base import Backend
from kimidoc.integrations.langchain.messages import PROVIDER, ChunkBuilder, ai_message, to_kimidoc_messages
from kimidoc.messages import Delta, ToolSchema
from kimidoc.tools.base import Tool

StructuredMethod = Literal["function_calling", "json_mode", "json_schema"]


class ChatKimi(BaseChatModel):
    """Kimi K2.6 (or whatever model a kimidoc backend reaches) as a LangChain chat model.

    Give it a backend (``ChatKimi(backend=Scripted([...]))``), or let kimidoc connect one:
    ``ChatKimi(model="/ckpt/Kimi-K2.6")`` runs the local runtime, ``ChatKimi(endpoint=url,
    model=name, api_key=...)`` an OpenAI-compatible server, ``ChatKimi()`` the embedded default.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    backend: Any = Field(default=None, exclude=True)
    """The kimidoc backend (anything with the :class:`kimidoc.backends.base.Backend` interface)."""
    model: str | None = None
    """A local checkpoint directory or ``.gguf`` file, ``"embedded"``, or the model name an endpoint serves."""
    endpoint: str | None = None
    """An OpenAI-compatible base URL, or ``"moonshot"`` / ``"openrouter"``."""
    api_key: SecretStr | None = None
    timeout: float | None = None
    """Seconds to wait on an endpoint (with ``endpoint`` only)."""
    max_retries: int | None = None
    """Retries of a failed endpoint request (with ``endpoint`` only)."""
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    thinking: bool | None = None
    """K2.6 thinking mode: True / False, or None for the backend's default."""
    streaming: bool = False
    """Make ``invoke`` stream from the backend (LangChain's switch; callbacks see tokens as they come)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Other sampling keywords passed to the backend as they are (e.g. ``top_k``)."""
    backend_options: dict[str, Any] = Field(default_factory=dict)
    """Keywords for the backend kimidoc connects when none is given (e.g. ``engine`` for the
    embedded model, ``thinking_style`` for an endpoint); see :func:`kimidoc.backends.connect.connect`."""

    @model_validator(mode="after")
    def _connect(self) -> ChatKimi:
        if self.backend is None:
            from kimidoc.backends.connect import connect

            options = dict(self.backend_options)
            if self.endpoint:  # the server's client takes these; local backends have no use for them
                options.update(
                    {
                        k: v
                        for k, v in {"timeout": self.timeout, "max_retries": self.max_retries}.items()
                        if v is not None
                    }
                )
            api_key = self.api_key.get_secret_value() if self.api_key is not None else None
            self.backend = connect(self.model, self.endpoint, api_key, **options)
        elif not isinstance(self.backend, Backend):
            raise TypeError(
                f"ChatKimi backend must implement kimidoc.backends.base.Backend, got {type(self.backend).__name__}"
            )
        return self

    @property
    def _llm_type(self) -> str:
        return "kimidoc"

    @property
    def model_name(self) -> str:
        """The model this instance talks to, as reported in ``response_metadata["model_name"]``."""
        backend = self.backend
        return self.model or str(
            getattr(backend, "model", None) or getattr(backend, "model_name", None) or backend.name
        )

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "backend": self.backend.name, **self._sampling(None)}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs["model"] if isinstance(kwargs.get("model"), str) else self.model_name,
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # ------------------------------------------------------------------ calls

    def _sampling(self, stop: list[str] | None, **kwargs: Any) -> dict[str, Any]:
        own = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "thinking": self.thinking,
        }
        params = {k: v for k, v in own.items() if v is not None}
        params.update(self.model_kwargs)
        stop = stop if stop is not None else self.stop
        if stop:
            params["stop"] = list(stop)
        params.update(kwargs)
        return params

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], list[ToolSchema] | None, dict[str, Any]]:
        sampling = self._sampling(stop, **kwargs)
        tools = sampling.pop("tools", None) or None
        return to_kimidoc_messages(messages), tools, sampling

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        msgs, tools, sampling = self._request(messages, stop, kwargs)
        return _result(ai_message(self.backend.complete(msgs, tools, **sampling), self.model_name))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        msgs, tools, sampling = self._request(messages, stop, kwargs)
        return _result(ai_message(await self.backend.acomplete(msgs, tools, **sampling), self.model_name))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        msgs, tools, sampling = self._request(messages, stop, kwargs)
        builder = ChunkBuilder(self.model_name)
        # One delta of look-ahead: only the end of the stream decides which chunk is the last.
        pending: Delta | None = None
        for delta in self.backend.stream(msgs, tools, **sampling):
            if pending is not None:
                yield self._emit(builder.chunk(pending), run_manager)
            pending = delta
        for chunk in _close(builder, pending):
            yield self._emit(chunk, run_manager)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        msgs, tools, sampling = self._request(messages, stop, kwargs)
        builder = ChunkBuilder(self.model_name)
        pending: Delta | None = None
        async for delta in self.backend.astream(msgs, tools, **sampling):
            if pending is not None:
                yield await self._aemit(builder.chunk(pending), run_manager)
            pending = delta
        for chunk in _close(builder, pending):
            yield await self._aemit(chunk, run_manager)

    @staticmethod
    def _emit(message: AIMessageChunk, run_manager: CallbackManagerForLLMRun | None) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=message)
        if run_manager:
            run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        return chunk

    @staticmethod
    async def _aemit(message: AIMessageChunk, run_manager: AsyncCallbackManagerForLLMRun | None) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=message)
        if run_manager:
            await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        return chunk

    # ------------------------------------------------------------------ tools and structured output

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool | Tool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind LangChain tools, functions, Pydantic / TypedDict schemas, OpenAI tool dicts or kimidoc tools.

        ``tool_choice``: ``"auto"``, ``"none"``, ``"any"`` / ``"required"`` / ``True`` (must call a
        tool), a tool's name, or an OpenAI ``{"type": "function", "function": {"name": ...}}`` dict.
        """
        formatted = [t.schema() if isinstance(t, Tool) else convert_to_openai_tool(t, strict=strict) for t in tools]
        choice = _tool_choice(tool_choice, [f["function"]["name"] for f in formatted])
        if choice is not None:
            kwargs["tool_choice"] = choice
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: StructuredMethod = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Answers shaped by ``schema`` (Pydantic class, TypedDict, JSON schema or OpenAI tool).

        ``function_calling`` (default, works on every backend) forces a call to a tool whose
        parameters are the schema. ``json_schema`` and ``json_mode`` ask the backend for JSON
        content through ``response_format``, which OpenAI-compatible servers honour.
        """
        if kwargs:
            raise ValueError(f"with_structured_output: unsupported arguments {sorted(kwargs)}")
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw)
        if method not in ("json_mode", "json_schema"):
            raise ValueError(
                f"with_structured_output: method must be function_calling, json_mode or json_schema, got {method!r}"
            )
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if method == "json_mode":
            response_format: dict[str, Any] = {"type": "json_object"}
        else:
            js = convert_to_json_schema(schema)
            spec: dict[str, Any] = {"name": js.get("title", "output"), "schema": js}
            if strict is not None:
                spec["strict"] = strict
            response_format = {"type": "json_schema", "json_schema": spec}
        llm = self.bind(
            response_format=response_format,
            ls_structured_output_format={"kwargs": {"method": method, "strict": strict}, "schema": schema},
        )
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()  # type: ignore[arg-type]
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")


def _tool_choice(choice: dict[str, Any] | str | bool | None, names: list[str]) -> dict[str, Any] | str | None:
    """LangChain's tool_choice spellings -> the one kimidoc backends take."""
    if choice is None or choice is False:
        return None
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, dict):
        return choice
    if choice in ("auto", "none", "required"):
        return choice
    if choice not in names:
        raise ValueError(f"tool_choice {choice!r} names no bound tool (bound: {', '.join(names) or 'none'})")
    return {"type": "function", "function": {"name": choice}}


def _close(builder: ChunkBuilder, pending: Delta | None) -> list[AIMessageChunk]:
    """The stream's final chunks: the held-back delta, split so the last chunk has no tool-call pieces."""
    if pending is None:
        return [builder.chunk(Delta(), last=True)]
    if pending.tool_calls:
        return [builder.chunk(pending), builder.chunk(Delta(), last=True)]
    return [builder.chunk(pending, last=True)]


def _result(message: AIMessage) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=message)])
