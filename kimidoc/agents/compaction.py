"""Keeping a long run inside the window: fold older turns into a ledger written by the model itself.

When the conversation nears the window, the turns before the last few are rendered as a transcript
and the model is asked to update a running ledger (findings with their sources, open questions,
progress). The conversation becomes: the system prompt and task, the ledger, the recent turns.
Each compaction folds the previous ledger in, so findings survive any number of compactions; a
transcript bigger than the summariser's share of the window is folded in chunks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kimidoc.messages import AssistantMessage, Message, Usage, text_of

SUMMARY_PROMPT = """You keep the working memory of an agent on a long task. You are given the task, the current ledger, and a transcript of turns that are about to be removed from the agent's context. Reply with the updated ledger only, in this form:

## Findings
- each fact established so far, with the source labels ([file p.N], [file:lines]) and stored-output references (sha256:...) it came from
## Open questions
- what is still unknown or needs checking
## Progress
- what has been done, and the next steps

Keep every finding the final answer may need; drop chatter and dead ends."""

LEDGER_HEADER = "[Context note] Earlier turns of this task were summarised to free room in the context. Ledger of the work so far:\n\n"


@dataclass
class Compaction:
    trigger: float = 0.8  # compact when the conversation passes this fraction of (window - reserve)
    keep_turns: int = 4  # recent turns (an assistant message and its tool results) kept verbatim
    reserve_tokens: int = 8192  # room left for the model's reply
    summary_share: float = 0.5  # largest share of the window one summarisation request may use
    prompt: str = SUMMARY_PROMPT

    def __post_init__(self) -> None:
        if not 0 < self.trigger <= 1 or not 0 < self.summary_share < 1:
            raise ValueError(
                f"Compaction.trigger must be in (0, 1] and summary_share in (0, 1), got {self.trigger}, {self.summary_share}"
            )
        if self.keep_turns < 1:
            raise ValueError(f"Compaction.keep_turns must be at least 1, got {self.keep_turns}")

    def limit(self, window: int) -> int:
        reserve = min(self.reserve_tokens, window // 4)
        return int((window - reserve) * self.trigger)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ledger_message(ledger: str) -> Message:
    return {"role": "user", "content": LEDGER_HEADER + ledger}


def ledger_of(message: Message) -> str | None:
    """The ledger a message carries, or None when it is not a ledger message."""
    text = message.get("content")
    if message.get("role") == "user" and isinstance(text, str) and text.startswith(LEDGER_HEADER):
        return text[len(LEDGER_HEADER) :]
    return None


def choose_cut(
    messages: Sequence[Message], prefix: int, keep_turns: int, count: Callable[[Sequence[Message]], int], room: int
) -> tuple[int, int] | None:
    """(first message to summarise, first message to keep), or None when nothing older can be folded.

    Keeps up to ``keep_turns`` recent turns, fewer when they alone would take more than ``room``
    tokens; a cut always falls on an assistant message so tool calls stay with their results.
    """
    start = prefix + 1 if len(messages) > prefix and ledger_of(messages[prefix]) is not None else prefix
    turns = [i for i in range(start, len(messages)) if messages[i].get("role") == "assistant"]
    for keep in range(min(keep_turns, len(turns)), 0, -1):
        cut = turns[-keep]
        if cut > start and (keep == 1 or count(messages[cut:]) <= room):
            return start, cut
    return None


def transcript(messages: Sequence[Message], max_chars: int) -> list[str]:
    """The turns as plain text blocks for the summariser, each at most ``max_chars`` long."""
    blocks = []
    for m in messages:
        role = m.get("role")
        if role == "assistant":
            lines = []
            if m.get("reasoning_content"):
                lines.append(f"(thinking) {m['reasoning_content']}")
            if text_of(m.get("content")):
                lines.append(text_of(m.get("content")))
            for c in m.get("tool_calls") or []:
                lines.append(f"-> call {c['function']['name']} [{c['id']}] {c['function'].get('arguments') or ''}")
            block = "ASSISTANT: " + "\n".join(lines)
        elif role == "tool":
            images = (
                sum(1 for p in m["content"] if p.get("type") == "image_url")
                if isinstance(m.get("content"), list)
                else 0
            )
            block = f"TOOL RESULT {m.get('name', '')} [{m.get('tool_call_id', '')}]: {text_of(m.get('content'))}" + (
                f" (+{images} image(s))" if images else ""
            )
        else:
            block = f"{str(role).upper()}: {text_of(m.get('content'))}"
        if len(block) > max_chars:
            block = block[: max_chars - 40] + f" ...[{len(block) - max_chars + 40:,} characters cut]"
        blocks.append(block)
    return blocks


Ask = Callable[[list[Message]], Awaitable[AssistantMessage]]


async def fold(
    ask: Ask,
    config: Compaction,
    task: str,
    ledger: str,
    blocks: list[str],
    count_tokens: Callable[[str], int],
    budget: int,
) -> tuple[str, Usage]:
    """Fold transcript blocks into the ledger, in as many summarisation calls as the budget needs."""
    usage = Usage()
    head = f"Task:\n{task}\n\nCurrent ledger:\n"
    fixed = count_tokens(config.prompt) + count_tokens(head) + 64
    chunk: list[str] = []
    used = 0

    async def flush() -> None:
        nonlocal ledger, usage, chunk, used
        request = [
            {"role": "system", "content": config.prompt},
            {
                "role": "user",
                "content": head
                + (ledger or "(empty)")
                + "\n\nTranscript of the turns to fold in:\n"
                + "\n\n".join(chunk),
            },
        ]
        reply = await ask(request)
        usage = usage + reply.usage
        ledger = reply.content.strip() or ledger
        chunk, used = [], 0

    for block in blocks:
        cost = count_tokens(block)
        if chunk and fixed + count_tokens(ledger) + used + cost > budget:
            await flush()
        chunk.append(block)
        used += cost
    if chunk:
        await flush()
    return ledger, usage
