"""A file's programming or markup language, from its name, then its shebang, then Pygments."""

from __future__ import annotations

from functools import lru_cache
from pathlib import PurePath

_BY_EXT = {
    "py": "python",
    "pyi": "python",
    "pyx": "cython",
    "ipynb": "json",
    "js": "javascript",
    "mjs": "javascript",
    "cjs": "javascript",
    "jsx": "jsx",
    "ts": "typescript",
    "tsx": "tsx",
    "go": "go",
    "rs": "rust",
    "java": "java",
    "kt": "kotlin",
    "kts": "kotlin",
    "scala": "scala",
    "c": "c",
    "h": "c",
    "cc": "cpp",
    "cpp": "cpp",
    "cxx": "cpp",
    "hpp": "cpp",
    "hh": "cpp",
    "cu": "cuda",
    "cuh": "cuda",
    "cs": "csharp",
    "m": "objective-c",
    "mm": "objective-cpp",
    "swift": "swift",
    "rb": "ruby",
    "php": "php",
    "pl": "perl",
    "lua": "lua",
    "r": "r",
    "jl": "julia",
    "sh": "bash",
    "bash": "bash",
    "zsh": "bash",
    "fish": "fish",
    "ps1": "powershell",
    "bat": "batch",
    "sql": "sql",
    "html": "html",
    "htm": "html",
    "css": "css",
    "scss": "scss",
    "vue": "vue",
    "svelte": "svelte",
    "md": "markdown",
    "markdown": "markdown",
    "rst": "rst",
    "txt": "text",
    "tex": "latex",
    "json": "json",
    "jsonl": "json",
    "yaml": "yaml",
    "yml": "yaml",
    "toml": "toml",
    "ini": "ini",
    "cfg": "ini",
    "xml": "xml",
    "csv": "csv",
    "tsv": "csv",
    "proto": "protobuf",
    "graphql": "graphql",
    "dart": "dart",
    "ex": "elixir",
    "exs": "elixir",
    "erl": "erlang",
    "hs": "haskell",
    "ml": "ocaml",
    "clj": "clojure",
    "zig": "zig",
    "nim": "nim",
    "v": "verilog",
    "sv": "systemverilog",
    "vhd": "vhdl",
    "cmake": "cmake",
    "gradle": "groovy",
    "tf": "hcl",
    "nix": "nix",
    "asm": "asm",
    "s": "asm",
}
_BY_NAME = {
    "makefile": "make",
    "gnumakefile": "make",
    "dockerfile": "dockerfile",
    "cmakelists.txt": "cmake",
    "gemfile": "ruby",
    "rakefile": "ruby",
    "jenkinsfile": "groovy",
    "vagrantfile": "ruby",
    "license": "text",
    "readme": "text",
    ".gitignore": "gitignore",
    ".dockerignore": "gitignore",
}
_SHEBANG = {
    "python": "python",
    "node": "javascript",
    "bash": "bash",
    "sh": "bash",
    "zsh": "bash",
    "ruby": "ruby",
    "perl": "perl",
}


def language_of(path: str | PurePath, first_line: str = "") -> str:
    """A short lowercase language name (``python``, ``markdown``, ``text``...) for fences and stats."""
    p = PurePath(path)
    name = p.name.lower()
    if name in _BY_NAME:
        return _BY_NAME[name]
    ext = p.suffix[1:].lower()
    if ext in _BY_EXT:
        return _BY_EXT[ext]
    if first_line.startswith("#!"):
        words = first_line[2:].replace("/usr/bin/env", " ").split()
        for word in words[:2]:
            prog = word.rsplit("/", 1)[-1].rstrip("0123456789.")
            if prog in _SHEBANG:
                return _SHEBANG[prog]
    return _pygments_language(ext) if ext else "text"


@lru_cache(maxsize=512)
def _pygments_language(ext: str) -> str:
    # Pygments knows hundreds of rarer extensions; asked once per extension, since its lookup scans every lexer.
    try:
        from pygments.lexers import get_lexer_for_filename
        from pygments.util import ClassNotFound
    except ImportError:
        return "text"
    try:
        lexer = get_lexer_for_filename(f"x.{ext}")
    except ClassNotFound:
        return "text"
    return (lexer.aliases or [lexer.name])[0].lower()
