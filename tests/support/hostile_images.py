"""Hostile images for the hostile-input corpus (tests/hostile.py): encodings, forged sizes, bombs, corrupt
bytes, EXIF, animation, odd modes, and documents that are not images. The scenes follow the declared test
model's colour rule (modeltools/colour_probe.py): a saturated red block on grey is "Upper-clothes", blue "Pants".
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

GREY = (150, 150, 150)
RED = (220, 20, 20)
BLUE = (20, 40, 220)


def scene(size=(96, 128), block=RED, mode="RGB", box=None) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, GREY)
    if block is not None:
        x0, y0, x1, y1 = box or (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
        img.paste(block, (x0, y0, x1, y1))
    return img if mode == "RGB" else img.convert(mode)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def jpeg(img=None, **kw) -> bytes:
    return encode(img or scene(), "JPEG", quality=90, **kw)


def png(img=None, **kw) -> bytes:
    return encode(img or scene(), "PNG", **kw)


def webp(img=None, **kw) -> bytes:
    return encode(img or scene(), "WEBP", quality=90, **kw)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_raw(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand (16-bit RGB, forged headers)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rows, 9))
            + _png_chunk(b"IEND", b""))


def png_rgb48() -> bytes:
    w, h = 96, 128
    rows = bytearray()
    for y in range(h):
        rows.append(0)
        for x in range(w):
            inside = w // 4 <= x < 3 * w // 4 and h // 4 <= y < 3 * h // 4
            r, g, b = (RED if inside else GREY)
            rows += struct.pack(">HHH", r * 257, g * 257, b * 257)
    return png_raw(w, h, 16, 2, bytes(rows))


def png_forged_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR declares a huge size (CRC recomputed, so only the size is a lie)."""
    data = bytearray(png(scene((32, 32))))
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def jpeg_forged_size(width: int, height: int) -> bytes:
    data = bytearray(jpeg(scene((32, 32))))
    i = data.find(b"\xff\xc0")
    if i < 0:
        raise AssertionError("no SOF0 marker")
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_forged_size() -> bytes:
    """A lossless WebP whose VP8L header declares 16384 x 16384 (268 MP)."""
    data = bytearray(encode(scene((32, 32)), "WEBP", lossless=True))
    i = data.find(b"VP8L")
    assert data[i + 8] == 0x2F
    bits = struct.unpack("<I", data[i + 9 : i + 13])[0]
    bits = (bits & ~((1 << 28) - 1)) | 0x3FFF | (0x3FFF << 14)
    data[i + 9 : i + 13] = struct.pack("<I", bits)
    return bytes(data)


def png_flat_bomb(side: int) -> bytes:
    """side x side grey pixels, a few kilobytes on the wire: decoded it is side^2 bytes (and more, as RGB)."""
    rows = (b"\x00" + b"\x96" * side) * side
    return png_raw(side, side, 8, 0, rows)


def corrupt(data: bytes, start: int, n: int = 16) -> bytes:
    b = bytearray(data)
    for k in range(start, min(start + n, len(b))):
        b[k] ^= 0xA5
    return bytes(b)


def exif_rotated() -> bytes:
    """Stored 64 wide x 128 tall with Orientation 6: shown (and segmented) as 128 x 64."""
    img = scene((64, 128))
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg(img, exif=exif.tobytes())


def exif_garbage() -> bytes:
    """A valid JPEG with an APP1 'Exif' segment full of garbage (the pixels are fine)."""
    data = jpeg()
    junk = b"Exif\x00\x00II*\x00" + b"\xff\x00\x13\x37" * 40
    app1 = b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk
    return data[:2] + app1 + data[2:]


def animated(fmt: str) -> bytes:
    frames = [scene(block=RED), scene(block=BLUE), scene(block=None)]
    kw = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt == "GIF":
        frames = [f.convert("P") for f in frames]
        kw["append_images"] = frames[1:]
    return encode(frames[0], fmt, **kw)


def cmyk_jpeg() -> bytes:
    return jpeg(scene().convert("CMYK"))


def rgba_png() -> bytes:
    img = Image.new("RGBA", (96, 128), (0, 0, 0, 0))  # transparent -> white background: no garment there
    img.paste((*RED, 255), (24, 32, 72, 96))
    return png(img)


def palette_png(transparency: bool) -> bytes:
    img = scene().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    if transparency:
        return png(img, transparency=0)
    return png(img)


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">' \
      b'<rect width="64" height="64" fill="red"/><script>alert(1)</script></svg>'
HTML = b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>"
PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
