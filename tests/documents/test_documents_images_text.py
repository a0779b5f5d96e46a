import io
from pathlib import Path

import pytest
from PIL import Image

from kimidoc.documents import DocumentError, load, load_many
from kimidoc.documents.detect import decode, is_binary
from kimidoc.vision.budget import target_size


def picture(color: tuple[int, int, int], size=(120, 80)) -> Image.Image:
    img = Image.new("RGB", size, (255, 255, 255))
    img.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), color), (10, 10))
    return img


def decoded(part) -> Image.Image:
    img = Image.open(io.BytesIO(part.image))
    assert img.format == "PNG" and img.size == (part.width, part.height)
    return img.convert("RGB")


@pytest.mark.parametrize("ext,fmt", [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("bmp", "BMP")])
def test_still_images(tmp_path: Path, ext: str, fmt: str) -> None:
    path = tmp_path / f"chart.{ext}"
    picture((200, 0, 0)).save(path, format=fmt)
    doc = load(path)
    (part,) = doc.parts
    assert doc.kind == "image" and doc.meta["format"] == fmt and part.kind == "image"
    img = decoded(part)
    assert img.size == (120, 80)
    r, g, b = img.getpixel((20, 20))
    assert r > 150 and g < 60 and b < 60  # the red square survived the conversion
    assert part.source.cite() == str(path)


def test_gif_first_frame_and_tiff_pages(tmp_path: Path) -> None:
    frames = [picture(c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    (part,) = load(gif).parts
    r, g, b = decoded(part).getpixel((20, 20))
    assert r > 150 and g < 60  # the first frame, not a later one
    tif = tmp_path / "scan.tiff"
    frames[0].save(tif, save_all=True, append_images=frames[1:])
    doc = load(tif)
    assert [p.source.cite() for p in doc.parts] == [f"{tif} p.1", f"{tif} p.2", f"{tif} p.3"]
    assert decoded(doc.parts[2]).getpixel((20, 20))[2] > 150  # page 3 is the blue one


def test_svg_is_rasterised(tmp_path: Path) -> None:
    svg = tmp_path / "plot.svg"
    svg.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="50"><rect x="0" y="0" width="50" height="50" fill="#00f"/></svg>'
    )
    (part,) = load(svg).parts
    img = decoded(part)
    assert img.size == (200, 100)  # 100x50 px at 144 dpi
    assert img.getpixel((10, 10))[2] > 200 and img.getpixel((190, 10)) == (255, 255, 255)


def test_huge_image_is_stored_at_the_tower_size(tmp_path: Path) -> None:
    path = tmp_path / "poster.png"
    Image.new("RGB", (6000, 2000), (10, 20, 30)).save(path)
    (part,) = load(path).parts
    assert part.width * part.height < 6000 * 2000 and part.meta["original_size"] == (6000, 2000)
    assert (part.width, part.height) == target_size(6000, 2000)  # what the vision tower keeps


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DocumentError, match=r"broken\.png: not a readable image"):
        load(path)


def test_text_markdown_csv_json(tmp_path: Path) -> None:
    md = tmp_path / "notes.md"
    md.write_text("# Title\n\nline two\nline three\n")
    (part,) = load(md).parts
    assert part.kind == "text" and part.source.cite() == f"{md}:1-4" and part.meta["language"] == "markdown"
    csv = tmp_path / "data.csv"
    csv.write_text('name,qty\n"Smith, J",3\npipe|guy,4\n')
    (table,) = load(csv).parts
    assert table.kind == "table"
    assert table.text.splitlines() == ["| name | qty |", "|---|---|", "| Smith, J | 3 |", "| pipe\\|guy | 4 |"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n "b": }\n')
    (part,) = load(bad).parts
    assert part.text == '{"a": 1,\n "b": }\n' and part.meta["warning"].startswith("invalid JSON at line 2")
    docs = load_many([md, csv])
    assert [d.path for d in docs] == [str(md), str(csv)]


def test_decoding_and_binary_sniffing() -> None:
    assert decode("naïve".encode()) == ("naïve", "utf-8")
    assert decode("naïve".encode("utf-16")) == ("naïve", "utf-16")
    text, enc = decode("Grüße aus Köln, schöne Größe".encode("cp1252"))
    assert text == "Grüße aus Köln, schöne Größe" and enc != "utf-8"
    assert decode(b"\x81\x8d\x8f")[0]  # undecodable anywhere: Latin-1 still keeps every byte
    assert is_binary(b"abc\x00def") and not is_binary(b"plain\ttext\n") and not is_binary("x".encode("utf-16"))
    assert is_binary(bytes(range(1, 32)) * 10)
