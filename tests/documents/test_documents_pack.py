import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from documents_corpus import many_pages

from kimidoc.context import pack_documents, pack_paths
from kimidoc.documents import load
from kimidoc.vision.budget import image_tokens


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / ".gitignore").write_text("*.tmp\n")
    (root / "junk.tmp").write_text("ignored\n")
    body = "\n".join(f"    total += {i} * weight  # step {i} of the sum" for i in range(150))
    (root / "src" / "big.py").write_text(
        f'"""Big module."""\n\n\ndef heavy(weight: int) -> int:\n    total = 0\n{body}\n    return total\n\n\nclass Tail:\n    def end(self) -> None:\n        pass\n'
    )
    for i in range(6):
        (root / "src" / f"small{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n")
    (root / "README.md").write_text("# Proj\n\nA small project for packing tests. `code` ``` fences ``` inside.\n")
    return root


def check_exact(r, tokenizer, budget: int) -> None:
    text_tokens = tokenizer.count(r.text)
    pieces = r.to_content()
    piece_tokens = sum(tokenizer.count(p["text"]) for p in pieces if p["type"] == "text")
    img_tokens = sum(image_tokens(p.width, p.height) for p in r.images)
    assert "".join(p["text"] for p in pieces if p["type"] == "text") == r.text
    assert sum(p["type"] == "image_url" for p in pieces) == len(r.images)
    assert r.tokens == max(text_tokens, piece_tokens) + img_tokens <= budget


@pytest.mark.parametrize("fmt", ["markdown", "xml"])
def test_packed_context_fits_the_budget_exactly(tree: Path, report_pdf: Path, tokenizer, fmt: str) -> None:
    docs = [load(tree), load(report_pdf)]
    full = pack_documents(docs, 10**7, fmt=fmt, counter=tokenizer.count, image_tokens=image_tokens)
    assert full.dropped == [] and len(full.included) == 1 + 9 + 4  # tree + 9 files + 4 pages
    units = set(full.included)
    for budget in (250, 600, 1500, 3000, 6000, full.tokens - 1, full.tokens):
        r = pack_documents(docs, budget, fmt=fmt, counter=tokenizer.count, image_tokens=image_tokens)
        check_exact(r, tokenizer, budget)
        left_out = {o.source for o in r.omitted if o.action == "dropped"}
        squeezed = {o.source for o in r.omitted if o.action == "compressed"}
        assert not left_out & set(r.included)
        assert set(r.included) | left_out == units  # every unit is either in or listed as dropped
        assert squeezed <= set(r.included)
        if budget < full.tokens:
            assert left_out or squeezed
        if fmt == "xml":
            ET.fromstring(r.text)  # well-formed, whatever the content
    assert (
        pack_paths([tree, report_pdf], full.tokens, fmt, counter=tokenizer.count, image_tokens=image_tokens).text
        == full.text
    )


def test_dropped_and_compressed_are_listed_for_the_agent(tree: Path, tokenizer) -> None:
    r = pack_paths([tree], 1200, counter=tokenizer.count)
    big = next(o for o in r.omitted if o.source.startswith("src/big.py"))
    assert big.action == "compressed" and big.tokens > 1200
    assert not [o for o in r.omitted if o.action == "dropped"]  # every file fits at least as signatures
    assert "## src/big.py:1-161 (signatures only; read the rest with the document tools)" in r.text
    assert "L4: def heavy(weight: int) -> int:" in r.text and "L160:     def end(self) -> None:" in r.text
    notes = r.text.split("# Not included (read these with the document tools)\n\n", 1)[1]
    assert (
        f"- src/big.py:1-161: compressed, over the token budget; a shorter view is included (~{big.tokens:,} tokens)"
        in notes
    )
    assert "- 1 path ignored by .gitignore" in notes
    for o in r.dropped:
        assert f"- {o.source}: {o.action}, " in notes


def test_pages_left_out_are_merged_into_ranges(tmp_path: Path, tokenizer) -> None:
    path = many_pages(tmp_path / "same.pdf", 6)  # six identical pages
    doc = load(path)
    two_pages = pack_documents([load(path, pages=[1, 2])], 10**6, counter=tokenizer.count).tokens
    # the smallest budget that holds two pages and the list of the pages left out
    r = next(
        r
        for b in range(two_pages, two_pages + 600, 10)
        if len((r := pack_documents([doc], b, counter=tokenizer.count)).included) == 2
    )
    assert r.included == [f"{path} p.1", f"{path} p.2"]
    assert f"- {path} p.3-6: dropped, over the token budget" in r.text
    assert [o.source for o in r.dropped] == [f"{path} p.{n}" for n in (3, 4, 5, 6)]


def test_order_is_stable_and_prefix_friendly(tree: Path, report_pdf: Path, tokenizer) -> None:
    one = pack_paths([tree], 10**6, counter=tokenizer.count)
    two = pack_paths([tree, report_pdf], 10**6, counter=tokenizer.count)
    body = one.text.split("# Not included")[0]  # the list of omissions always comes last
    assert two.text.startswith(body) and len(body) > 500  # a later document keeps the earlier bytes (prompt cache)
    again = pack_documents(load_all := [load(tree), load(report_pdf)], 10**6, counter=tokenizer.count)
    assert again.text == two.text and len(load_all) == 2


def test_images_off_and_unreadable_paths(report_pdf: Path, tmp_path: Path, tokenizer) -> None:
    missing = tmp_path / "missing.pdf"
    r = pack_paths([missing, report_pdf], 10**6, counter=tokenizer.count, images=False)
    assert r.images == [] and "[page image] (image not included: text-only context)" in r.text
    assert f"- {missing}: skipped, no such file" in r.text
    with_images = pack_paths([report_pdf], 10**6, counter=tokenizer.count)
    assert len(with_images.images) == 2 and "](image:1 " in with_images.text and "](image:2 " in with_images.text


def test_default_counter_and_bad_arguments(tree: Path) -> None:
    r = pack_paths([tree], 2000)  # no backend: the conservative byte count every backend starts from
    assert r.tokens <= 2000 and r.tokens >= (len(r.text.encode()) + 2) // 3
    with pytest.raises(ValueError, match="unknown context format 'html'"):
        pack_paths([tree], 2000, "html")
    with pytest.raises(ValueError, match="budget must be a positive"):
        pack_paths([tree], 0)
    with pytest.raises(ValueError, match="cannot hold even the frame"):
        pack_paths([tree], 3)
