"""Token triplets (encoder_ids, decoder_input_ids, labels) from tokenized documents.

The target never enters the encoder: a prompt_response sample's encoder reads only the
prompt; a continuation window's encoder reads only the context before the continuation.
decoder_input_ids = BOS + target, labels = target + EOS (same length).
"""
from __future__ import annotations

from dataclasses import dataclass

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


def target_pair(cfg: TripletConfig, target: list[int]) -> tuple[list[int], list[int]]:
    return [cfg.bos_id, *target], [*target, cfg.eos_id]


def prompt_response_triplet(cfg: TripletConfig, prompt: list[int], response: list[int]) -> tuple[Triplet, bool]:
    """Encoder = prompt (its last max_seq_len tokens: the question sits at the end);
    decoder = response (its first max_seq_len - 1 tokens). Returns (triplet, truncated)."""
    limit = cfg.max_seq_len - 1
    truncated = len(prompt) > cfg.max_seq_len or len(response) > limit
    encoder = prompt[-cfg.max_seq_len:]
    dec_in, labels = target_pair(cfg, response[:limit])
    return (encoder, dec_in, labels), truncated


def continuation_triplets(cfg: TripletConfig, ids: list[int]) -> list[Triplet]:
    """Non-overlapping windows of encoder_len + decoder_len tokens, each split into a context
    (encoder) and its continuation (decoder). A shorter last window keeps the same ratio;
    fewer than 2 tokens make no sample."""
    window = cfg.encoder_len + cfg.decoder_len
    out: list[Triplet] = []
    for start in range(0, len(ids), window):
        piece = ids[start:start + window]
        if len(piece) < 2:
            break
        n_ctx = cfg.encoder_len if len(piece) == window else max(1, len(piece) * cfg.encoder_len // window)
        n_ctx = min(n_ctx, len(piece) - 1)
        dec_in, labels = target_pair(cfg, piece[n_ctx:])
        out.append((piece[:n_ctx], dec_in, labels))
    return out
