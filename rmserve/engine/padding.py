"""A batch of prepared pairs → the ONNX feed: right-padded ids, attention mask, token types."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rmserve.text.preprocess import PreparedPair


def pad_batch(
    pairs: Sequence[PreparedPair], pad_token_id: int, input_names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Right-pad a batch into the ONNX feed. Padded cost is longest x count."""
    if not pairs:
        raise ValueError("cannot pad an empty batch")
    lengths = np.fromiter((p.num_tokens for p in pairs), dtype=np.int64, count=len(pairs))
    real = np.arange(int(lengths.max())) < lengths[:, None]  # [rows, width], row-major
    ids = np.full(real.shape, pad_token_id, dtype=np.int64)
    ids[real] = np.concatenate([p.input_ids for p in pairs])
    types = np.zeros(real.shape, dtype=np.int64)
    if "token_type_ids" in input_names:
        types[real] = np.concatenate([p.token_type_ids for p in pairs])
    mask = real.astype(np.int64)
    available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    unknown = [name for name in input_names if name not in available]
    if unknown:
        raise ValueError(f"model inputs {unknown} are not produced by rmserve preprocessing")
    return {name: available[name] for name in input_names}
