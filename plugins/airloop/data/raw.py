"""The raw zone: source objects copied into the lake byte for byte, as received, before anything parses them.

In: the source objects chosen for a batch (:class:`airloop.data.sources.SourceObject`) and their destination
URIs under ``raw/<batch>/``. Out: one manifest entry per object ({"uri", "raw_uri", "sha256", "bytes", and
"data": the bytes when asked to keep them for in-memory parsing}). Copies are streamed (never read whole into
memory) and atomic; names are checked before the first byte is copied, so a key that would escape the lake or
two objects that would share one name copy nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from airloop.data import sources
from airloop.store import lake as lk

UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.=-]")


def raw_name(relative: str) -> list[str]:
    """Lake path segments for a source object's relative path; ``..`` (escaping the lake) is refused and
    other unusual characters become ``_``."""
    segs = [s for s in relative.split("/") if s not in ("",)]
    if not segs or any(s in (".", "..") for s in segs):
        raise lk.LakeError(
            f"source object key {relative!r}: expected a path inside the source prefix, found a '..' or '.' "
            "segment that would escape the lake; nothing was copied"
        )
    return [_safe_segment(s) for s in segs]


def _safe_segment(segment: str) -> str:
    """``segment`` itself when every character is safe; else the unsafe ones as ``_`` plus ``--`` and 8 hex
    of the sha256 of the original, before the extension, so ``a b.csv`` and ``a_b.csv`` cannot collide."""
    safe = UNSAFE_CHARS.sub("_", segment)
    if safe == segment:
        return segment
    tag = hashlib.sha256(segment.encode()).hexdigest()[:8]
    stem, dot, ext = safe.rpartition(".")
    return f"{stem}--{tag}.{ext}" if dot and stem else f"{safe}--{tag}"


def refuse_collisions(chosen: list[sources.SourceObject], dests: list[str]) -> None:
    """LakeError (nothing copied) if two source objects would land on one raw name: one's bytes would be lost."""
    seen: dict[str, str] = {}
    for obj, dest in zip(chosen, dests, strict=True):
        if dest in seen:
            raise lk.LakeError(
                f"source objects {seen[dest]!r} and {obj.uri!r}: both map to raw name {dest!r}; expected distinct "
                "names, so nothing was copied (rename one of them)"
            )
        seen[dest] = obj.uri


def copy_raw(obj: sources.SourceObject, dest: str, keep_bytes: bool, connection: dict | None) -> dict:
    """Stream one source object to ``dest`` (atomic); returns its manifest entry (and its bytes if small)."""
    kept: list[bytes] = []

    def chunks(stream) -> Iterator[bytes]:
        for chunk in sources.iter_chunks(stream):
            if keep_bytes:
                kept.append(chunk)
            yield chunk

    with sources.open_object(obj.uri, connection) as stream:
        _, sha, size = lk.write_stream(dest, chunks(stream))
    return {
        "uri": obj.uri,
        "raw_uri": dest,
        "sha256": sha,
        "bytes": size,
        "data": b"".join(kept) if keep_bytes else None,
    }


def keep_superseded(raw_uri: str, sha256: str | None, previous: dict) -> None:
    """A rerun whose source bytes changed keeps the bytes received before next to the new ones."""
    old = next((s for s in previous.get("sources", []) if s.get("raw_uri") == raw_uri), None)
    if old and sha256 and old.get("sha256") != sha256 and lk.exists(raw_uri):
        lk.move(raw_uri, f"{raw_uri}.superseded-{old['sha256'][:12]}")


def copy_batch(
    chosen: list[sources.SourceObject],
    dests: list[str],
    keep_bytes: bool,
    manifest_uri: str,
    connection: dict | None,
) -> list[dict]:
    """Copy each chosen object to its destination; returns their manifest entries (see :func:`copy_raw`).

    Nothing is copied when two objects would share a destination. ``manifest_uri`` is the batch's manifest:
    on a rerun whose bytes changed, the bytes it records are kept beside the new ones (:func:`keep_superseded`).
    """
    refuse_collisions(chosen, dests)
    previous = lk.read_json(manifest_uri) if lk.exists(manifest_uri) else {}
    copied = []
    for obj, dest in zip(chosen, dests, strict=True):
        # Straight to the raw name when nothing is there (the usual first ingest: no second copy of a large
        # file); a rerun copies beside it first, to keep the earlier bytes if they differ.
        landing = dest + ".incoming" if lk.exists(dest) else dest
        entry = copy_raw(obj, landing, keep_bytes, connection)
        if landing != dest:
            keep_superseded(dest, entry["sha256"], previous)
            lk.move(landing, dest)
        entry["raw_uri"] = dest
        copied.append(entry)
    return copied
