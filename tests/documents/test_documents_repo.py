import os
from pathlib import Path

import pytest

from kimidoc.documents import DocumentError, load
from kimidoc.documents.languages import language_of
from kimidoc.documents.signatures import signatures


def write(root: Path, rel: str, data: str | bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write(root, ".gitignore", "*.log\nbuild/\n/secret.txt\n")
    write(root, "app.log", "noise\n")
    write(root, "secret.txt", "root secret, ignored by the anchored pattern\n")
    write(root, "build/out.py", "x = 1\n")
    write(root, "src/.gitignore", "!keep.log\nlocal.txt\n")
    write(root, "src/keep.log", "kept by negation\n")
    write(root, "src/deep/keep.log", "kept by negation one level further down\n")
    write(root, "src/deep/other.log", "still ignored\n")
    write(root, "src/local.txt", "ignored by the nested file\n")
    write(root, "src/secret.txt", "not the root one: kept\n")
    write(
        root,
        "src/app.py",
        "def main(argv: list[str]) -> int:\n    return len(argv)\n\n\nclass App:\n    def run(self):\n        pass\n",
    )
    write(root, "README.md", "# Project\n\nHello.\n")
    return root


def files(doc) -> list[str]:
    return [p.source.path for p in doc.parts if p.meta.get("role") != "tree"]


def test_nested_gitignore_with_negation(repo: Path) -> None:
    doc = load(repo)
    assert files(doc) == [
        ".gitignore",
        "README.md",
        "src/.gitignore",
        "src/app.py",
        "src/deep/keep.log",
        "src/keep.log",
        "src/secret.txt",
    ]
    why = {o.source: o.reason for o in doc.skipped}
    assert why["app.log"] == "ignored by .gitignore" and why["build/"] == "ignored by .gitignore"
    assert why["secret.txt"] == "ignored by .gitignore"
    assert why["src/local.txt"] == "ignored by src/.gitignore"
    assert why["src/deep/other.log"] == "ignored by .gitignore"
    assert all(o.action == "ignored" for o in doc.skipped)


def test_parts_cite_relative_paths_and_lines(repo: Path) -> None:
    doc = load(repo)
    app = next(p for p in doc.parts if p.source.path == "src/app.py")
    assert app.source.cite() == "src/app.py:1-7" and app.meta["language"] == "python"
    tree = doc.parts[0]
    assert tree.meta["role"] == "tree" and "  src/\n" in tree.text and "    app.py  (7 lines)" in tree.text
    assert "app.log" not in tree.text  # ignored paths are not in the overview
    assert doc.meta["languages"]["python"] == 1 and doc.meta["files"] == 7


def test_symlink_loops_do_not_hang(tmp_path: Path) -> None:
    root = tmp_path / "loopy"
    write(root, "a/file.txt", "hello\n")
    os.symlink("..", root / "a" / "up")  # a/up -> the root: a cycle through directories
    os.symlink("self", root / "self")  # a link to itself
    os.symlink("file.txt", root / "a" / "alias.txt")
    os.symlink("/etc", root / "outside")
    doc = load(root)
    assert files(doc) == ["a/file.txt"]
    why = {o.source: o.reason for o in doc.skipped}
    assert why["a/up"] == "symlink loop (points back to the root)"
    assert why["self"] == "symlink loop"
    assert why["a/alias.txt"] == "symlink to a/file.txt (read there)"
    assert why["outside"].startswith("symlink to /etc, outside the folder")


def test_big_binary_and_latin1_files(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    with open(write(root, "huge.txt", b""), "wb") as f:
        f.write(b"text line\n" * (5 * 2**20))  # 50 MB of text: over the cap, never read
    write(root, "notes.txt", b"\x00\x01\x02binary\xff\xfe" * 100)  # binary behind a text extension
    write(root, "legacy.py", "# -*- coding: latin-1 -*-\nname = 'café crème'\n".encode("latin-1"))
    doc = load(root, max_file_bytes=2**20)
    why = {o.source: o.reason for o in doc.skipped}
    assert why["huge.txt"] == "larger than the 1.0 MB cap (50.0 MB)"
    assert why["notes.txt"] == "binary file"
    (legacy,) = [p for p in doc.parts if p.source.path == "legacy.py"]
    assert "name = 'café crème'" in legacy.text and legacy.meta["encoding"] not in ("utf-8", "ascii")
    assert "huge.txt  (skipped: larger than" in doc.parts[0].text


def test_pdf_and_images_inside_a_folder_are_listed_not_lost(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root, "paper.pdf", b"%PDF-1.7\n...")
    write(root, "logo.png", b"\x89PNG\r\n\x1a\n....")
    doc = load(root)
    why = {o.source: o.reason for o in doc.skipped}
    assert why == {
        "paper.pdf": "pdf file: load it on its own to read it",
        "logo.png": "image file: load it on its own to read it",
    }


def test_extra_ignore_patterns_and_file_limit(repo: Path) -> None:
    doc = load(repo, ignore=["*.md"], max_files=2)
    assert "README.md" not in files(doc) and len(files(doc)) == 2
    assert sum(o.reason == "over the 2-file limit" for o in doc.skipped) == 4  # 6 files left after *.md


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="nope: no such file or folder"):
        load(tmp_path / "nope")
    write(tmp_path, "blob.dat", b"\x00" * 64)
    with pytest.raises(DocumentError, match=r"blob\.dat: binary content"):
        load(tmp_path / "blob.dat")


def test_languages() -> None:
    assert language_of("src/app.py") == "python" and language_of("Makefile") == "make"
    assert language_of("bin/run", "#!/usr/bin/env python3") == "python"
    assert language_of("x.hs") == "haskell" and language_of("x.unknownext") == "text"
    assert language_of("x.f90") == "fortran"  # an extension only Pygments knows


def test_signatures_keep_declarations_with_line_numbers() -> None:
    py = 'import os\n\n\n@decorator\ndef load(path: str, *,\n         strict: bool = False) -> dict:\n    """Load it."""\n    return {}\n\n\nclass Store:\n    def get(self, key):\n        return key\n'
    assert signatures(py, "python").splitlines() == [
        "L4: @decorator",
        "L5: def load(path: str, *,",
        "L6:          strict: bool = False) -> dict:",
        'L7:     """Load it."""',
        "L11: class Store:",
        "L12:     def get(self, key):",
    ]
    rust = "use std::io;\n\npub fn parse(s: &str) -> Result<Ast> {\n    let x = 1;\n}\nimpl Parser {\n"
    assert signatures(rust, "rust").splitlines() == ["L3: pub fn parse(s: &str) -> Result<Ast>", "L6: impl Parser"]
    assert (
        signatures("int main(int argc, char **argv) {\n  return helper(argc);\n}\n", "c")
        == "L1: int main(int argc, char **argv)"
    )


def test_gitignore_above_the_folder_and_builtin_junk(tmp_path: Path) -> None:
    top = tmp_path / "repo"
    (top / ".git" / "info").mkdir(parents=True)
    (top / ".git" / "info" / "exclude").write_text("*.bak\n")
    write(top, ".gitignore", "*.log\npkg/generated/\n")
    write(top, "pkg/.gitignore", "/local.txt\n")
    write(top, "pkg/a.py", "x = 1\n")
    write(top, "pkg/run.log", "noise\n")
    write(top, "pkg/old.bak", "noise\n")
    write(top, "pkg/generated/g.py", "y = 2\n")
    write(top, "pkg/__pycache__/a.cpython-311.pyc", b"\x00\x01")
    write(top, "pkg/local.txt", "ignored by the anchored rule of pkg/.gitignore\n")
    doc = load(top / "pkg")  # a subfolder: the rules of the repository above still apply
    assert files(doc) == [".gitignore", "a.py"]
    why = {o.source: o.reason for o in doc.skipped}
    assert (
        why["run.log"] == f"ignored by {top / '.gitignore'}" and why["generated/"] == f"ignored by {top / '.gitignore'}"
    )
    assert (
        why["old.bak"] == "ignored by .git/info/exclude"
        and why["__pycache__/"] == "ignored by built-in and extra patterns"
    )
    assert why["local.txt"] == "ignored by .gitignore"


def test_a_folder_its_repository_ignores_is_still_read(tmp_path: Path) -> None:
    top = tmp_path / "tooling"
    (top / ".git").mkdir(parents=True)
    write(top, ".gitignore", "versions/\n*.log\n")
    write(top, "versions/pkg/mod.py", "x = 1\n")
    write(top, "versions/pkg/debug.log", "kept: the repository's rules do not govern a folder it ignores\n")
    doc = load(top / "versions" / "pkg")
    assert files(doc) == ["debug.log", "mod.py"]
