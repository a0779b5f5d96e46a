"""Path traversal is refused by every file tool: ``../``, absolute paths outside, symlinks out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kimidoc.documents.base import Document, Part, Source
from kimidoc.tools import PathRefused, Roots, document_tools, file_tools


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def main():\n    return 'SAFE'\n")
    (root / "README.md").write_text("hello\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET-TOKEN\n")
    os.symlink(outside / "secret.txt", root / "leak.txt")  # a file symlink out of the root
    os.symlink(outside, root / "leakdir")  # a folder symlink out of the root
    os.symlink(root / "src" / "app.py", root / "alias.py")  # a symlink that stays inside is fine
    return {"root": root, "outside": outside}


ESCAPES = ["../outside/secret.txt", "src/../../outside/secret.txt", "leak.txt", "leakdir/secret.txt", "/etc/passwd"]


def _by_name(tools):  # noqa: ANN001, ANN202
    return {t.name: t for t in tools}


@pytest.mark.parametrize("path", ESCAPES)
def test_read_file_refuses_escapes(tree: dict[str, Path], path: str) -> None:
    tools = _by_name(file_tools([str(tree["root"])]))
    r = tools["read_file"](path=path)
    assert r.is_error and "outside the allowed roots" in r.text
    assert "SECRET" not in r.text and "root:" not in r.text


@pytest.mark.parametrize("path", ["..", "../outside", "leakdir", "/", "/etc"])
def test_list_files_refuses_escapes(tree: dict[str, Path], path: str) -> None:
    tools = _by_name(file_tools([str(tree["root"])]))
    r = tools["list_files"](path=path)
    assert r.is_error and "outside the allowed roots" in r.text and "secret" not in r.text


@pytest.mark.parametrize("path", ESCAPES + ["..", "leakdir"])
def test_grep_refuses_escapes(tree: dict[str, Path], path: str) -> None:
    tools = _by_name(file_tools([str(tree["root"])]))
    r = tools["grep"](pattern="SECRET", path=path)
    assert r.is_error and "outside the allowed roots" in r.text


def test_walks_do_not_follow_symlinks_out(tree: dict[str, Path]) -> None:
    tools = _by_name(file_tools([str(tree["root"])]))
    r = tools["grep"](pattern="SECRET")
    assert (
        not r.is_error and r.text == "no match for 'SECRET' in 2 file(s)"
    )  # README.md and src/app.py; links are not read
    listing = tools["list_files"](recursive=True).text
    assert "secret" not in listing
    flat = tools["list_files"]().text
    assert "leakdir -> symlink (not followed)" in flat and "leak.txt -> symlink (not followed)" in flat


def test_in_root_paths_and_in_root_symlinks_work(tree: dict[str, Path]) -> None:
    tools = _by_name(file_tools([str(tree["root"])]))
    assert "return 'SAFE'" in tools["read_file"](path="src/app.py").text
    assert "return 'SAFE'" in tools["read_file"](path="alias.py").text
    assert "return 'SAFE'" in tools["read_file"](path=str(tree["root"] / "src" / "app.py")).text
    assert tools["read_file"](path="src/../README.md").text.startswith("README.md:1-1")


def test_repository_document_reads_are_confined(tree: dict[str, Path]) -> None:
    repo = Document(
        str(tree["root"]), "repository", [Part("text", Source(str(tree["root"])), text="tree", meta={"role": "tree"})]
    )
    read = _by_name(document_tools([repo]))["read_document"]
    for path in ESCAPES:
        r = read(document=str(tree["root"]), file=path)
        assert r.is_error and "outside the allowed roots" in r.text and "SECRET" not in r.text
    assert "return 'SAFE'" in read(document="repo", file="src/app.py").text


def test_a_folder_swapped_for_a_symlink_after_the_check_is_refused(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = Roots([tree["root"]])
    checked = roots.resolve("src/app.py")  # the check passes while src is a real folder
    os.rename(tree["root"] / "src", tree["root"] / "src-real")
    (tree["outside"] / "app.py").write_text("SECRET-TOKEN\n")
    os.symlink(tree["outside"], tree["root"] / "src")
    monkeypatch.setattr(roots, "resolve", lambda path: checked)
    with pytest.raises(PathRefused):
        roots.open("src/app.py")


def test_fifos_and_nul_bytes_are_refused(tree: dict[str, Path]) -> None:
    os.mkfifo(tree["root"] / "pipe")
    roots = Roots([tree["root"]])
    with pytest.raises(PathRefused, match="not a regular file"):
        roots.open("pipe")  # and it did not hang waiting for a writer
    with pytest.raises(PathRefused, match="NUL"):
        roots.resolve("src/app.py\x00../../x")


def test_several_roots(tree: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("SAFE note\n")
    tools = _by_name(file_tools([str(tree["root"]), str(other)]))
    hits = tools["grep"](pattern="safe").text.splitlines()
    assert sorted(hits) == sorted([f"{other}/notes.txt:1: SAFE note", f"{tree['root']}/src/app.py:2: return 'SAFE'"])
    assert "SAFE note" in tools["read_file"](path="notes.txt").text
    assert tools["read_file"](path=str(tree["outside"] / "secret.txt")).is_error


def test_document_tools_only_open_the_documents_they_were_given(tree: dict[str, Path]) -> None:
    text = Document(
        str(tree["root"] / "README.md"),
        "text",
        [Part("text", Source(str(tree["root"] / "README.md"), lines=(1, 1)), text="hello\n")],
    )
    tools = _by_name(document_tools([text]))
    for name in ("../outside/secret.txt", str(tree["outside"] / "secret.txt"), "/etc/passwd", "leak.txt"):
        for call in (
            lambda n: tools["read_document"](document=n),
            lambda n: tools["render_page"](document=n),
            lambda n: tools["search_documents"](query="x", document=n),
        ):
            r = call(name)
            assert r.is_error and "no such document" in r.text and "SECRET" not in r.text
    assert "list_files" not in tools  # no folder roots were given, so no file tools
