#!/usr/bin/env python3
"""Draw homelab's favicon, a terminal prompt on a dark rounded square, as an ICO file
holding one 32x32 PNG, with the standard library only (no Pillow to install):

    python3 scripts/make_favicon.py commands/static/commands/favicon.ico

The ICO is committed; this is how it was made, to change it.
"""

import math
import struct
import sys
import zlib

N = 32
BG = (31, 59, 77)
FG = (255, 255, 255)


def seg_dist(px: float, py: float, ax: float, ay: float, bx: float, by: float) -> float:
    """The distance from (px, py) to the segment from (ax, ay) to (bx, by)."""
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def coverage(d: float, half: float) -> float:
    """How much of a pixel at distance d from a stroke's centre the stroke covers."""
    return max(0.0, min(1.0, half + 0.5 - d))


def inside_rounded(x: float, y: float, r: float = 6.0) -> float:
    """How much of the pixel at (x, y) is inside the rounded square."""
    cx = min(max(x, r), N - r)
    cy = min(max(y, r), N - r)
    return max(0.0, min(1.0, r + 0.5 - math.hypot(x - cx, y - cy)))


rows = []
for j in range(N):
    row = bytearray([0])
    for i in range(N):
        x, y = i + 0.5, j + 0.5
        a = inside_rounded(x, y)
        d = min(seg_dist(x, y, 8, 9, 15, 16), seg_dist(x, y, 15, 16, 8, 23))
        ink = max(coverage(d, 1.6), coverage(seg_dist(x, y, 17.5, 22.5, 25, 22.5), 1.4))
        r, g, b = (round(BG[k] * (1 - ink) + FG[k] * ink) for k in range(3))
        row += bytes([r, g, b, round(255 * a)])
    rows.append(bytes(row))


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", N, N, 8, 6, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
ico = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", N, N, 0, 0, 1, 32, len(png), 22)
with open(sys.argv[1], "wb") as out:
    out.write(ico + png)
