"""Deterministic train/val assignment by a hash of the document id (all samples of a
document land in the same split, so windows of one text never straddle train and val)."""
from __future__ import annotations

import hashlib


def is_val(doc_id: str, val_ratio: float, seed: int) -> bool:
    if val_ratio <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}\x00{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < val_ratio


def split_of(doc_id: str, val_ratio: float, seed: int) -> str:
    return "val" if is_val(doc_id, val_ratio, seed) else "train"
