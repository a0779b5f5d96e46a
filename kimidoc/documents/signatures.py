"""A compressed view of a source file: its declarations only, each with its line number.

Used by the context packer for files that do not fit: the agent sees what the file defines and
where (``L40: def load(path, *, password=None) -> Document:``) and reads the bodies it needs
through the line-range tools.
"""

from __future__ import annotations

import ast
import re

# Declaration lines of common languages, matched line by line (no parser needed).
_DECL = re.compile(
    r"""^\s*(?:
        (?:export\s+)?(?:default\s+)?(?:async\s+)?function\b            # JS / TS
      | (?:export\s+)?(?:default\s+)?(?:abstract\s+)?class\s+\w         # JS / TS / Java / C# / PHP / Kotlin
      | (?:export\s+)?(?:interface|type|enum|namespace|module)\s+\w     # TS
      | (?:export\s+)?(?:const|let)\s+\w+\s*=\s*(?:async\s*)?\(?[^=]*\)?\s*=>  # arrow functions
      | (?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+"C"\s+)?fn\s+\w   # Rust
      | (?:pub(?:\([^)]*\))?\s+)?(?:struct|enum|trait|impl|mod|union)\b  # Rust
      | func\s                                                         # Go / Swift
      | type\s+\w+\s+(?:struct|interface)\b                            # Go
      | (?:(?:public|private|protected|internal|static|final|abstract|override|virtual|inline|constexpr|extern|synchronized)\s+)+[\w<>\[\],.?*&:\s]+\s*\(   # Java / C# / C++
      | (?:struct|union|enum|class|namespace|template)\b                # C / C++
      | [A-Za-z_][\w*&:<>,\s]*\s+\**[A-Za-z_][\w:~]*\s*\([^;{]*(?:\)\s*(?:const\s*)?\{?\s*)?$   # C-style definitions at top level
      | def\s+\w | class\s+\w | module\s+\w                             # Ruby / Python without ast
      | \#{1,6}\s                                                      # Markdown headings
    )""",
    re.VERBOSE,
)
_C_NOT_DECL = re.compile(r"^\s*(?:return|if|else|while|for|switch|case|do|goto|sizeof|typedef)\b")


def signatures(text: str, language: str = "text") -> str:
    """Declaration lines of ``text`` as ``L<n>: <line>``; empty when it declares nothing."""
    if language == "python":
        try:
            return _python(text)
        except (SyntaxError, ValueError, RecursionError):
            pass  # not parseable (Python 2, a template): the line patterns still work
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if len(line) > 300 or not _DECL.match(line) or _C_NOT_DECL.match(line):
            continue
        out.append(f"L{n}: {line.rstrip().rstrip('{').rstrip()}")
    return "\n".join(out)


def _python(text: str) -> str:
    lines = text.splitlines()
    tree = ast.parse(text)
    out: list[str] = []
    doc = ast.get_docstring(tree)
    if doc:
        out.append(f'L1: """{doc.strip().splitlines()[0]}"""')

    def visit(body: list[ast.stmt], depth: int) -> None:
        for node in body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            end = node.body[0].lineno - 1 if node.body[0].lineno > node.lineno else node.lineno
            for n in range(start, end + 1):
                line = lines[n - 1]
                if line.strip() and not line.strip().startswith("#"):
                    out.append(f"L{n}: {line.rstrip()}")
            docstring = ast.get_docstring(node)
            if docstring:
                out.append(f'L{node.body[0].lineno}: {"    " * (depth + 1)}"""{docstring.strip().splitlines()[0]}"""')
            if isinstance(node, ast.ClassDef):
                visit(node.body, depth + 1)

    visit(tree.body, 0)
    return "\n".join(out)
