"""The body of the ``tool_declare`` system message: TypeScript-style (K2.5 / K2.6) or JSON (K2).

K2.6 was trained on tools written as TypeScript function types inside ``namespace functions``;
every byte below (comment placement, ``,\\n`` separators, two-space indents, Python-style default
values) follows the official ``tool_declaration_ts`` encoder, because the model reads exactly that.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kimidoc.messages import ToolSchema

INDENT = "  "
FIELD_SEP = ",\n"
_CONSTRAINT_KEYS = {
    "string": ("maxLength", "minLength", "pattern"),
    "number": ("maximum", "minimum"),
    "integer": ("maximum", "minimum"),
    "array": ("maxItems", "minItems"),
}
_UNION_NAMES = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "null": "null",
    "object": "{}",
    "array": "Array<any>",
}


class ToolDeclarationError(ValueError):
    """A tool schema that cannot be declared to the model."""


def comment_lines(text: str, indent: str) -> str:
    """``// `` before each line of a description; blank lines stay blank."""
    return "\n".join(f"{indent}// {line}" if line else "" for line in text.split("\n"))


class _Schemas:
    """Resolves ``$ref`` against the tool's ``$defs``; ``#`` (self reference) names the root."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.defs: dict[str, Any] = {}
        self.self_ref = False

    def ref_name(self, ref: str) -> str:
        if ref == "#":
            self.self_ref = True
            return "parameters"
        if ref.startswith("#/$defs/"):
            name = ref.rsplit("/", 1)[-1]
            if name not in self.defs:
                raise ToolDeclarationError(f"{self.where}: $ref {ref!r} has no entry in $defs")
            return name
        raise ToolDeclarationError(f"{self.where}: unsupported $ref {ref!r} (only '#' and '#/$defs/NAME')")


def _kind(schema: Any) -> str:
    if isinstance(schema, bool):
        return "any" if schema else "null"
    if not schema:
        return "any"
    if "$ref" in schema:
        return "ref"
    if "anyOf" in schema:
        return "anyOf"
    if "enum" in schema:
        return "enum"
    typ = schema.get("type")
    if isinstance(typ, list):
        return "union"
    if typ is None:
        return "object" if "properties" in schema else "any"
    return typ


def _doc(schema: Any, indent: str) -> str:
    """Description lines, then one line of constraints sorted by key; each line ends with a newline."""
    if not isinstance(schema, dict):
        return ""
    lines = []
    if schema.get("description"):
        lines.append(comment_lines(schema["description"], indent))
    kind = _kind(schema)
    keys = _CONSTRAINT_KEYS.get(kind, ()) if kind not in ("enum", "anyOf", "union", "ref") else ()
    constraints = sorted((k, schema[k]) for k in keys if k in schema)
    if constraints:
        lines.append(f"{indent}// " + ", ".join(f"{k}: {v}" for k, v in constraints))
    return "".join(line + "\n" for line in lines)


def _type(schema: Any, indent: str, refs: _Schemas) -> str:
    if not isinstance(schema, (dict, bool)):
        raise ToolDeclarationError(f"{refs.where}: a JSON schema must be an object or a boolean, got {schema!r}")
    kind = _kind(schema)
    if kind == "ref":
        return refs.ref_name(schema["$ref"])
    if kind == "anyOf":
        return " | ".join(_type(s, indent, refs) for s in schema["anyOf"])
    if kind == "enum":
        return " | ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in schema["enum"])
    if kind == "union":
        try:
            return " | ".join(_UNION_NAMES[t] for t in schema["type"])
        except KeyError as exc:
            raise ToolDeclarationError(f"{refs.where}: unknown JSON type {exc.args[0]!r} in {schema['type']}") from None
    if kind == "object":
        return _object(schema, indent, refs)
    if kind == "array":
        item = schema.get("items") or {}
        doc = _doc(item, indent + INDENT)
        if doc:
            return f"Array<\n{doc}{indent}{INDENT}{_type(item, indent + INDENT, refs)}\n{indent}>"
        return f"Array<{_type(item, indent, refs)}>"
    return "number" if kind == "integer" else kind


def _field(name: str, schema: Any, optional: bool, indent: str, refs: _Schemas) -> str:
    text = _doc(schema, indent)
    default = schema.get("default") if isinstance(schema, dict) else None
    if default is not None:
        shown = repr(default) if isinstance(default, (int, float, bool)) else json.dumps(default, ensure_ascii=False)
        text += f"{indent}// Default: {shown}\n"
    return f"{text}{indent}{name}{'?' if optional else ''}: {_type(schema, indent, refs)}"


def _fields(schema: dict[str, Any], indent: str, refs: _Schemas) -> list[str]:
    if "$defs" in schema:
        refs.defs.update(schema["$defs"])
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    order = sorted(n for n in props if n in required) + sorted(n for n in props if n not in required)
    fields = [_field(n, props[n], n not in required, indent + INDENT, refs) for n in order]
    extra = schema.get("additionalProperties")
    if extra is not None:
        extra_type = "any" if extra is True else "never" if extra is False else _type(extra, indent + INDENT, refs)
        fields.append(f"{indent}{INDENT}[k: string]: {extra_type}")
    return fields


def _object(schema: dict[str, Any], indent: str, refs: _Schemas) -> str:
    fields = _fields(schema, indent, refs)
    if not fields:
        return "{}"
    return "{\n" + FIELD_SEP.join(fields) + f"\n{indent}}}"


def function_declaration(function: dict[str, Any]) -> str:
    """One function: optional ``interface`` blocks for ``$defs``, its description, its type."""
    name = function.get("name") or "function"
    refs = _Schemas(f"tool {name!r}")
    params = function.get("parameters") or {}
    if not isinstance(params, dict):
        raise ToolDeclarationError(
            f"tool {name!r}: parameters must be a JSON schema object, got {type(params).__name__}"
        )
    signature = _object(params, "", refs)
    interfaces = []
    if refs.self_ref:
        # The official encoder writes the root interface in declaration order, without sorting.
        props = params.get("properties") or {}
        required = set(params.get("required") or [])
        inner = FIELD_SEP.join(_field(n, s, n not in required, INDENT, refs) for n, s in props.items())
        interfaces.append(f"interface parameters {{{chr(10) + inner + chr(10) if inner else ''}}}")
        signature = "parameters"
    for def_name, def_schema in list(refs.defs.items()):
        doc = (
            comment_lines(def_schema["description"], "") + "\n"
            if isinstance(def_schema, dict) and def_schema.get("description")
            else ""
        )
        interfaces.append(f"{doc}interface {def_name} {_type(def_schema, '', refs)}")
    description = function.get("description")
    parts = [
        "\n".join(interfaces),
        comment_lines(description, "") if description else "",
        f"type {name} = (_: {signature}) => any;",
    ]
    return "\n".join(p for p in parts if p)


def typescript_declaration(tools: Sequence[ToolSchema]) -> str:
    """``# Tools`` block declaring every function tool in ``namespace functions``."""
    functions = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise ToolDeclarationError(f"tools[{i}]: expected an OpenAI tool dict, got {type(tool).__name__}")
        if tool.get("type") == "function" and tool.get("function"):
            functions.append(function_declaration(tool["function"]))
    if not functions:
        return ""
    return "# Tools\n\n## functions\nnamespace functions {\n" + "\n".join(functions) + "\n}\n"


def json_declaration(tools: Sequence[ToolSchema]) -> str:
    """K2's declaration: the OpenAI tools array as compact JSON."""
    return json.dumps(list(tools), ensure_ascii=False, separators=(",", ":"))


def declare_tools(tools: Sequence[ToolSchema], style: str = "typescript") -> str:
    if style == "typescript":
        # The official template falls back to JSON when no function tool can be written as TypeScript.
        return typescript_declaration(tools) or json_declaration(tools)
    if style == "json":
        return json_declaration(tools)
    raise ValueError(f"declare_style must be 'typescript' or 'json', got {style!r}")
