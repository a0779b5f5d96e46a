"""Fit documents into a token budget, exactly, and say what did not fit.

Documents are cut into units (a file, a PDF page, an image frame) and taken greedily in the order
given: a unit that fits goes in whole; one that does not is replaced by its signatures-only view
when it is source code and that fits; otherwise it is dropped, and later, smaller units may still
fit. Everything left out is listed at the end of the output (and in :attr:`PackResult.omitted`) so
the agent can read it through tools. The order never depends on sizes, so the same inputs give the
same bytes, and a document's position in the output is stable when later ones change.

The budget is exact for the counter given: the final text is rendered and counted as one string
(and as the separate text pieces :meth:`PackResult.to_content` sends), plus the image tokens;
units are removed from the end until that total is within the budget.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kimidoc.context.formats import Block, Renderer, mergeable, omission_lines, unit_cite
from kimidoc.documents.base import Document, DocumentError, Omission, Part, Source
from kimidoc.documents.passages import part_source
from kimidoc.documents.signatures import signatures
from kimidoc.messages import estimate_tokens, image_part
from kimidoc.progress import progress
from kimidoc.vision.budget import image_tokens as k26_image_tokens

TokenCounter = Callable[[str], int]
ImageTokens = Callable[[int, int], int]
OVER_BUDGET = "over the token budget"
COMPRESSED = f"{OVER_BUDGET}; a shorter view is included"


@dataclass
class PackResult:
    """A packed context: the text (with image markers), the images it refers to, its exact token
    count, and everything that was left out or compressed, with reasons."""

    text: str
    images: list[Part]  # image parts in marker order (marker i is images[i - 1])
    tokens: int  # counted with the packer's counter, images included
    budget: int
    format: str
    included: list[str] = field(default_factory=list)  # citations of the units in the context
    omitted: list[Omission] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)  # the text of each image marker, in order
    sources: list[Source] = field(default_factory=list)  # the source of every part included in full

    @property
    def dropped(self) -> list[Omission]:
        """What the packer left out for the budget (not what loaders skipped)."""
        return [o for o in self.omitted if o.action in ("dropped", "compressed")]

    def to_content(self) -> list[dict[str, Any]]:
        """OpenAI content parts: the text cut after each image marker, with that image inline."""
        out: list[dict[str, Any]] = []
        for piece, n in _pieces(self.text, self.markers):
            if piece:
                out.append({"type": "text", "text": piece})
            if n:
                out.append(image_part(self.images[n - 1].image or b""))
        return out


@dataclass
class _Unit:
    doc: int  # index of its document
    seq: int  # position among all units, for listing omissions in document order
    cite: str
    block: Block
    cost: int  # tokens of block.text + its images
    compressed: bool = False
    full_cost: int = 0
    group: list[Part] = field(default_factory=list)


def pack_documents(
    documents: Iterable[Document],
    budget: int,
    *,
    fmt: str = "markdown",
    counter: TokenCounter | None = None,
    image_tokens: ImageTokens | None = None,
    backend: Any = None,
    images: bool = True,
    line_numbers: bool = False,
    omitted_lines: int = 400,
) -> PackResult:
    """Pack already-loaded ``documents`` into ``budget`` tokens (see :func:`pack_paths`)."""
    return _pack(
        ((d, d.parts) for d in documents),
        budget,
        fmt=fmt,
        counter=counter,
        image_tokens=image_tokens,
        backend=backend,
        images=images,
        line_numbers=line_numbers,
        omitted_lines=omitted_lines,
    )


def pack_paths(
    paths: Sequence[str | os.PathLike[str]],
    budget: int,
    fmt: str = "markdown",
    *,
    counter: TokenCounter | None = None,
    image_tokens: ImageTokens | None = None,
    backend: Any = None,
    password: str | None = None,
    images: bool = True,
    line_numbers: bool = False,
    omitted_lines: int = 400,
    **load_options: Any,
) -> PackResult:
    """Load ``paths`` (files or folders, in priority order) and pack them into ``budget`` tokens.

    ``counter``/``image_tokens`` count text and images; by default they come from ``backend``
    (``backend.count_tokens``, ``backend.image_tokens``), and without one from the conservative
    byte-based count every backend starts from and K2.6's image formula. PDFs stream page by page,
    so only what is packed is held in memory. A path that cannot be read is listed as omitted with
    the reason. ``images=False`` keeps only image captions (for text-only output). ``load_options``
    go to :func:`kimidoc.documents.load` (``dpi``, ``ignore``, ``max_file_bytes``...).
    """
    return _pack(
        _stream(paths, password, load_options),
        budget,
        fmt=fmt,
        counter=counter,
        image_tokens=image_tokens,
        backend=backend,
        images=images,
        line_numbers=line_numbers,
        omitted_lines=omitted_lines,
    )


def counters(
    counter: TokenCounter | None = None, image_tokens: ImageTokens | None = None, backend: Any = None
) -> tuple[TokenCounter, ImageTokens]:
    """The text and image token counters to use: explicit ones, else the backend's, else defaults
    (~3 bytes a token, never under; K2.6's image formula)."""
    if backend is not None:
        return counter or backend.count_tokens, image_tokens or backend.image_tokens
    return counter or estimate_tokens, image_tokens or k26_image_tokens


def _stream(
    paths: Sequence[str | os.PathLike[str]], password: str | None, options: dict[str, Any]
) -> Iterator[tuple[Document, Iterable[Part]]]:
    from kimidoc.documents import load
    from kimidoc.documents.detect import kind_of

    for path in progress(paths, desc="packing", unit="path", total=len(paths)):
        name = os.fspath(path)
        p = Path(path)
        try:
            if p.is_file() and kind_of(p) == "pdf":
                from kimidoc.documents.pdf import iter_pdf_parts

                doc = Document(name, "pdf")
                pdf_opts = {k: v for k, v in options.items() if k in ("pages", "dpi", "render_pages", "engine")}
                parts = iter_pdf_parts(
                    p, password=password, display=name, skipped=doc.skipped, meta=doc.meta, **pdf_opts
                )
                first = next(parts, None)  # opens the file now, so a bad one is reported here
                yield doc, _chain(first, parts)
            else:
                doc = load(path, password=password, **options)
                yield doc, doc.parts
        except (DocumentError, OSError) as exc:
            yield Document(name, "error", meta={"skipped": [Omission(name, str(exc).removeprefix(f"{name}: "))]}), ()


def _chain(first: Part | None, rest: Iterator[Part]) -> Iterator[Part]:
    if first is not None:
        yield first
    yield from rest


def _units(parts: Iterable[Part], images: bool = True) -> Iterator[list[Part]]:
    """Consecutive parts of one file and page form a unit (a PDF page, a source file, a frame);
    without ``images``, image parts become their captions."""
    group: list[Part] = []
    for part in parts:
        if part.kind == "image" and not images:
            part = _caption_only(part)
        if group and (part.source.path, part.source.page) != (group[0].source.path, group[0].source.page):
            yield group
            group = []
        group.append(part)
    if group:
        yield group


def _pack(
    streams: Iterable[tuple[Document, Iterable[Part]]],
    budget: int,
    *,
    fmt: str,
    counter: TokenCounter | None,
    image_tokens: ImageTokens | None,
    backend: Any,
    images: bool,
    line_numbers: bool,
    omitted_lines: int,
) -> PackResult:
    if budget <= 0:
        raise ValueError(f"budget must be a positive number of tokens, got {budget}")
    count, image_count = counters(counter, image_tokens, backend)
    r = Renderer(fmt, line_numbers=line_numbers)
    docs: list[Document] = []
    doc_cost: list[int] = []
    chosen: list[_Unit] = []
    drops: list[tuple[int, int, Omission]] = []  # (document, unit sequence, omission): sorted for output
    used = count(r.preamble() + r.postamble())
    n_images = 0
    seq = 0
    list_cost = 0  # tokens the list of omissions will take, kept up to date as it grows
    last: Omission | None = None

    def block_cost(block: Block) -> int:
        return count(block.text) + sum(image_count(p.width, p.height) for p in block.images)

    def note(omissions: list[Omission]) -> None:
        nonlocal list_cost, last
        if not list_cost:
            list_cost = count(r.omitted_header() + r.omitted_footer())
        if len(omissions) == 1 and last is not None and mergeable(last, omissions[0]):
            return  # a page range grows; its line stays
        list_cost += sum(count(r.omitted_item(line)) for line in omission_lines(omissions))
        last = omissions[-1]

    def take(unit: _Unit) -> None:
        nonlocal used, n_images
        if unit.block.images and unit.block.first_image != n_images + 1:
            unit.block = r.unit(unit.group, n_images + 1)  # earlier images were dropped: renumber
            unit.cost = unit.full_cost = block_cost(unit.block)
        used += unit.cost + (doc_cost[unit.doc] if not chosen or chosen[-1].doc != unit.doc else 0)
        chosen.append(unit)
        n_images += len(unit.block.images)
        if unit.compressed:
            drop(unit.doc, unit.seq, Omission(unit.cite, COMPRESSED, "compressed", unit.full_cost))

    def drop(i: int, k: int, o: Omission) -> None:
        drops.append((i, k, o))
        note([o])

    def line_cost(o: Omission) -> int:
        return count(r.omitted_item(omission_lines([o])[0]))

    for doc, parts in streams:
        i = len(docs)
        docs.append(doc)
        doc_cost.append(count(r.doc_open(doc) + r.doc_close(doc)))
        if doc.skipped:
            note(doc.skipped)
        if isinstance(parts, list):
            groups = list(_units(parts, images))
            header = doc_cost[i]
            blocks: list[Block] = []
            next_image = n_images + 1
            for g in groups:
                blocks.append(r.unit(g, next_image))
                next_image += len(blocks[-1].images)
            full = [block_cost(b) for b in blocks]
            if used + header + sum(full) + list_cost <= budget:
                for k, g in enumerate(groups):
                    take(_Unit(i, seq + k + 1, unit_cite(g[0]), blocks[k], full[k], full_cost=full[k], group=g))
            else:
                # Not everything fits: plan the whole document, so that every file keeps at least
                # its signatures before any file is taken in full.
                room = budget - used - (list_cost or count(r.omitted_header() + r.omitted_footer()))
                for unit_or_drop in _plan(groups, blocks, full, i, seq, header, room, r, block_cost, line_cost):
                    take(unit_or_drop) if isinstance(unit_or_drop, _Unit) else drop(i, unit_or_drop[0], unit_or_drop[1])
            seq += len(groups)
            continue
        for group in _units(parts, images):
            seq += 1
            block = r.unit(group, n_images + 1)
            unit = _Unit(i, seq, unit_cite(group[0]), block, block_cost(block))
            unit.full_cost, unit.group = unit.cost, group
            header = doc_cost[i] if not chosen or chosen[-1].doc != i else 0
            if used + header + unit.cost + list_cost > budget:
                view = _compressed_view(group)
                if view:
                    small = r.unit(group, n_images + 1, compressed=view)
                    unit = _Unit(i, seq, unit.cite, small, block_cost(small), compressed=True, full_cost=unit.cost)
            if used + header + unit.cost + list_cost > budget:
                drop(i, seq, Omission(unit.cite, OVER_BUDGET, "dropped", unit.full_cost))
                continue
            take(unit)

    # Make room for the list of what was left out, then check the real count of the real text;
    # units leave from the end, so the image markers of those that stay keep their numbers.
    while True:
        omitted = [
            o for i in range(len(docs)) for o in [d[2] for d in sorted(x for x in drops if x[0] == i)] + docs[i].skipped
        ]
        text, imgs, markers = _assemble(r, docs, chosen, omitted, omitted_lines)
        pieces_cost = sum(count(piece) for piece, _ in _pieces(text, markers)) if imgs else 0
        total = max(count(text), pieces_cost) + sum(image_count(p.width, p.height) for p in imgs)
        if total <= budget:
            break
        if not chosen:
            if omitted_lines == 0:
                raise ValueError(
                    f"a budget of {budget} tokens cannot hold even the frame of the context ({total} tokens)"
                )
            omitted_lines //= 2  # even the list of what was left out is too long: shorten it
            continue
        deficit = total - budget
        while chosen and deficit > 0:
            unit = chosen.pop()
            deficit -= unit.cost + (doc_cost[unit.doc] if not chosen or chosen[-1].doc != unit.doc else 0)
            drops[:] = [d for d in drops if d[1] != unit.seq]
            drops.append((unit.doc, unit.seq, Omission(unit.cite, OVER_BUDGET, "dropped", unit.full_cost)))
    sources = [part_source(docs[u.doc], p) for u in chosen if not u.compressed for p in u.group]
    return PackResult(text, imgs, total, budget, fmt, [u.cite for u in chosen], omitted, markers, sources)


def _plan(
    groups: list[list[Part]],
    blocks: list[Block],
    full: list[int],
    doc: int,
    seq: int,
    header: int,
    room: int,
    r: Renderer,
    block_cost: Callable[[Block], int],
    line_cost: Callable[[Omission], int],
) -> list[Any]:
    """Decide a whole in-memory document: start from every unit at its shortest (signatures, or
    dropped when it has none), then take units in full, in order, while they fit in ``room``;
    if even the short views do not fit, drop them from the end. Returns, in order, the units to
    take and ``(sequence, omission)`` pairs for the rest."""
    n = len(groups)
    cites = [unit_cite(g[0]) for g in groups]
    small_blocks = [(r.unit(g, 1, compressed=v) if (v := _compressed_view(g)) else None) for g in groups]
    small = [block_cost(b) if b is not None else 0 for b in small_blocks]
    squeezed = [Omission(cites[k], COMPRESSED, "compressed", full[k]) for k in range(n)]
    dropped = [Omission(cites[k], OVER_BUDGET, "dropped", full[k]) for k in range(n)]

    def cost(k: int, state: str) -> int:
        if state == "full":
            return full[k]
        if state == "compressed":
            return small[k] + line_cost(squeezed[k])
        return line_cost(dropped[k])

    state = ["compressed" if small_blocks[k] is not None else "dropped" for k in range(n)]
    costs = [cost(k, state[k]) for k in range(n)]
    total = header + sum(costs)
    for k in range(n):
        delta = full[k] - costs[k]
        if total + delta <= room or delta <= 0:
            state[k], costs[k], total = "full", full[k], total + delta
    for k in reversed(range(n)):
        if total <= room:
            break
        if state[k] != "dropped":
            c = cost(k, "dropped")
            state[k], total, costs[k] = "dropped", total - costs[k] + c, c
    out: list[Any] = []
    for k in range(n):
        if state[k] == "full":
            out.append(_Unit(doc, seq + k + 1, cites[k], blocks[k], full[k], full_cost=full[k], group=groups[k]))
        elif state[k] == "compressed":
            out.append(_Unit(doc, seq + k + 1, cites[k], small_blocks[k], small[k], compressed=True, full_cost=full[k]))  # type: ignore[arg-type]
        else:
            out.append((seq + k + 1, dropped[k]))
    return out


def _assemble(
    r: Renderer, docs: list[Document], chosen: list[_Unit], omitted: list[Omission], omitted_lines: int
) -> tuple[str, list[Part], list[str]]:
    out = [r.preamble()]
    imgs: list[Part] = []
    markers: list[str] = []
    k = 0
    while k < len(chosen):
        doc = docs[chosen[k].doc]
        out.append(r.doc_open(doc))
        while k < len(chosen) and docs[chosen[k].doc] is doc:
            out.append(chosen[k].block.text)
            imgs.extend(chosen[k].block.images)
            markers.extend(chosen[k].block.markers)
            k += 1
        out.append(r.doc_close(doc))
    out.append(r.omitted(omitted, limit=omitted_lines))
    out.append(r.postamble())
    return "".join(out), imgs, markers


def _pieces(text: str, markers: Sequence[str]) -> list[tuple[str, int]]:
    """``text`` cut right after each image marker: (piece, 1-based image index or 0 for none)."""
    out: list[tuple[str, int]] = []
    pos = 0
    for n, marker in enumerate(markers, 1):
        at = text.find(marker, pos)
        if at < 0:
            raise AssertionError(f"image marker {marker!r} missing from the packed text")
        end = at + len(marker)
        out.append((text[pos:end], n))
        pos = end
    out.append((text[pos:], 0))
    return out


def _compressed_view(group: list[Part]) -> str | None:
    """A smaller stand-in for a unit: a precomputed one (a repository's folder-only tree), or the
    signatures of a source file; None when there is nothing smaller that still says something."""
    if len(group) != 1:
        return None
    part = group[0]
    if "compressed" in part.meta:
        return part.meta["compressed"]
    lang = part.meta.get("language")
    if part.kind != "text" or lang in (None, "text", "csv", "json"):
        return None
    view = signatures(part.text, lang)
    return view or None


def _caption_only(part: Part) -> Part:
    return Part("text", part.source, text=f"{part.text} (image not included: text-only context)", meta=dict(part.meta))
