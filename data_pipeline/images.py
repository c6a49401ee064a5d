"""Image checks and transforms shared by the shard builder and both loader backends.

``target_size`` reproduces DALI's ``fn.resize(resize_shorter=S, max_size=L)`` output size
exactly (checked against DALI in the tests), so the torch backend makes tensors of the
same shape as the DALI backend and padded batches line up. Neither rounds a side down to
zero pixels, so an image of any aspect ratio (4000 x 1) keeps at least one feature cell.

Every PIL mode decodes to the 8-bit RGB it shows: 16-bit grey is scaled (as DALI scales
16-bit PNGs), palettes are looked up, alpha is dropped (as DALI drops it), CMYK and 1-bit
are converted; floating-point images, which have no defined 8-bit scale, are ``corrupt``.
The builder stores only plain 8-bit RGB or grey files as they come (see ``encode_for_shard``).
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from data_pipeline.records import BadSample

__all__ = ["IMAGE_EXTS", "decode_image", "oriented_rgb", "target_size", "image_to_tensor", "resized_uint8",
           "normalize_images", "encode_for_shard"]

# Formats stored as they come; anything else is re-encoded to PNG at build time, so that
# every stored image is one both DALI's decoders and PIL read the same way.
IMAGE_EXTS = ("jpg", "png")


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Fully decode ``data`` to an RGB image, EXIF orientation applied (as DALI does).

    Raises BadSample("too_large") above ``max_pixels`` -- checked from the header, before
    any pixel is decoded -- and BadSample("corrupt") for anything PIL cannot decode
    completely (garbage, truncated files).
    """
    with warnings.catch_warnings():
        # PIL only warns below 2x its own limit; we decide from our limit, before decoding.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:
            raise BadSample("too_large", "PIL decompression bomb limit") from None
        except Exception as e:  # PIL raises many types for unreadable data
            raise BadSample("corrupt", f"unreadable image ({type(e).__name__})") from None
        w, h = im.size
        if w * h > max_pixels:
            raise BadSample("too_large", f"{w}x{h} pixels > {max_pixels}")
        if w < 1 or h < 1:
            raise BadSample("corrupt", f"empty image {w}x{h}")
        try:
            im.load()
            return oriented_rgb(im)
        except BadSample:
            raise
        except Image.DecompressionBombError:
            raise BadSample("too_large", "PIL decompression bomb limit") from None
        except Exception as e:
            raise BadSample("corrupt", f"undecodable image ({type(e).__name__}: {e})") from None


def oriented_rgb(im: Image.Image) -> Image.Image:
    """A decoded image -> what the model sees of it before resizing: EXIF orientation applied, 8-bit RGB.

    ``decode_image`` ends with it; an image a caller already holds (``pixelbert.Processor``) goes through it too.
    """
    return _to_rgb(ImageOps.exif_transpose(im))


def _to_rgb(im: Image.Image) -> Image.Image:
    """A decoded image of any mode -> 8-bit RGB, scaled rather than clipped."""
    if im.mode.startswith("I"):  # 16-bit grey ("I;16*"; "I" from older PNG readers and TIFF)
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise BadSample("corrupt", f"mode {im.mode} values outside 0..65535: no defined 8-bit scale")
        # round(v * 255 / 65535), as DALI converts 16-bit PNGs
        grey = ((a.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "F":
        raise BadSample("corrupt", "floating-point image: no defined 8-bit scale")
    if im.mode in ("P", "PA"):  # palette transparency becomes alpha (then dropped), without PIL's warning
        im = im.convert("RGBA")
    elif im.mode == "La":  # premultiplied alpha: PIL reaches RGB from it only by way of LA
        im = im.convert("LA")
    return im.convert("RGB")


def target_size(h: int, w: int, shorter: int, longer: int) -> tuple[int, int]:
    """(h, w) after resizing so the shorter side is ``shorter`` and the longer at most ``longer``.

    Same arithmetic as DALI's resize (round half up on the computed side, at least one pixel).
    """
    short, long = min(h, w), max(h, w)
    new_short, new_long = float(shorter), shorter * long / short
    if new_long > longer:
        new_short, new_long = longer * short / long, float(longer)
    new_short, new_long = max(1, math.floor(new_short + 0.5)), max(1, math.floor(new_long + 0.5))
    return (new_short, new_long) if h <= w else (new_long, new_short)


def image_to_tensor(im: Image.Image, shorter: int, longer: int, mean, std) -> torch.Tensor:
    """(3, h, w) float: resized keeping aspect ratio (bilinear, antialiased), normalised."""
    return normalize_images(resized_uint8(im, shorter, longer), mean, std)


def resized_uint8(im: Image.Image, shorter: int, longer: int) -> torch.Tensor:
    """(3, h, w) uint8: resized keeping aspect ratio (bilinear, antialiased), not yet normalised.

    Resized in float and rounded back to 0..255, as DALI resizes uint8 images to uint8; a quarter
    of the float image's bytes for a loader that normalises on the GPU.
    """
    x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, H, W)
    th, tw = target_size(x.shape[1], x.shape[2], shorter, longer)
    if (th, tw) != tuple(x.shape[1:]):
        x = F.interpolate(x[None].float(), size=(th, tw), mode="bilinear", antialias=True, align_corners=False)[0]
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x


def normalize_images(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (..., 3, h, w) -> float32 (x - 255 mean) / (255 std), on x's device."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(3, 1, 1) * 255.0
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device).view(3, 1, 1) * 255.0
    return (x.float() - mean_t) / std_t


def encode_for_shard(
    data: bytes, max_pixels: int, shorter: int | None = None, longer: int | None = None
) -> tuple[bytes, str, tuple[int, int]]:
    """Validate one source image and return (bytes to store, extension, (w, h) stored).

    The original bytes are kept when they are a plain 8-bit RGB/grey JPEG or PNG (no palette,
    alpha, transparency or 16-bit samples, which DALI and PIL could read differently) and no
    pre-resize applies; otherwise the image is re-encoded from ``decode_image``'s RGB (JPEG
    quality 95 when it came as JPEG, else PNG), which also bakes in the EXIF orientation.
    """
    rgb = decode_image(data, max_pixels)  # raises BadSample for corrupt / too large
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(data))  # passed decode_image: only the header is read again
    # 8 bits a sample (the tile's raw mode is the mode), read before getexif() loads the pixels
    plain = im.mode in ("RGB", "L") and "transparency" not in im.info and (
        im.format == "JPEG" or (im.format == "PNG" and all(t.args == im.mode for t in im.tile)))
    w, h = rgb.size
    size = (w, h)
    if shorter is not None:
        th, tw = target_size(h, w, shorter, longer or 10**9)
        if th * tw < h * w:  # pre-resize only ever shrinks
            rgb = rgb.resize((tw, th), Image.BICUBIC, reducing_gap=None)
            size = (tw, th)
    oriented = im.getexif().get(0x0112, 1) != 1
    if size == (w, h) and not oriented and plain:
        return data, "jpg" if im.format == "JPEG" else "png", size
    buf = io.BytesIO()
    if im.format == "JPEG":
        rgb.save(buf, "JPEG", quality=95)
        return buf.getvalue(), "jpg", size
    rgb.save(buf, "PNG")
    return buf.getvalue(), "png", size
