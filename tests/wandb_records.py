"""Read an offline W&B run's ``run-<id>.wandb`` file: the records W&B itself wrote, decoded with W&B's own
protobuf schema (``wandb.proto.wandb_internal_pb2.Record``).

wandb 0.19 and later dropped its Python reader of these files (the Go core writes and syncs them), so the
framing, LevelDB's log format that W&B uses (32 KiB blocks of records with a 7-byte header: CRC32, length,
type FULL/FIRST/MIDDLE/LAST, after a 7-byte file header ``:W&B``, 0xBEE1, version), is unpacked here and the
checksums are verified.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32768
RECORD_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _chunks(data: bytes) -> Iterator[bytes]:
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"not a W&B transaction log (header {ident!r}, {magic:#x})")
    position, pending = 7, b""
    while position + RECORD_HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < RECORD_HEADER:  # a block's tail too short for a header is padding
            position += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[position : position + RECORD_HEADER])
        if kind == 0 and length == 0:
            position += left
            continue
        chunk = data[position + RECORD_HEADER : position + RECORD_HEADER + length]
        expected = zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF
        if checksum != expected:
            raise ValueError(f"bad checksum at byte {position}")
        position += RECORD_HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def records(path: Path) -> list[Any]:
    """Every ``Record`` of the file, in order."""
    from wandb.proto import wandb_internal_pb2

    out = []
    for chunk in _chunks(Path(path).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        out.append(record)
    return out


def history(path: Path) -> list[dict[str, Any]]:
    """The logged rows (``run.log`` calls), values decoded from JSON, nested keys joined with "/"."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    (item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def config(path: Path) -> dict[str, Any]:
    """The run's config (every ``config`` record's updates, merged)."""
    merged: dict[str, Any] = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                merged[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return merged


def run_record(path: Path, wait_s: float = 30.0) -> Any:
    """The file's ``run`` record. W&B's core process writes the file after ``finish()`` returns in the same
    process (on a loaded machine, seconds later): wait up to ``wait_s`` for it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            found = [r.run for r in records(path) if r.WhichOneof("record_type") == "run"]
        except (OSError, ValueError, struct.error):  # not there yet, or cut mid-record
            found = []
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if not found:
        raise ValueError(f"{path}: no run record")
    return found[0]


def run_id(path: Path) -> str:
    """The run id of the file's ``run`` record."""
    return run_record(path).run_id


def display_name(path: Path) -> str:
    """The run's display name in the W&B UI (its ``run`` record)."""
    return run_record(path).display_name
