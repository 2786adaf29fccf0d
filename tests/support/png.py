"""Reading PNG files in tests without an imaging library: chunks, CRCs, the pixel data."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


@dataclass(frozen=True)
class Png:
    width: int
    height: int
    # Filtered scanlines (one filter byte each), decompressed and length-checked.
    raw: bytes


def parse_png(data: bytes) -> Png:
    """Check a PNG the way a decoder does (signature, chunk CRCs, IHDR first, IEND last,
    image data of exactly the right size) and return its size and scanlines."""
    assert data.startswith(SIGNATURE), data[:16]
    pos = len(SIGNATURE)
    chunks: list[tuple[bytes, bytes]] = []
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8 and interlace == 0, (depth, interlace)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(raw) == height * (1 + width * _CHANNELS[colour])
    return Png(width, height, raw)
