"""Token triplets (encoder_ids, decoder_input_ids, labels) from tokenized documents.

The target never enters the encoder: a prompt_response sample's encoder reads only the
prompt; a continuation window's encoder reads only the context before the continuation.
decoder_input_ids = BOS + target, labels = target + EOS (same length).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from hrm_ray.errors import UserError


@dataclass(frozen=True)
class TripletConfig:
    max_seq_len: int
    encoder_len: int
    decoder_len: int
    bos_id: int
    eos_id: int

    @classmethod
    def build(cls, max_seq_len: int, encoder_len: int | None, decoder_len: int | None,
              bos_id: int, eos_id: int) -> TripletConfig:
        """Defaults split a continuation window evenly; the decoder side includes BOS/EOS."""
        if max_seq_len < 2:
            raise UserError(f"--max-seq-len must be >= 2, got {max_seq_len}")
        encoder_len = encoder_len or max_seq_len // 2
        decoder_len = decoder_len or max(1, max_seq_len // 2 - 1)
        if not 1 <= encoder_len <= max_seq_len:
            raise UserError(f"--encoder-len must be in [1, --max-seq-len={max_seq_len}], got {encoder_len}")
        if not 1 <= decoder_len <= max_seq_len - 1:
            raise UserError(f"--decoder-len must be in [1, --max-seq-len - 1 = {max_seq_len - 1}], got {decoder_len}")
        return cls(max_seq_len, encoder_len, decoder_len, bos_id, eos_id)


Triplet = tuple[list[int], list[int], list[int]]


def gather_lists(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                 prefix: int | None = None, suffix: int | None = None) -> pa.ListArray:
    """list<int32> rows `[prefix] + values[start:start + length] + [suffix]`, built with one
    vectorised gather (no Python loop over rows or tokens)."""
    has_prefix = prefix is not None
    out_len = lengths.astype(np.int64) + has_prefix + (suffix is not None)
    offsets = np.zeros(len(out_len) + 1, np.int64)
    np.cumsum(out_len, out=offsets[1:])
    src = np.arange(offsets[-1], dtype=np.int64)
    src += np.repeat(starts.astype(np.int64) - offsets[:-1] - has_prefix, out_len)
    if has_prefix:
        src[offsets[:-1]] = len(values)
    if suffix is not None:
        src[offsets[1:] - 1] = len(values) + 1
    padded = np.concatenate([values.astype(np.int32, copy=False), np.array([prefix or 0, suffix or 0], np.int32)])
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(padded[src]))


def triplet_arrays(cfg: TripletConfig, values: np.ndarray, enc_start: np.ndarray, enc_len: np.ndarray,
                   tgt_start: np.ndarray, tgt_len: np.ndarray) -> dict[str, pa.ListArray]:
    """decoder_input_ids = BOS + target, labels = target + EOS."""
    return {"encoder_ids": gather_lists(values, enc_start, enc_len),
            "decoder_input_ids": gather_lists(values, tgt_start, tgt_len, prefix=cfg.bos_id),
            "labels": gather_lists(values, tgt_start, tgt_len, suffix=cfg.eos_id)}


def continuation_windows(cfg: TripletConfig, starts: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Windows of documents in one token array (document i is `values[starts[i]:][:lengths[i]]`): non-overlapping
    windows of encoder_len + decoder_len tokens, each split into a context (encoder) and its
    continuation (decoder). A shorter last window keeps the same ratio; a piece of fewer than 2
    tokens makes no sample. Returns per window: doc, enc_start, enc_len, tgt_start, tgt_len."""
    lengths = lengths.astype(np.int64)
    window = cfg.encoder_len + cfg.decoder_len
    per_doc = -(-lengths // window)
    doc = np.repeat(np.arange(len(lengths)), per_doc)
    first_window = np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
    offset = (np.arange(len(doc)) - first_window) * window
    piece = np.minimum(window, lengths[doc] - offset)
    keep = piece >= 2
    doc, offset, piece = doc[keep], offset[keep], piece[keep]
    n_ctx = np.where(piece == window, cfg.encoder_len, np.maximum(1, piece * cfg.encoder_len // window))
    n_ctx = np.minimum(n_ctx, piece - 1)
    start = starts.astype(np.int64)[doc] + offset
    return {"doc": doc, "enc_start": start, "enc_len": n_ctx, "tgt_start": start + n_ctx, "tgt_len": piece - n_ctx}


def prompt_response_windows(cfg: TripletConfig, prompt_start: np.ndarray, prompt_len: np.ndarray,
                            response_start: np.ndarray, response_len: np.ndarray) -> dict[str, np.ndarray]:
    """Encoder = the prompt's last max_seq_len tokens (the question sits at the end); decoder =
    the response's first max_seq_len - 1 tokens; `truncated` marks samples that lost tokens."""
    limit = cfg.max_seq_len - 1
    enc_len = np.minimum(prompt_len, cfg.max_seq_len)
    return {"enc_start": prompt_start + prompt_len - enc_len, "enc_len": enc_len,
            "tgt_start": response_start, "tgt_len": np.minimum(response_len, limit),
            "truncated": (prompt_len > cfg.max_seq_len) | (response_len > limit)}


def _as_lists(cfg: TripletConfig, values: list[int], w: dict[str, np.ndarray]) -> list[Triplet]:
    arrays = triplet_arrays(cfg, np.asarray(values, np.int32), w["enc_start"], w["enc_len"],
                            w["tgt_start"], w["tgt_len"])
    return list(zip(*(arrays[k].to_pylist() for k in ("encoder_ids", "decoder_input_ids", "labels")), strict=True))


def prompt_response_triplet(cfg: TripletConfig, prompt: list[int], response: list[int]) -> tuple[Triplet, bool]:
    """One prompt/response pair as a triplet (see `prompt_response_windows`), and whether it was truncated."""
    w = prompt_response_windows(cfg, np.array([0]), np.array([len(prompt)]), np.array([len(prompt)]),
                                np.array([len(response)]))
    return _as_lists(cfg, prompt + response, w)[0], bool(w["truncated"][0])


def continuation_triplets(cfg: TripletConfig, ids: list[int]) -> list[Triplet]:
    """One document's continuation triplets (see `continuation_windows`)."""
    return _as_lists(cfg, ids, continuation_windows(cfg, np.array([0]), np.array([len(ids)])))
