"""Preprocessing: sizes, token counts, patch layout, colour modes, EXIF, and bad input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from kimidoc.vision import budget
from kimidoc.vision.images import ImageError, decode_image, peek_size
from kimidoc.vision.preprocess import preprocess, preprocess_frames
from kimidoc.vision.tower import tokens_of


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def _content(inputs, index: int) -> torch.Tensor:
    """Entry ``index`` reassembled as a [3, H, W] image from its patches."""
    t, rows, cols = inputs.grid_thw[index].tolist()
    start = sum(int(g.prod()) for g in inputs.grid_thw[:index])
    patches = inputs.pixel_values[start : start + t * rows * cols][: rows * cols]
    return patches.view(rows, cols, 3, 14, 14).permute(2, 0, 3, 1, 4).reshape(3, rows * 14, cols * 14)


def test_mixed_batch_token_counts_follow_the_formula_and_never_upscale():
    sizes = [(1, 2000), (4000, 30), (640, 480), (20, 10), (3000, 2000), (28, 28), (57, 1)]
    images = [Image.new("RGB", s, (200, 100, 50)) for s in sizes]
    inputs = preprocess(images)
    assert inputs.tokens_per_image == [budget.image_tokens(w, h) for w, h in sizes]
    assert tokens_of(inputs.grid_thw) == inputs.tokens_per_image
    assert inputs.pixel_values.shape == (int(inputs.grid_thw.prod(-1).sum()), 3, 14, 14)
    for i, (w, h) in enumerate(sizes):
        image = _content(inputs, i)
        tw, th = budget.target_size(w, h)
        assert tw <= w and th <= h
        # The resized colour fills exactly the target area; the padding is black (-1 after scaling).
        expected = torch.tensor([200, 100, 50]).float().div(255).sub(0.5).div(0.5)
        torch.testing.assert_close(image[:, :th, :tw].mean((1, 2)), expected, atol=2e-2, rtol=0)
        assert (image[:, th:, :] == -1).all() and (image[:, :, tw:] == -1).all()
    # 1x2000 and 20x10 are not upscaled: their pixels are kept one to one.
    assert budget.target_size(1, 2000) == (1, 2000) and budget.target_size(20, 10) == (20, 10)


def test_patches_are_raster_ordered_channels_first():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(56, 84, 3), dtype=np.uint8)  # 4x6 patches, no resize
    inputs = preprocess([Image.fromarray(array)])
    assert inputs.grid_thw.tolist() == [[1, 4, 6]]
    expected = torch.from_numpy(array).float().div(255).sub(0.5).div(0.5)
    # patch (row 1, col 2) is patch index 1*6+2, laid out [channel, y, x]
    torch.testing.assert_close(inputs.pixel_values[8], expected[14:28, 28:42].permute(2, 0, 1))
    torch.testing.assert_close(_content(inputs, 0), expected.permute(2, 0, 1))


def test_large_image_is_bicubic_downscaled_like_pillow():
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, size=(7500, 300, 3), dtype=np.uint8)  # taller than 512 patches
    inputs = preprocess([array_image := Image.fromarray(array)])
    tw, th = budget.target_size(300, 7500)
    assert th == 7168 and tw < 300
    reference = np.array(array_image.resize((tw, th), Image.Resampling.BICUBIC))
    got = _content(inputs, 0)[:, :th, :tw].permute(1, 2, 0).mul(0.5).add(0.5).mul(255).round()
    assert torch.equal(got.to(torch.uint8), torch.from_numpy(reference))


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (80, 40), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 40, 40))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    upright = decode_image(_jpeg(image, exif=exif.tobytes()))
    assert upright.size == (40, 80)
    pixels = np.asarray(upright).mean(axis=2)
    assert pixels[:35].mean() > 240 and pixels[45:].mean() < 15  # the white half is now on top
    # A damaged EXIF block costs the orientation, not the image.
    broken = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\xff\xff\xff\xff\x00\x06\x00\x00"
    with pytest.warns(UserWarning):
        assert decode_image(_jpeg(image, exif=broken)).size == (80, 40)


@pytest.mark.parametrize(
    "image, expected",
    [
        (Image.new("RGBA", (28, 28), (0, 0, 0, 0)), (255, 255, 255)),  # transparent black -> white
        (Image.new("RGBA", (28, 28), (255, 0, 0, 255)), (255, 0, 0)),
        (Image.new("LA", (28, 28), (0, 0)), (255, 255, 255)),
        (Image.new("L", (28, 28), 77), (77, 77, 77)),
        (Image.new("1", (28, 28), 1), (255, 255, 255)),
        (Image.new("CMYK", (28, 28), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.new("I;16", (28, 28), 65535), (255, 255, 255)),
        (Image.new("I;16", (28, 28), 32896), (128, 128, 128)),  # scaled, not clipped to 255
        (Image.new("I", (28, 28), 65535), (255, 255, 255)),
        (Image.new("F", (28, 28), 0.5), (128, 128, 128)),
        (Image.new("YCbCr", (28, 28), (255, 128, 128)), (255, 255, 255)),
    ],
    ids=lambda v: v.mode if isinstance(v, Image.Image) else None,
)
def test_colour_modes_become_rgb(image, expected):
    rgb = decode_image(image)
    assert rgb.mode == "RGB" and rgb.size == image.size
    assert tuple(int(v) for v in np.asarray(rgb)[5, 5]) == pytest.approx(expected, abs=1)


def test_palette_with_transparency_and_16bit_png_roundtrip():
    pal = Image.new("P", (28, 28), 0)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.paste(1, (0, 0, 14, 28))
    pal.info["transparency"] = 0  # index 0 (black) is transparent
    rgb = np.asarray(decode_image(_png(pal)))
    assert tuple(rgb[3, 3]) == (10, 20, 30) and tuple(rgb[3, 20]) == (255, 255, 255)
    deep = Image.fromarray(np.full((28, 28), 4000, dtype=np.uint16))  # 16-bit greyscale PNG
    assert np.asarray(decode_image(_png(deep)))[0, 0, 0] == round(4000 * 255 / 65535)


def _bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bad_inputs_raise_clear_errors_naming_the_file(tmp_path):
    good = Image.new("RGB", (300, 200), (9, 9, 9))
    png, jpg = _png(good), _jpeg(good)
    cases = {
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpg[: len(jpg) // 2],
        "notes.png": b"this is not an image at all",
        "empty.jpg": b"",
        "bomb.png": _bomb_png(100_000, 100_000),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageError, match=name.replace(".", r"\.")) as info:
            preprocess([good, path])
        assert isinstance(info.value, ValueError)  # caught with bad documents, which are ValueErrors too
    assert "decompression bomb" in str(_raises(tmp_path / "bomb.png"))
    with pytest.raises(ImageError, match="no such image file"):
        preprocess([tmp_path / "missing.png"])


def _raises(path):
    with pytest.raises(ImageError) as info:
        decode_image(path)
    return info.value


def test_pixel_limit_and_zero_size(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png(Image.new("RGB", (200, 100))))
    with pytest.raises(ImageError, match=r"big\.png.*20,000 pixels exceeds the limit of 10,000"):
        preprocess([path], max_pixels=10_000)
    assert preprocess([path], max_pixels=20_000).tokens_per_image == [budget.image_tokens(200, 100)]
    with pytest.raises(ImageError, match=r"<image 1>: image has no pixels \(0x0\)"):
        preprocess([Image.new("RGB", (5, 5)), Image.new("RGB", (0, 0))])
    with pytest.raises(ImageError, match=r"<bytes 0>: not an image"):
        preprocess([b"\x00\x01garbage"])


def test_frame_chunks():
    frames = [Image.new("RGB", (100, 60), (i * 20, 0, 0)) for i in range(9)]
    inputs = preprocess_frames(frames)
    assert inputs.grid_thw.tolist() == [[4, 6, 8], [4, 6, 8], [1, 6, 8]]
    assert inputs.tokens_per_image == [12, 12, 12]
    assert sum(inputs.tokens_per_image) == budget.frames_tokens(100, 60, 9)
    with pytest.raises(ImageError, match="frame is 50x60"):
        preprocess_frames([frames[0], Image.new("RGB", (50, 60))])


def test_peek_size_budgets_without_decoding(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(_png(Image.new("RGB", (1240, 1754), (255, 255, 255))))
    assert peek_size(path) == (1240, 1754)
    assert budget.image_tokens(*peek_size(path)) == preprocess([path]).tokens_per_image[0]
    # A header promising 10^10 pixels is answered from the header, and refused.
    with pytest.raises(ImageError, match="decompression bomb"):
        peek_size(_bomb_png(100_000, 100_000))
