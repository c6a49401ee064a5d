"""Bad inputs of every kind, as a shard written by hand ("built elsewhere") and as raw COCO files.

Each bad sample is one of: a truncated JPEG, random bytes named .jpg, a PNG that really
decodes to 30000 x 30000 (a 110 KB decompression bomb: 2.7 GB as RGB), a sample without an
image, malformed JSON, JSON that is not UTF-8, an empty caption. Good samples include a
10,000-character caption (trained on, truncated to data.max_text_len).
"""

from __future__ import annotations

import functools
import json
import random
import struct
import zlib
from pathlib import Path

from data_pipeline.shards import FORMAT, write_index, write_tar
from fake_datasets import image_bytes

LONG_CAPTION = ("a very long caption about a red car " * 300)[:10_000]


@functools.lru_cache(maxsize=None)
def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid 1-bit grey PNG of ``width`` x ``height`` black pixels (~110 KB on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _record(key: str, caption: str) -> bytes:
    return json.dumps({"key": key, "split": "train", "image_ids": [key], "captions": [caption]}).encode()


def bad_samples() -> dict[str, tuple[list, str]]:
    """key -> (tar components, the kind a loader counts it as)."""
    rnd = random.Random(7)
    garbage = bytes(rnd.randrange(256) for _ in range(2000))
    return {
        "truncated": ([("jpg", image_bytes(1)[:300]), ("json", _record("truncated", "a cat"))], "corrupt"),
        "randombytes": ([("jpg", garbage), ("json", _record("randombytes", "a cat"))], "corrupt"),
        "noimage": ([("json", _record("noimage", "a cat"))], "corrupt"),
        "bomb": ([("png", bomb_png()), ("json", _record("bomb", "a black square"))], "too_large"),
        "badjson": ([("jpg", image_bytes(2)), ("json", b'{"key": "badjson", "image_ids": [')], "bad_record"),
        "notutf8": ([("jpg", image_bytes(3)), ("json", _record("notutf8", "a cat").replace(b"a cat", b"a \xff\xfe cat"))],
                    "bad_record"),
        "emptycaption": ([("jpg", image_bytes(4)), ("json", _record("emptycaption", ""))], "empty_text"),
    }


def expected_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, kind in bad_samples().values():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def write_bad_shards(root: Path, n_good: int = 17, split: str = "train") -> list[str]:
    """Two shards, bad samples spread among ``n_good`` good ones; returns the good keys."""
    samples = [(f"good{i:02d}", [("jpg", image_bytes(100 + i)),
                                 ("json", _record(f"good{i:02d}", LONG_CAPTION if i == 5 else f"a picture number {i}"))])
               for i in range(n_good)]
    for n, (key, (components, _)) in enumerate(bad_samples().items()):
        samples.insert(2 * n + 1, (key, components))
    root.mkdir(parents=True, exist_ok=True)
    shards, half = [], len(samples) // 2
    for n, part in enumerate((samples[:half], samples[half:])):
        tar = root / f"{split}-{n:06d}.tar"
        write_index(tar, tar.with_suffix(".idx"), write_tar(tar, part))
        shards.append({"tar": tar.name, "index": tar.with_suffix(".idx").name, "samples": len(part)})
    manifest = {"format": FORMAT, "dataset": "coco", "tasks": ["pretrain", "retrieval"], "images_per_sample": 1,
                "splits": {split: {"samples": len(samples), "shards": shards}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return [k for k, _ in samples if k.startswith("good")]


def write_bad_coco(root: Path, n_good: int = 4) -> None:
    """Raw COCO caption files (train2014) with the same bad images and texts, for build_shards."""
    images_dir = root / "train2014"
    images_dir.mkdir(parents=True)
    rnd = random.Random(7)
    files = {f"good{i}": image_bytes(200 + i) for i in range(n_good)}
    files.update(truncated=image_bytes(1)[:300], randombytes=bytes(rnd.randrange(256) for _ in range(2000)),
                 bomb=bomb_png(), emptycaption=image_bytes(4), longcaption=image_bytes(5), numbercaption=image_bytes(6))
    images, anns = [], []
    for image_id, (name, data) in enumerate(files.items(), start=1):
        file_name = f"COCO_train2014_{image_id:012d}.jpg"  # every one named .jpg, whatever it holds
        (images_dir / file_name).write_bytes(data)
        images.append({"id": image_id, "file_name": file_name})
        caption = {"emptycaption": "  ", "longcaption": LONG_CAPTION, "numbercaption": 12345}.get(name, f"a picture {name}")
        anns.append({"id": 10 * image_id, "image_id": image_id, "caption": caption})
    images.append({"id": 999, "file_name": "COCO_train2014_000000000999.jpg"})  # never downloaded
    anns.append({"id": 9990, "image_id": 999, "caption": "a missing picture"})
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_train2014.json").write_text(json.dumps({"images": images, "annotations": anns}))
