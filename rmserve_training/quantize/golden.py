"""The golden pairs of an int8 artifact: the fp32 source's pairs and reference rewards (torch
fp32), at a tolerance the quantised graph earns on them.

Static int8 moves rewards far more than the fp32 bound allows (fixed scales round every
matmul's inputs), so the int8 tolerance is measured: ``INT8_MARGIN`` times the candidate's
largest |Δ| against the reference over the golden pairs, never under the source's own bound. The
rounding is deterministic (the scales are fixed at calibration), so a machine that runs the same
kernels reproduces the same |Δ|; the margin leaves room for another CPU's integer kernels. The
source is first checked against its own golden pairs: a source that already drifted gives no
reference to quantise against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from rmserve.artifact.golden import GoldenSet, GoldenTolerance
from rmserve.engine.session import LoadedArtifact
from rmserve.serving.golden import GoldenDrift, GoldenPairs, GoldenReport, compare, golden_pairs
from rmserve_training.quantize.gates import QuantizeError
from rmserve_training.quantize.measure import CPU, run_batch

INT8_MARGIN = 2.0


@dataclass(frozen=True)
class Int8Golden:
    golden: GoldenSet
    report: GoldenReport  # the candidate against the reference, at the int8 tolerance


def session_rewards(
    session: ort.InferenceSession, golden: GoldenPairs, pad_token_id: int
) -> np.ndarray:
    out = np.empty(golden.reference.shape, dtype=np.float64)
    for batch in golden.batches:
        out[batch] = run_batch(session, [golden.pairs[i] for i in batch], pad_token_id)
    return out


def int8_tolerance(max_abs_diff: float, source: GoldenTolerance) -> GoldenTolerance:
    return GoldenTolerance(
        atol=max(INT8_MARGIN * max_abs_diff, source.atol),
        rtol=0.0,
        basis=f"int8: {INT8_MARGIN:g}× the quantised graph's max |Δ| on these pairs at "
        f"quantize time, {max_abs_diff:.2e}",
    )


def int8_golden(
    source: LoadedArtifact,
    source_session: ort.InferenceSession,
    candidate: ort.InferenceSession,
) -> Int8Golden | None:
    """The int8 artifact's golden pairs; None when the source carries none."""
    if source.golden is None:
        return None
    pad_id = source.manifest.preprocessing.pad_token_id
    try:
        golden = golden_pairs(source)
    except GoldenDrift as e:
        raise QuantizeError(f"{source.folder}: {e}") from e
    assert golden is not None  # source.golden is set
    own = compare(golden, session_rewards(source_session, golden, pad_id), CPU)
    if not own.ok:
        raise QuantizeError(f"{source.folder}: the fp32 source fails its own {own.describe()}")
    ours = session_rewards(candidate, golden, pad_id)
    measured = compare(golden, ours, CPU).max_abs_diff
    tolerance = int8_tolerance(measured, golden.tolerance)
    report = compare(
        GoldenPairs(
            golden.model, golden.reference_name, golden.pairs, golden.reference, tolerance,
            golden.batches,
        ),
        ours,
        CPU,
    )  # fmt: skip
    written = source.golden.model_copy(update={"dtype": "int8", "tolerance": tolerance})
    return Int8Golden(GoldenSet.model_validate(written.model_dump()), report)
