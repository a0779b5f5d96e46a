from pathlib import Path

import pytest
from PIL import Image

from kimidoc.documents import DocumentError
from kimidoc.documents.render import crop, render_page, to_png


def test_render_page_and_region(report_pdf: Path) -> None:
    page = render_page(report_pdf, 3, dpi=72)
    assert page.size == (595, 842) and page.mode == "RGB"
    chart = render_page(report_pdf, 3, dpi=144, clip=(72, 120, 392, 360))
    assert chart.size == (640, 480)
    assert chart.convert("L").getextrema()[0] < 100  # the chart is in the clip
    with pytest.raises(DocumentError, match=r"page 5 out of range 1-4"):
        render_page(report_pdf, 5)
    with pytest.raises(DocumentError, match=r"p\.1: region .* lies outside the page"):
        render_page(report_pdf, 1, clip=(700, 900, 800, 1000))


def test_crop_zoom_and_png() -> None:
    img = Image.new("RGB", (100, 60), (255, 255, 255))
    img.paste((255, 0, 0), (40, 20, 60, 40))
    red = crop(img, (40, 20, 60, 40), zoom=3.0)
    assert red.size == (60, 60) and red.getpixel((30, 30)) == (255, 0, 0)
    assert crop(img, (-10, -10, 500, 500)).size == (100, 60)  # clamped to the image
    with pytest.raises(ValueError, match="empty"):
        crop(img, (50, 50, 50, 55))
    png = to_png(img)
    assert png.startswith(b"\x89PNG") and Image.open(__import__("io").BytesIO(png)).getpixel((50, 30)) == (255, 0, 0)
