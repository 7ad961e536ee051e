"""The golden pairs an export writes (``rmserve.artifact.golden``): the pairs the export check
scored, their texts and token ids, the torch fp32 rewards it compared against, and the dtype's
tolerance (the export check's own bound, ``TOLERANCES``). The validation pairs are a few dozen
at most (``validation_texts``: 24, plus the edge cases), short and long interleaved."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rmserve.artifact.golden import GoldenPair, GoldenSet, GoldenTolerance
from rmserve.text.prepared import PreparedPair
from rmserve_training.export.check import REFERENCE, TOLERANCES

GoldenExample = tuple[tuple[str, str], PreparedPair]  # (prompt, response) and its tokens
MAX_GOLDEN_PAIRS = 64  # what a load check and each canary run score, at most


def export_tolerance(dtype: str) -> GoldenTolerance:
    bound = TOLERANCES[dtype]
    return GoldenTolerance(
        atol=bound.atol, rtol=bound.rtol, basis=f"the {dtype} export check's bound"
    )


def golden_pair(example: GoldenExample, reward: np.ndarray) -> GoldenPair:
    (prompt, response), pair = example
    value = np.asarray(reward, dtype=np.float64)
    return GoldenPair(
        prompt=prompt,
        response=response,
        input_ids=pair.input_ids.tolist(),
        token_type_ids=pair.token_type_ids.tolist(),
        truncated=pair.truncated,
        response_truncated=pair.response_truncated,
        reward=value.tolist() if value.ndim else float(value),
    )


def export_golden(
    examples: Sequence[GoldenExample],
    reference: np.ndarray,
    dtype: str,
    tolerance: GoldenTolerance | None = None,
) -> GoldenSet:
    """Golden pairs from the export's validation pairs and their torch fp32 rewards
    (``reference``: [N], or [N, K] for an ensemble), at the dtype's export tolerance unless
    ``tolerance`` is given."""
    if len(examples) != len(reference):
        raise ValueError(f"{len(reference)} reference rewards for {len(examples)} pairs")
    kept = range(min(len(examples), MAX_GOLDEN_PAIRS))
    return GoldenSet(
        reference=REFERENCE,
        dtype=dtype,  # type: ignore[arg-type]  # one of TOLERANCES' keys, checked by pydantic
        tolerance=tolerance or export_tolerance(dtype),
        pairs=[golden_pair(examples[i], reference[i]) for i in kept],
    )
