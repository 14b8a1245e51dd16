"""Token ids outside the model's vocabulary, caught where batches are collated on the CPU: an embedding
lookup would fail far less clearly (an IndexError on CPU, a device-side assert on GPU)."""
from __future__ import annotations

from typing import Any

from hrm_ray.data.ingest import IGNORE_INDEX, TripletCollate
from hrm_ray.errors import UserError
from hrm_ray.train.data_feed import Batch

TOKEN_FIELDS = ("encoder_ids", "decoder_input_ids", "labels")


def check_token_ids(batch: Batch, vocab_size: int, sources: list[str]) -> None:
    """Every token id of a collated CPU batch within [0, vocab_size) (labels may be IGNORE_INDEX); the error
    names the dataset (the row's source in a mixture) and the field. A few reductions per batch, no sync."""
    for name in TOKEN_FIELDS:
        ids = batch[name]
        bad = (ids >= vocab_size) | ((ids < 0) & (ids != IGNORE_INDEX) if name == "labels" else (ids < 0))
        if bool(bad.any()):
            row, col = (int(i) for i in bad.nonzero()[0])
            source = sources[int(batch["source_id"][row])] if "source_id" in batch and len(sources) > 1 else sources[0]
            raise UserError(f"{source}: field '{name}' holds token id {int(ids[row, col])}, outside the model's "
                            f"vocabulary [0, {vocab_size}) (vocab_size of its meta.json); re-prepare the data with "
                            f"its tokenizer")


class CheckedTripletCollate(TripletCollate):
    """TripletCollate that rejects token ids outside the vocabulary, where batches are still on the CPU."""

    def __init__(self, pad_id: int, max_seq_len: int | None, vocab_size: int, sources: list[str]):
        super().__init__(pad_id, max_seq_len)
        self.vocab_size, self.sources = vocab_size, sources

    def __call__(self, batch: dict[str, Any]) -> Batch:
        out = super().__call__(batch)
        check_token_ids(out, self.vocab_size, self.sources)
        return out
