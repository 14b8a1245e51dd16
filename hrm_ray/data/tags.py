"""Ray Data UDF that labels rows with their source (kept free of torch so Ray workers that
run it start fast)."""
from __future__ import annotations

import pyarrow as pa

from hrm_ray.data.meta import TRIPLET_COLUMNS


def tag_source(batch: pa.Table, name: str, index: int) -> pa.Table:
    batch = batch.select(list(TRIPLET_COLUMNS))
    return batch.append_column("source", pa.array([name] * batch.num_rows, pa.string())) \
                .append_column("source_id", pa.array([index] * batch.num_rows, pa.int32()))
