"""Tool, @tool, schema derivation and validation, results, adapters and concurrent calls."""

from __future__ import annotations

import asyncio
import enum
import io
import threading
from collections.abc import Sequence
from typing import Literal

import pytest
from PIL import Image

from kimidoc.messages import ToolCall, image_bytes
from kimidoc.tools import Tool, ToolResult, as_tools, run_tool_call, run_tool_calls, to_result, tool
from kimidoc.tools.schema import parse_docstring, schema_from_function, type_schema, validate


class Unit(enum.Enum):
    CM = "cm"
    INCH = "in"


def measure(
    length: float,
    unit: Unit = Unit.CM,
    tags: Sequence[str] = (),
    note: str | None = None,
    box: tuple[int, int] = (1, 2),
) -> str:
    """Measure something.

    Longer explanation that stays in the description.

    Args:
        length: how long it is
            (continued on a second line: with a colon)
        unit: the unit
        tags: labels to attach

    Returns:
        a sentence
    """
    return f"{length} {unit.value} {list(tags)} {note} {box}"


def test_schema_from_type_hints_and_google_docstring() -> None:
    desc, params = schema_from_function(measure)
    assert desc == "Measure something.\n\nLonger explanation that stays in the description."
    props = params["properties"]
    assert props["length"] == {
        "type": "number",
        "description": "how long it is (continued on a second line: with a colon)",
    }
    assert props["unit"] == {"enum": ["cm", "in"], "description": "the unit", "default": "cm"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}, "description": "labels to attach"}
    assert props["note"] == {"type": ["string", "null"]}
    assert props["box"]["prefixItems"] == [{"type": "integer"}, {"type": "integer"}] and props["box"]["maxItems"] == 2
    assert params["required"] == ["length"] and params["additionalProperties"] is False


def test_numpy_and_rest_docstrings() -> None:
    numpy_doc = """Add.

    Parameters
    ----------
    a : int
        first
        number
    b : int
        second

    Returns
    -------
    int
    """
    assert parse_docstring(numpy_doc) == ("Add.", {"a": "first number", "b": "second"})
    rest = "Scale.\n\n:param float factor: how much\n:type factor: float\n:returns: the result"
    assert parse_docstring(rest) == ("Scale.", {"factor": "how much"})


def test_type_schema_edge_cases() -> None:
    assert type_schema(Literal["a", 1]) == {"enum": ["a", 1]}
    assert type_schema(dict[str, int]) == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert type_schema(tuple[float, ...]) == {"type": "array", "items": {"type": "number"}}
    assert type_schema(int | str) == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert type_schema(list[int] | None) == {"type": ["array", "null"], "items": {"type": "integer"}}


def test_validation_messages_name_the_tool_and_argument() -> None:
    t = tool(measure)
    assert t(length="long").text == "Error: measure.length: expected number, got string"
    assert t(length=1, unit="mm").text.startswith("Error: measure.unit: 'mm' is not one of")
    assert (
        t(length=1, colour="red").text
        == "Error: measure: unexpected argument 'colour' (allowed: length, unit, tags, note, box)"
    )
    assert t(unit="cm").text == "Error: measure: missing required argument 'length'"
    assert t(length=1, tags=["a", 2]).text == "Error: measure.tags[1]: expected string, got integer"
    assert t(length=1, box=[1]).text == "Error: measure.box: needs at least 2 items, got 1"
    assert all(r.is_error for r in (t(length="x"), t(unit="cm")))


def test_enum_values_become_members_and_integral_floats_become_ints() -> None:
    t = tool(measure)
    r = t(length=2, unit="in", note=None)
    assert not r.is_error and r.text == "2 in [] None (1, 2)"

    @tool
    def repeat(word: str, times: int) -> str:
        return word * times

    assert repeat(word="ab", times=3.0).text == "ababab"  # JSON Schema counts 3.0 as an integer
    assert repeat(word="ab", times=2.5).is_error


def test_exceptions_and_exits_become_error_results() -> None:
    @tool
    def broken(x: int) -> str:
        """Always fails."""
        raise KeyError(f"no entry {x}")

    @tool
    def leaves(x: int) -> str:
        raise SystemExit(2)

    r = broken(x=1)
    assert r.is_error and r.text == "Error in tool broken: KeyError: 'no entry 1'"
    assert leaves(x=1).is_error and "SystemExit" in leaves(x=1).text


