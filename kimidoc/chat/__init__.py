"""Speaking K2.6: its tokenizer, its chat template and the parser for what it writes.

from kimidoc.chat import Tokenizer, render, encode_chat, KimiParser, parse

tok = Tokenizer.load("/models/Kimi-K2.6")
prompt = render(messages, tools)                 # the exact prompt text
ids = encode_chat(tok, messages, tools)          # its ids, images expanded to placeholders
reply = parse(generated_text)                    # reasoning, content, tool calls
"""

from kimidoc.chat.parser import KimiParser, parse, tool_name_from_id
from kimidoc.chat.template import (
    ChatTemplateError,
    declare_style_for,
    encode_chat,
    image_parts,
    render,
    render_segments,
)
from kimidoc.chat.tokenizer import SPECIAL_TOKENS, StreamDecoder, Tokenizer, TokenizerError, load_tokenizer
from kimidoc.chat.tool_declare import ToolDeclarationError, declare_tools, json_declaration, typescript_declaration

__all__ = [
    "SPECIAL_TOKENS",
    "ChatTemplateError",
    "KimiParser",
    "StreamDecoder",
    "Tokenizer",
    "TokenizerError",
    "ToolDeclarationError",
    "declare_style_for",
    "declare_tools",
    "encode_chat",
    "image_parts",
    "json_declaration",
    "load_tokenizer",
    "parse",
    "render",
    "render_segments",
    "tool_name_from_id",
    "typescript_declaration",
]
