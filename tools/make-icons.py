#!/usr/bin/env python3
"""Draws the app icons under www/ from the glyph of www/favicon.svg (a white handset on the
accent blue), with the standard library only: the path is flattened to polygons, filled by
scanlines with 4x4 supersampling, and written as a palette PNG (a few shades for the
antialiased edges), so that each file stays a few KiB and the build stores it as it is.

    python3 tools/make-icons.py        # rewrites www/icon-*.png and www/apple-touch-icon.png

Run it again only when the glyph or the colours change; the PNGs are committed, each then
recompressed losslessly by zopflipng (Debian's zopfli), which took the four from 9.2 to 7.2 KiB:

    for f in www/icon-*.png www/apple-touch-icon.png; do zopflipng -y --filters=0 "$f" "$f"; done"""
import os
import re
import struct
import zlib

BLUE = (0x1F, 0x6F, 0xEB)   # --accent of style.css, the manifest's theme_color
WHITE = (0xFF, 0xFF, 0xFF)
# The handset of favicon.svg, in its 64x64 box.
GLYPH = ("M22 14c2 0 3 1 4 3l3 7c1 2 0 4-1 5l-3 3c2 5 6 9 11 11l3-3c1-1 3-2 5-1l7 3c2 1 3 2 3 4v5"
         "c0 3-2 5-5 5C31 56 8 33 8 19c0-3 2-5 5-5z")
SS = 4          # supersampling per axis
LEVELS = 16     # shades per edge in the palette


def flatten(path):
    """The path's closed polygons as lists of (x, y), curves cut into 16 segments."""
    tokens = re.findall(r"[A-Za-z]|-?\d*\.?\d+", path)
    polys, poly, x, y, i, cmd = [], [], 0.0, 0.0, 0, None
    def num():
        nonlocal i
        i += 1
        return float(tokens[i - 1])
    while i < len(tokens):
        if tokens[i].isalpha():
            cmd = tokens[i]
            i += 1
        rel = cmd.islower()
        c = cmd.lower()
        ox, oy = (x, y) if rel else (0.0, 0.0)
        if c == "m":
            x, y = ox + num(), oy + num()
            poly = [(x, y)]
            polys.append(poly)
            cmd = "l" if rel else "L"
        elif c == "l":
            x, y = ox + num(), oy + num()
            poly.append((x, y))
        elif c == "v":
            y = (y if rel else 0.0) + num()
            poly.append((x, y))
        elif c == "h":
            x = (x if rel else 0.0) + num()
            poly.append((x, y))
        elif c == "c":
            p1 = (ox + num(), oy + num())
            p2 = (ox + num(), oy + num())
            p3 = (ox + num(), oy + num())
            for k in range(1, 17):
                t = k / 16
                u = 1 - t
                poly.append((u**3 * x + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t**3 * p3[0],
                             u**3 * y + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t**3 * p3[1]))
            x, y = p3
        elif c == "z":
            x, y = poly[0]
        else:
            raise ValueError(f"path command {cmd} not handled")
    return polys


def rounded_rect(x0, y0, size, radius):
    """A rounded square as a polygon."""
    import math
    pts = []
    for cx, cy, a0 in ((x0 + size - radius, y0 + radius, -90), (x0 + size - radius, y0 + size - radius, 0),
                       (x0 + radius, y0 + size - radius, 90), (x0 + radius, y0 + radius, 180)):
        for k in range(9):
            a = math.radians(a0 + k * 90 / 8)
            pts.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return [pts]


def coverage(polys, n):
    """Per pixel of an n x n image, the share (0..SS*SS) of its subsamples inside `polys` (even-odd)."""
    cov = [[0] * n for _ in range(n)]
    edges = [(a, b) for poly in polys for a, b in zip(poly, poly[1:] + poly[:1]) if a[1] != b[1]]
    for sy in range(n * SS):
        yy = (sy + 0.5) / SS
        xs = sorted(a[0] + (yy - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
                    for a, b in edges if min(a[1], b[1]) <= yy < max(a[1], b[1]))
        row = cov[sy // SS]
        for left, right in zip(xs[::2], xs[1::2]):
            for sx in range(max(0, int(left * SS + 0.5)), min(n * SS, int(right * SS + 0.5))):
                row[sx // SS] += 1
    return cov


def scaled(polys, scale, dx, dy):
    return [[(x * scale + dx, y * scale + dy) for x, y in poly] for poly in polys]


def icon(n, background, glyph_box):
    """An n-pixel icon: `background` is a polygon list (None: the whole square), the glyph fills
    `glyph_box` (a share of the side) around the centre. Returns rows of palette indices and the palette."""
    g = glyph_box * n / 64
    glyph = coverage(scaled(flatten(GLYPH), g, (n - 64 * g) / 2, (n - 64 * g) / 2), n)
    back = coverage(background, n) if background else None
    full = SS * SS
    # Palette: transparent-to-blue shades, then blue-to-white shades.
    palette, alpha = [], []
    for k in range(LEVELS):
        palette.append(BLUE)
        alpha.append(round(255 * k / (LEVELS - 1)))
    for k in range(1, LEVELS):
        t = k / (LEVELS - 1)
        palette.append(tuple(round(b + (w - b) * t) for b, w in zip(BLUE, WHITE)))
        alpha.append(255)
    rows = []
    for y in range(n):
        row = bytearray()
        for x in range(n):
            a = back[y][x] if back else full
            w = glyph[y][x]
            if w and a == full:
                row.append(LEVELS - 1 + round(w * (LEVELS - 1) / full))
            else:
                row.append(round(a * (LEVELS - 1) / full))
        rows.append(bytes(row))
    opaque = background is None
    return rows, palette, None if opaque else alpha


def png(path, n, rows, palette, alpha):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + r for r in rows)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", n, n, 8, 3, 0, 0, 0))
    body += chunk(b"PLTE", b"".join(bytes(c) for c in palette))
    if alpha:
        body += chunk(b"tRNS", bytes(alpha))
    body += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(body)
    print(f"{path}: {len(body)} bytes")


def main():
    www = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "www")
    # purpose "any": the favicon's rounded square (radius 14 of 64), transparent corners.
    for n in (192, 512):
        rows, pal, alpha = icon(n, rounded_rect(0, 0, n, n * 14 / 64), 1.0)
        png(os.path.join(www, f"icon-{n}.png"), n, rows, pal, alpha)
    # maskable: full bleed, the glyph inside the central safe circle (80 % of the side).
    rows, pal, alpha = icon(512, None, 0.7)
    png(os.path.join(www, "icon-maskable-512.png"), 512, rows, pal, alpha)
    # iOS rounds the corners itself and shows transparency as black: full bleed.
    rows, pal, alpha = icon(180, None, 0.9)
    png(os.path.join(www, "apple-touch-icon.png"), 180, rows, pal, alpha)


if __name__ == "__main__":
    main()
