"""JSON schemas for tools: derived from a function's signature, and checked against arguments.

The validator covers the subset of JSON Schema that tool declarations use (types, required,
properties, additionalProperties, enum, const, items, prefixItems, anyOf/oneOf, numeric and length
bounds); it reports the first problem with a path (``search.query: expected string``) so the model
can fix its call. Keywords it does not know (``$ref``, ``format``...) are accepted, never guessed at.
"""

from __future__ import annotations

import collections.abc as cabc
import enum
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

_JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}
_SEQUENCES = (list, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Iterable, cabc.Collection, cabc.Set)


def type_schema(tp: Any) -> dict[str, Any]:
    """JSON schema for a Python type hint (``{}``, meaning anything, for hints JSON cannot express)."""
    if tp is inspect.Parameter.empty or tp is Any:
        return {}
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is typing.Annotated:
        return type_schema(args[0])
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        nullable = type(None) in args
        options = [type_schema(a) for a in args if a is not type(None)]
        if len(options) == 1 and not nullable:
            return options[0]
        if (
            nullable
            and len(options) == 1
            and isinstance(options[0].get("type"), str)
            and set(options[0]) <= {"type", "items"}
        ):
            return {**options[0], "type": [options[0]["type"], "null"]}
        return {"anyOf": options + ([{"type": "null"}] if nullable else [])}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if origin is tuple or tp is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _array(type_schema(args[0]))
        if args and args != ((),):
            return {
                "type": "array",
                "prefixItems": [type_schema(a) for a in args],
                "minItems": len(args),
                "maxItems": len(args),
            }
        return {"type": "array"}
    if origin in _SEQUENCES or tp in _SEQUENCES:
        return _array(type_schema(args[0]) if args else {})
    if origin in (dict, cabc.Mapping, cabc.MutableMapping) or tp is dict:
        value = type_schema(args[1]) if len(args) == 2 else {}
        return {"type": "object", "additionalProperties": value} if value else {"type": "object"}
    if tp in _JSON_TYPES:
        return {"type": _JSON_TYPES[tp]}
    return {}


def _array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item} if item else {"type": "array"}


