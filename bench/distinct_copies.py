#!/usr/bin/env python3
"""Distinct copies of the fixture's JPEG and PNG photos (a unique comment
in each, so no two files have the same bytes and the model's image cache
never answers for a copy)."""
import os, struct, sys, zlib
src, dst, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(dst, exist_ok=True)
for name in sorted(os.listdir(src)):
    data = open(os.path.join(src, name), "rb").read()
    stem, ext = os.path.splitext(name)
    for i in range(copies):
        tag = f"copy {i} of {name}".encode()
        if ext == ".jpg":
            com = b"\xff\xfe" + struct.pack(">H", len(tag) + 2) + tag
            out = data[:2] + com + data[2:]
        elif ext == ".png":
            body = b"tEXt" + b"Comment\0" + tag
            chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
            out = data[:33] + chunk + data[33:]  # after the 8-byte signature and IHDR
        else:
            continue
        open(os.path.join(dst, f"{stem}_{i:03d}{ext}"), "wb").write(out)
