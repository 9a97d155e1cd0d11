"""The ``embeddings`` table of a build dir: one L2-comparable vector per clip and encoder.

``tables/embeddings.parquet`` columns: ``clip_id``, ``encoder`` (an id naming the encoder and its parameters; vectors
of different encoders are never compared), ``dim`` and ``vector`` (``list<float32>``). Written by the ``embed`` stage
(``builders/stages/embed.py``), read by balancing and the leakage check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpus.errors import MissingInput
from corpus.schemas import table_path

EMBEDDINGS = pa.schema(
    [
        ("clip_id", pa.string()),
        ("encoder", pa.string()),
        ("dim", pa.int32()),
        ("vector", pa.list_(pa.float32())),
    ]
)


def embeddings_table(clip_ids: list[str], encoder: str, vectors: np.ndarray) -> pa.Table:
    """A table in the ``EMBEDDINGS`` schema from ids and an ``(n, dim)`` float32 matrix."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if len(clip_ids) != n:
        raise ValueError(f"{len(clip_ids)} clip ids for {n} vectors")
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    return pa.table(
        {
            "clip_id": pa.array(clip_ids, type=pa.string()),
            "encoder": pa.array([encoder] * n, type=pa.string()),
            "dim": pa.array(np.full(n, dim, dtype=np.int32)),
            "vector": pa.ListArray.from_arrays(offsets, flat),
        },
        schema=EMBEDDINGS,
    )


def vectors_of(table: pa.Table) -> np.ndarray:
    """The ``vector`` column as an ``(n, dim)`` float32 matrix (zero-copy where Arrow allows)."""
    if table.num_rows == 0:
        return np.zeros((0, 0), dtype=np.float32)
    dims = pc.unique(table["dim"]).to_pylist()
    if len(dims) != 1:
        raise ValueError(f"embeddings of mixed dimensions {dims}; embed with one encoder")
    col = table["vector"].combine_chunks()
    return col.flatten().to_numpy(zero_copy_only=False).reshape(table.num_rows, dims[0]).astype(np.float32, copy=False)


def encoders_in(build_dir: str | Path) -> list[str]:
    path = table_path(build_dir, "embeddings")
    if not path.exists():
        return []
    return sorted(pc.unique(pq.read_table(path, columns=["encoder"])["encoder"]).to_pylist())


def read_embeddings(build_dir: str | Path, encoder: str | None = None) -> tuple[list[str], np.ndarray, str]:
    """``(clip_ids, vectors, encoder)`` of one encoder, sorted by clip id.

    ``encoder=None`` takes the only encoder in the table and raises when there are several (name one then).
    """
    path = table_path(build_dir, "embeddings")
    if not path.exists():
        raise MissingInput(f"{path}: no embeddings table; run `surgcorpus embed --build {build_dir}` first")
    table = pq.read_table(path)
    present = sorted(pc.unique(table["encoder"]).to_pylist())
    if encoder is None:
        if len(present) != 1:
            raise MissingInput(f"{path}: holds encoders {present}; name one with --encoder")
        encoder = present[0]
    elif encoder not in present:
        raise MissingInput(f"{path}: no embeddings for encoder {encoder!r} (present: {present})")
    if len(present) > 1:
        table = table.filter(pc.equal(table["encoder"], encoder))
    ids = table["clip_id"].to_pylist()
    if any(a > b for a, b in zip(ids, ids[1:], strict=False)):  # written sorted; sort only when it is not
        table = table.sort_by("clip_id")
        ids = table["clip_id"].to_pylist()
    return ids, vectors_of(table), encoder