_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters)\s*:?\s*$")
_END = re.compile(r"^(Returns?|Raises|Yields?|Examples?|Notes?|See Also|References|Warnings?)\s*:?\s*$")
_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-, NumPy- or reST-style docstring into (description, {param: description})."""
    lines = inspect.cleandoc(doc or "").splitlines()
    params: dict[str, str] = {}
    desc: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        numpy = i + 1 < len(lines) and _UNDERLINE.match(lines[i + 1]) is not None
        if _SECTION.match(stripped) and (numpy or stripped.endswith(":")):
            i = _read_params(lines, i + (2 if numpy else 1), params, numpy)
            continue
        if (
            _END.match(stripped)
            and (numpy or stripped.endswith(":"))
            or stripped.startswith((":return", ":rtype", ":raises"))
        ):
            break
        m = re.match(r"^:param\s+(?:[^:]+\s+)?(\w+):\s*(.*)$", stripped)
        if m:
            params[m.group(1)] = m.group(2).strip()
        elif not stripped.startswith(":type "):
            desc.append(line)
        i += 1
    return "\n".join(desc).strip(), params


def _read_params(lines: list[str], i: int, params: dict[str, str], numpy: bool) -> int:
    """Read one parameter section from line ``i``; returns the index of the line after it."""
    entry = re.compile(r"^(\*{0,2}\w+)\s*:\s*(.*)$" if numpy else r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
    indent: int | None = None
    current: str | None = None
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            if (
                numpy
                and i < len(lines)
                and lines[i].strip()
                and not lines[i].startswith((" ", "\t"))
                and not entry.match(lines[i].strip())
            ):
                break
            continue
        depth = len(line) - len(line.lstrip())
        if not numpy and depth == 0:
            break
        if numpy and depth == 0 and (i + 1 < len(lines) and _UNDERLINE.match(lines[i + 1])):
            break
        if indent is None:
            indent = depth
        m = entry.match(line.strip())
        if depth == indent and m:
            current = m.group(1).lstrip("*")
            # NumPy puts the type after the colon and the description below it
            params[current] = "" if numpy else m.group(2).strip()
        elif current is not None and depth > indent:
            params[current] = (params[current] + " " + line.strip()).strip()
        elif depth < indent:
            break
        i += 1
    return i


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # a hint that does not resolve: fall back to resolving each one on its own
        out: dict[str, Any] = {}
        ns = getattr(fn, "__globals__", {})
        for name, hint in getattr(fn, "__annotations__", {}).items():
            try:
                out[name] = eval(hint, ns) if isinstance(hint, str) else hint  # noqa: S307  the function's own annotation
            except Exception:
                out[name] = inspect.Parameter.empty
        return out


def enum_parameters(fn: Callable[..., Any]) -> dict[str, type[enum.Enum]]:
    """Parameters typed with an Enum class, whose JSON values must be turned back into members."""
    return {n: h for n, h in _hints(fn).items() if n != "return" and isinstance(h, type) and issubclass(h, enum.Enum)}


def schema_from_function(fn: Callable[..., Any]) -> tuple[str, dict[str, Any]]:
    """(description, parameters schema) of a function, from its hints, defaults and docstring."""
    description, docs = parse_docstring(fn.__doc__ or "")
    hints = _hints(fn)
    props: dict[str, Any] = {}
    required: list[str] = []
    open_ended = False
    for pname, p in inspect.signature(fn).parameters.items():
        if p.kind is p.VAR_KEYWORD:
            open_ended = True
            continue
        if p.kind is p.VAR_POSITIONAL or pname in ("self", "cls"):
            continue
        s = dict(type_schema(hints.get(pname, p.annotation)))
        if pname in docs and docs[pname]:
            s["description"] = docs[pname]
        if p.default is p.empty:
            required.append(pname)
        elif isinstance(p.default, enum.Enum):
            s["default"] = p.default.value
        elif p.default is not None and isinstance(p.default, (str, int, float, bool)):
            s["default"] = p.default
        props[pname] = s
    params: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        params["required"] = required
    if not open_ended:
        params["additionalProperties"] = False
    return description or fn.__name__, params


def _type_ok(value: Any, t: str) -> bool:
    if t == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
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
    if not isinstance(schema, dict) or not schema:
        return None
    options = schema.get("anyOf") or schema.get("oneOf")
    if options and all(validate(value, s, where) for s in options):
        first = validate(value, options[0], where) if len(options) == 1 else None
        return first or f"{where}: {value!r:.80} matches none of the allowed forms"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}: {value!r:.80} is not one of {schema['enum']}"
    if "const" in schema and value != schema["const"]:
        return f"{where}: must be {schema['const']!r}"
    t = schema.get("type")
    if t is not None:
        allowed = t if isinstance(t, list) else [t]
        if not any(_type_ok(value, x) for x in allowed):
            return f"{where}: expected {' or '.join(allowed)}, got {_json_type(value)}"
    if isinstance(value, dict):
        return _validate_object(value, schema, where)
    if isinstance(value, list):
        return _validate_array(value, schema, where)
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
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            return f"{where}: {value} must be above {schema['exclusiveMinimum']}"
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            return f"{where}: {value} must be below {schema['exclusiveMaximum']}"
    return None


def _validate_object(value: dict[str, Any], schema: dict[str, Any], where: str) -> str | None:
    props = schema.get("properties") or {}
    for key in schema.get("required", []):
        if key not in value:
            return f"{where}: missing required argument {key!r}"
    extra = schema.get("additionalProperties")
    for key, v in value.items():
        if key in props:
            problem = validate(v, props[key], f"{where}.{key}")
        elif extra is False:
            problem = f"{where}: unexpected argument {key!r} (allowed: {', '.join(props) or 'none'})"
        elif isinstance(extra, dict):
            problem = validate(v, extra, f"{where}.{key}")
        else:
            problem = None
        if problem:
            return problem
    return None


def _validate_array(value: list[Any], schema: dict[str, Any], where: str) -> str | None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        return f"{where}: needs at least {schema['minItems']} items, got {len(value)}"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return f"{where}: allows at most {schema['maxItems']} items, got {len(value)}"
    prefix = schema.get("prefixItems") or []
    for i, v in enumerate(value):
        item = prefix[i] if i < len(prefix) else schema.get("items")
        problem = validate(v, item, f"{where}[{i}]") if isinstance(item, dict) else None
        if problem:
            return problem
    return None


def _json_type(value: Any) -> str:
    for py, name in (
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (dict, "object"),
        (list, "array"),
        (type(None), "null"),
    ):
        if isinstance(value, py):
            return name
    return type(value).__name__