def test_results_from_text_images_and_values() -> None:
    img = Image.new("RGB", (4, 3), "blue")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    png = buf.getvalue()
    assert to_result("hi") == ToolResult("hi")
    assert to_result(None) == ToolResult("")
    assert to_result({"a": [1, 2]}).text == '{"a": [1, 2]}'
    assert to_result(png).images == [png]
    assert Image.open(io.BytesIO(to_result(img).images[0])).size == (4, 3)
    mixed = to_result(["a chart", img])
    assert mixed.text == "a chart" and len(mixed.images) == 1
    content = mixed.to_content()
    assert content[0] == {"type": "text", "text": "a chart"} and image_bytes(content[1]).startswith(b"\x89PNG")
    assert to_result([1, 2]).text == "[1, 2]"


async def test_async_tools_in_and_out_of_an_event_loop() -> None:
    @tool
    async def slow_double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    assert (await slow_double.acall(x=4)).text == "8"
    assert slow_double(x=5).text == "10"  # a sync call from inside a running loop still works
    assert (await slow_double.acall(x="no")).is_error


async def test_tool_calls_run_concurrently_and_keep_their_order(scaled) -> None:
    barrier = threading.Barrier(3, timeout=scaled(10))

    @tool
    def wait_for_all(tag: str) -> str:
        barrier.wait()  # only returns when all three calls are running at the same time
        return tag

    calls = [ToolCall(f"c{i}", "wait_for_all", f'{{"tag": "t{i}"}}') for i in range(3)]
    results = await run_tool_calls([wait_for_all], calls)
    assert [r.text for r in results] == ["t0", "t1", "t2"]  # a timed-out barrier would be an error result


async def test_unknown_tool_and_bad_json_are_error_results() -> None:
    t = tool(measure)
    r = await run_tool_call([t], ToolCall("1", "nope", "{}"))
    assert r.is_error and "no tool named 'nope'" in r.text and "measure" in r.text
    r = await run_tool_call({"measure": t}, ToolCall("2", "measure", "{not json"))
    assert r.is_error and "not valid JSON" in r.text
    r = await run_tool_call([t], ToolCall("3", "measure", '{"length": 3}'))
    assert r.text.startswith("3 cm")


def test_agent_tools_accept_functions_tools_and_langchain_tools() -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.tools import tool as lc_tool

    from kimidoc.agents.toolset import agent_tools

    @lc_tool
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    mine = tool(measure)
    converted = agent_tools([mine, measure, shout])  # LangChain's tools converted one floor up
    assert converted[0] is mine
    assert converted[1].name == "measure" and converted[1](length=1).text.startswith("1 cm")
    assert converted[2].name == "shout" and converted[2](text="hey").text == "HEY"
    assert as_tools([mine, measure])[0] is mine
    with pytest.raises(TypeError, match="cannot use 42 as a tool"):
        as_tools([42])
    with pytest.raises(TypeError, match="from_langchain_tool"):
        as_tools([shout])


def test_validate_subset_of_json_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1, "exclusiveMaximum": 10},
            "s": {"type": "string", "pattern": "^a"},
        },
    }
    assert validate({"n": 0}, schema) == "arguments.n: 0 is below the minimum 1"
    assert validate({"n": 10}, schema) == "arguments.n: 10 must be below 10"
    assert validate({"s": "b"}, schema) == "arguments.s: does not match pattern '^a'"
    assert validate({"other": 1}, schema) is None  # no additionalProperties: false, so extras are allowed
    assert validate(True, {"type": "integer"}) == "arguments: expected integer, got boolean"
    assert validate({"$ref": 1}, {"$ref": "#/defs/x"}) is None  # unknown keywords are not guessed at


def test_tool_constructor_interface_is_kept() -> None:
    t = Tool(
        "echo", "Echo.", {"type": "object", "properties": {"v": {"type": "string"}}, "required": ["v"]}, lambda v: v
    )
    assert t.schema() == {
        "type": "function",
        "function": {"name": "echo", "description": "Echo.", "parameters": t.parameters},
    }
    assert t(v="x") == ToolResult("x", [], False)
