"""JSON schemas for tools: derived from a function's signature, and checked against arguments.

The validator covers the subset of JSON Schema that tool declarations use (types, required,
properties, additionalProperties, enum, items, anyOf, numeric and length bounds); it reports the
first problem with a path (``search.query: expected string``) so the model can fix its call.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from typing import Any, Callable, Literal, Union, get_args, get_origin

_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array", type(None): "null"}


def type_schema(tp: Any) -> dict[str, Any]:
    """JSON schema for a Python type hint."""
    if tp is inspect.Parameter.empty or tp is Any:
        return {}
    origin = get_origin(tp)
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return type_schema(args[0])
        return {"anyOf": [type_schema(a) for a in args]}
    if origin in (list, tuple, set, typing.Sequence, typing.Iterable) or tp in (list, tuple, set):
        args = get_args(tp)
        item = type_schema(args[0]) if args else {}
        return {"type": "array", "items": item} if item else {"type": "array"}
    if origin is dict or tp is dict:
        return {"type": "object"}
    if tp in _JSON_TYPES:
        return {"type": _JSON_TYPES[tp]}
    return {}


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google- or reST-style docstring into (description, {param: description})."""
    doc = inspect.cleandoc(doc or "")
    params: dict[str, str] = {}
    lines = doc.splitlines()
    desc_lines: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"^(Args|Arguments|Parameters):\s*$", line.strip()):
            i += 1
            current = None
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                m = re.match(r"^\s+(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", lines[i])
                if m:
                    current = m.group(1)
                    params[current] = m.group(3).strip()
                elif current and lines[i].strip():
                    params[current] += " " + lines[i].strip()
                i += 1
            continue
        m = re.match(r"^:param\s+(?:\w+\s+)?(\w+):\s*(.*)$", line.strip())
        if m:
            params[m.group(1)] = m.group(2).strip()
        elif re.match(r"^(Returns|Raises|Yields|Examples?):\s*$", line.strip()) or line.strip().startswith(":return"):
            break
        else:
            desc_lines.append(line)
        i += 1
    return "\n".join(desc_lines).strip(), params


def schema_from_function(fn: Callable[..., Any]) -> tuple[str, dict[str, Any]]:
    """(description, parameters schema) of a function, from its hints, defaults and docstring."""
    description, docs = parse_docstring(fn.__doc__ or "")
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    props: dict[str, Any] = {}
    required: list[str] = []
    for pname, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or pname in ("self", "cls"):
            continue
        s = type_schema(hints.get(pname, p.annotation))
        if pname in docs:
            s["description"] = docs[pname]
        if p.default is p.empty:
            required.append(pname)
        elif p.default is not None and isinstance(p.default, (str, int, float, bool)):
            s["default"] = p.default
        props[pname] = s
    params: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        params["required"] = required
    return description or fn.__name__, params


def _type_ok(value: Any, t: str) -> bool:
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "null": value is None,
    }.get(t, True)


def validate(value: Any, schema: dict[str, Any], where: str = "arguments") -> str | None:
    """The first way ``value`` breaks ``schema``, as a readable message, or None."""
    if not schema:
        return None
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf")
        if all(validate(value, s, where) for s in options):
            return f"{where}: {value!r} matches none of the allowed forms"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}: {value!r} is not one of {schema['enum']}"
    t = schema.get("type")
    if t is not None:
        allowed = t if isinstance(t, list) else [t]
        if not any(_type_ok(value, x) for x in allowed):
            return f"{where}: expected {' or '.join(allowed)}, got {type(value).__name__}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                return f"{where}: missing required argument {key!r}"
        for key, v in value.items():
            if key in props:
                problem = validate(v, props[key], f"{where}.{key}")
                if problem:
                    return problem
            elif schema.get("additionalProperties") is False or (props and schema.get("additionalProperties") is None and t == "object" and where.count(".") == 0):
                return f"{where}: unexpected argument {key!r} (allowed: {', '.join(props) or 'none'})"
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            problem = validate(v, schema["items"], f"{where}[{i}]")
            if problem:
                return problem
        if "minItems" in schema and len(value) < schema["minItems"]:
            return f"{where}: needs at least {schema['minItems']} items"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{where}: allows at most {schema['maxItems']} items"
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            return f"{where}: shorter than {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{where}: longer than {schema['maxLength']} characters"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return f"{where}: does not match pattern {schema['pattern']!r}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where}: {value} is below the minimum {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{where}: {value} is above the maximum {schema['maximum']}"
    return None
