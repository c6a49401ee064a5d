"""Images: every one the builder keeps is one both backends can train on, decoded to the 8-bit
RGB it shows, whatever its mode, bit depth or aspect ratio."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from data_pipeline.build_shards import build_shards
from data_pipeline.images import decode_image
from data_pipeline.loaders import build_loader
from data_pipeline.records import BadSample

from data_helpers import BACKENDS, assert_same_batch, make_config
from fake_datasets import write_coco
from model_helpers import tiny_model_config


def encoded(im: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def grey16() -> np.ndarray:
    """(32, 32) uint16, every value from 0 to 65535 in steps."""
    return np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)


def in_8_bits(values: np.ndarray) -> np.ndarray:
    return np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I", "TIFF")])
def test_16_bit_grey_is_scaled_to_8_bits_not_clipped(mode, fmt):
    a = grey16()
    im = Image.fromarray(a) if mode == "I;16" else Image.fromarray(a.astype(np.int32), "I")
    rgb = np.asarray(decode_image(encoded(im, fmt), 10**6))
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
    assert np.array_equal(rgb[..., 0], in_8_bits(a)) and np.array_equal(rgb[..., 0], rgb[..., 2])


def test_a_floating_point_image_is_rejected_not_clipped():
    im = Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32), "F")
    with pytest.raises(BadSample) as bad:
        decode_image(encoded(im, "TIFF"), 10**6)
    assert bad.value.kind == "corrupt" and "8-bit scale" in str(bad.value)


def _palette_with_transparency() -> tuple[Image.Image, np.ndarray]:
    colours = np.array([[250, 10, 20], [5, 200, 30], [0, 0, 255], [90, 90, 90]], dtype=np.uint8)
    index = (np.arange(32 * 32).reshape(32, 32) % 4).astype(np.uint8)
    im = Image.fromarray(index, "P")
    im.putpalette(colours.flatten().tolist())
    im.info["transparency"] = 2  # one palette entry see-through: its colour is still what it shows
    return im, colours[index]


def _mode_cases() -> dict[str, tuple[bytes, np.ndarray]]:
    """mode -> (encoded 32 x 32 image, the RGB it shows)."""
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    bits = grey > 127
    palette, palette_rgb = _palette_with_transparency()
    cmy = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    cmyk = np.concatenate([cmy, np.zeros((32, 32, 1), np.uint8)], axis=2)  # no black: RGB = 255 - CMY
    return {
        "1": (encoded(Image.fromarray(bits)), np.repeat(bits[..., None] * np.uint8(255), 3, axis=2)),
        "LA": (encoded(Image.fromarray(np.stack([grey, 255 - grey], 2), "LA")), np.repeat(grey[..., None], 3, axis=2)),
        "P+transparency": (encoded(palette, transparency=2), palette_rgb),
        "RGBA": (encoded(Image.fromarray(np.concatenate([rgb, grey[..., None]], 2), "RGBA")), rgb),
        "CMYK": (encoded(Image.fromarray(cmyk, "CMYK"), "TIFF"), 255 - cmy),
        "I;16": (encoded(Image.fromarray(grey.astype(np.uint16) * 257)), np.repeat(grey[..., None], 3, axis=2)),
    }


@pytest.mark.parametrize("mode", list(_mode_cases()))
def test_every_mode_decodes_to_the_rgb_it_shows(mode):
    data, shows = _mode_cases()[mode]
    assert np.array_equal(np.asarray(decode_image(data, 10**6)), shows)


def _raw_coco_with_images(root, images: dict[int, bytes]) -> None:
    """Fake raw COCO whose train images ``image_id -> bytes`` replace the generated ones."""
    write_coco(root)
    for image_id, data in images.items():
        (root / "train2014" / f"COCO_train2014_{image_id:012d}.jpg").write_bytes(data)


def test_both_backends_read_every_mode_as_decode_image_does(tmp_path, tokenizer):
    """Stored as they come or re-encoded, images of every mode (16-bit RGB too) decode the same in
    DALI and in PIL: all 32 x 32 and image_size 32, so neither backend resizes and pixels must match."""
    rgb16 = np.linspace(0, 65535, 32 * 32 * 3).round().astype(np.uint16).reshape(32, 32, 3)
    plain = encoded(Image.fromarray(np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    cases = [data for data, _ in _mode_cases().values()] + [_png_rgb16(rgb16), plain]
    _raw_coco_with_images(tmp_path / "raw", {i + 1: d for i, d in enumerate(cases)})
    build_shards("coco", tmp_path / "raw", tmp_path / "shards", workers=1, progress=False)
    batches = {}
    for backend in BACKENDS:
        cfg = make_config(tmp_path / "shards", "pretrain", backend, image_size=32, max_image_size=32, micro_batch_size=8)
        batches[backend] = [b for b in build_loader(cfg, "train", 0, 1, tokenizer=tokenizer, train=False)]
    [torch_batch], [dali_batch] = batches["torch"], batches["dali"]
    assert_same_batch(torch_batch, dali_batch)
    # Float rounding of the normalisation only: one 8-bit level is 1 / (255 std) > 0.01 apart.
    assert (torch_batch.images - dali_batch.images).abs().max() < 1e-4


def _png_rgb16(a: np.ndarray) -> bytes:
    """A 16-bit-per-sample RGB PNG (PIL cannot write one)."""
    import struct
    import zlib

    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("resize", [None, (24, 40)], ids=["stored-as-is", "pre-resized"])
def test_extreme_aspect_ratios_keep_a_feature_cell_on_both_backends(resize, tmp_path, tokenizer):
    from pixelbert.modeling.model import PixelBert

    wide, tall = Image.new("RGB", (4000, 1), (200, 30, 30)), Image.new("RGB", (1, 4000), (30, 200, 30))
    _raw_coco_with_images(tmp_path / "raw", {1: encoded(wide), 2: encoded(tall)})
    shorter, longer = resize or (None, None)
    manifest = build_shards("coco", tmp_path / "raw", tmp_path / "shards", workers=1, progress=False,
                            resize_shorter=shorter, resize_longer=longer)
    assert manifest["splits"]["train"]["samples"] == 8
    model = PixelBert(tiny_model_config()).eval()
    batches = {}
    for backend in BACKENDS:
        cfg = make_config(tmp_path / "shards", "pretrain", backend, micro_batch_size=8)
        [batches[backend]] = list(build_loader(cfg, "train", 0, 1, tokenizer=tokenizer, train=False))
        batch = batches[backend]
        assert len(batch.meta["keys"]) == 8
        with torch.no_grad():
            cells = model.encode_images(batch.images, batch.pixel_mask).mask
        assert bool(cells.any(dim=1).all())  # every image, the 4000 x 1 ones too, has a valid cell
    assert_same_batch(batches["torch"], batches["dali"])
