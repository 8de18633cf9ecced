"""Getting an image from a message into RGB pixels, under limits. Every refusal is a PoisonError."""

from __future__ import annotations

import io
import stat
import warnings
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, ImageOps, UnidentifiedImageError

from contracts.models import ImageRef

from workers.runtime.errors import PoisonError
from workers.runtime.settings import Settings

# Pillow's own bomb guard would raise DecompressionBombError at 2x its limit and only warn below;
# we check the declared size ourselves (settings.max_image_pixels) before decoding anything.
Image.MAX_IMAGE_PIXELS = None


def image_bytes(ref: ImageRef, s: Settings) -> bytes:
    """The encoded bytes of an image reference (inline or by URI)."""
    if ref.data is not None:
        data = ref.data
    elif ref.uri is not None and ref.uri.startswith("file://"):
        data = _read_file_uri(ref.uri, s)
    elif ref.uri is not None and ref.uri.startswith(("https://", "http://", "s3://")):  # fetch.py decides
        from workers.media.fetch import fetch_image  # PoisonError for refusals; FetchUnavailable (retried) for outages

        data = fetch_image(ref.uri, s)
    else:
        raise PoisonError(f"image uri {str(ref.uri)[:200]!r}: unsupported scheme (https://, s3:// or file://)",
                          category="image_fetch")
    if len(data) > s.max_image_bytes:
        raise PoisonError(f"image is {len(data)} bytes, over the {s.max_image_bytes}-byte limit", category="bad_image")
    return data


def _read_file_uri(uri: str, s: Settings) -> bytes:
    if s.image_root is None:
        raise PoisonError("file:// images are disabled (LOOKSTREAM_IMAGE_ROOT is not set)", category="image_fetch")
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise PoisonError(f"file:// uri with a host is not allowed: {uri[:200]!r}", category="image_fetch",
                          public="file:// uri with a host is not allowed")
    raw_path = unquote(parsed.path)
    if "\x00" in raw_path:
        raise PoisonError("image path contains a NUL byte", category="image_fetch")
    root = Path(s.image_root).resolve()
    path = Path(raw_path).resolve()

    def refuse(detail: str, public: str, category: str = "image_fetch") -> PoisonError:
        # the sender sees what went wrong, never where the server keeps its files
        return PoisonError(detail, category=category, public=public)

    if not path.is_relative_to(root):
        raise refuse(f"image path {path} is outside the allowed root {root}", "image path is outside the allowed root")
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise refuse(f"image path is a directory: {path}", "image path is a directory")
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block the worker (or never end)
            raise refuse(f"image path is not a regular file: {path}", "image path is not a regular file")
        if st.st_size > s.max_image_bytes:
            raise PoisonError(f"image file is {st.st_size} bytes, over the {s.max_image_bytes}-byte limit",
                              category="bad_image")
        with path.open("rb") as f:
            return f.read(s.max_image_bytes + 1)  # a file growing after the stat is caught by image_bytes
    except FileNotFoundError:
        raise refuse(f"image file not found: {path}", "image file not found") from None
    except IsADirectoryError:
        raise refuse(f"image path is a directory: {path}", "image path is a directory") from None
    except PermissionError:
        raise refuse(f"image file not readable: {path}", "image file not readable") from None


def decode_image(data: bytes, s: Settings) -> Image.Image:
    """Decode to RGB with EXIF orientation applied. Checks format and declared size before decoding."""
    if not data:
        raise PoisonError("image is empty (0 bytes)", category="bad_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "?"
            if fmt == "MPO" and "JPEG" in s.allowed_image_formats:
                fmt = "JPEG"  # a multi-picture JPEG (what many phones write): its first frame is a JPEG
            if fmt not in s.allowed_image_formats:
                raise PoisonError(f"image format {fmt} not allowed (allowed: {', '.join(s.allowed_image_formats)})",
                                  category="bad_image")
            w, h = img.size
            if w * h > s.max_image_pixels:
                raise PoisonError(f"image is {w}x{h} = {w * h} pixels, over the {s.max_image_pixels}-pixel limit",
                                  category="bad_image")
            if min(w, h) < s.min_image_side:
                raise PoisonError(f"image is {w}x{h}; both sides must be at least {s.min_image_side} pixels",
                                  category="bad_image")
            img.seek(0)  # animated images: the first frame
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except PoisonError:
        raise
    except UnidentifiedImageError:
        raise PoisonError("not a recognised image (unknown or corrupt header)", category="bad_image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PoisonError(f"corrupt or truncated image: {e}", category="bad_image") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bits
        import numpy as np

        a = np.asarray(img, dtype=np.float64)
        hi = a.max() or 1.0
        img = Image.fromarray((a * (255.0 / hi)).astype("uint8"), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))  # product shots: transparent means white
        return Image.alpha_composite(bg, img).convert("RGB")
    return img.convert("RGB")


def load_image(ref: ImageRef, s: Settings) -> Image.Image:
    return decode_image(image_bytes(ref, s), s)
