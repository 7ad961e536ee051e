"""``rmserve quantize``: a static int8 artifact from an fp32 one, written only when it passes
the gates (``quantize_gates``).

Static QDQ quantisation (onnxruntime.quantization.quantize_static): int8 weights with one
scale per output channel, and activation scales fixed from calibration pairs tokenised by the
artifact's own preprocessing, so no scale depends on what else is in a batch (dynamic int8
quantisation takes its activation scales from the whole batch and breaks batch invariance).
Only the matrix products are quantised; LayerNorm, Softmax, Gelu and the attention core stay
fp32. Each calibration pair is run alone, unpadded, so padding never widens a range.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from rmserve.artifact.folder import artifact_files, file_entries, read_manifest, write_manifest
from rmserve.artifact.golden import write_golden
from rmserve.artifact.manifest import (
    FORMAT_VERSION,
    MODEL_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    Manifest,
    ParityReport,
)
from rmserve.engine.padding import pad_batch
from rmserve.engine.session import load_artifact
from rmserve.text.preference_data import load_preferences
from rmserve.text.preprocess import PreparedPair
from rmserve_training.export.build import _check_out_folder, _move_into_place, default_version
from rmserve_training.quantize.gates import Figures, Gates, QuantizeError, QuantizeRefused
from rmserve_training.quantize.golden import int8_golden
from rmserve_training.quantize.graph import rewire_file, unfuse_attention
from rmserve_training.quantize.measure import cpu_session, measure

log = logging.getLogger(__name__)

# onnxruntime's histogram calibrators (Percentile, Entropy) stack every activation one
# collect_data call sees into one array, which fails on pairs of different lengths; padding them
# would put padding positions into the ranges. So the quantiser is fed one pair per call
# ("CalibStridedMinMax" 1, despite its name honoured by every method): the histograms merge
# across calls, and MinMax ranges are the same as from one call.
CalibrationName = Literal["minmax", "percentile", "entropy"]
CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
ACTIVATION_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantise; the defaults are what measured best on MiniLM
    (docs/benchmarks/int8.md#gates-on-the-demo-model)."""

    op_types: tuple[str, ...] = ("MatMul",)  # Gemm: the reward head, no speed to win
    activation_type: Literal["int8", "uint8"] = "uint8"
    calibration_method: CalibrationName = "minmax"
    percentile: float = 99.999  # the percentile calibrator: share of activation values kept
    # Activation scales centred on zero (int8 activations then use the whole grid).
    symmetric_activations: bool = False
    # Nodes whose name holds one of these stay fp32 (e.g. "output/dense": BERT's FFN output).
    exclude: tuple[str, ...] = ()
    calibration_pairs: int = 256
    eval_pairs: int = 400
    threads: int = 1
    # Passed through to quantize_static (e.g. percentile settings); tests inject broken ones.
    extra_options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        activations = self.activation_type + (" symmetric" if self.symmetric_activations else "")
        calibration: str = self.calibration_method
        if calibration == "percentile":
            calibration += f" {self.percentile:g}"
        excluded = "".join(f"; {part} fp32" for part in self.exclude)
        return (
            f"int8-static-qdq({'+'.join(self.op_types)}; per-channel weights; "
            f"{activations} activations; {calibration} calibration{excluded})"
        )


@dataclass(frozen=True)
class QuantizeResult:
    manifest: Manifest
    figures: Figures


class PairReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds each calibration pair alone (batch of one, no padding); ``set_range`` selects the
    pairs of one ``collect_data`` call (the quantiser's strided calibration)."""

    def __init__(self, pairs: Sequence[PreparedPair], pad_token_id: int, names: list[str]) -> None:
        self._pairs = pairs
        self._pad_token_id = pad_token_id
        self._names = names
        self._feeds: Iterator[dict[str, Any]] = iter(())
        self.set_range(0, len(pairs))

    def __len__(self) -> int:
        return len(self._pairs)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._feeds = (
            pad_batch([pair], self._pad_token_id, self._names)
            for pair in self._pairs[start_index:end_index]
        )

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


def _pairs(path: Path, limit: int, artifact: Any) -> tuple[list[PreparedPair], list[PreparedPair]]:
    prefs = load_preferences(path).pairs[:limit]
    prompts = [p.prompt for p in prefs]
    pre = artifact.preprocessor
    return pre.prepare_many(prompts, [p.chosen for p in prefs]), pre.prepare_many(
        prompts, [p.rejected for p in prefs]
    )


def _quantize_graph(
    source: Path, target: Path, scratch: Path, calibration: Sequence[PreparedPair],
    manifest: Manifest, options: QuantizeOptions,
) -> None:  # fmt: skip
    external = (source.parent / WEIGHTS_FILE).exists()
    model = onnx.load(str(source))
    unfused = unfuse_attention(model)
    log.info("quantize: %d fused attention ops split so their projections are quantised", unfused)
    source = scratch / "unfused.onnx"
    onnx.save(model, str(source), save_as_external_data=external)
    del model
    # Symbolic shape inference knows onnxruntime's fused ops (Attention, SkipLayerNormalization):
    # without it the quantiser cannot type their outputs and leaves activations fp32.
    inferred = scratch / "inferred.onnx"
    quant_pre_process(
        str(source), str(inferred), skip_optimization=True, auto_merge=True,
        save_as_external_data=external,
    )  # fmt: skip
    graph = onnx.load(str(source), load_external_data=False).graph
    excluded = [n.name for n in graph.node if any(part in n.name for part in options.exclude)]
    reader = PairReader(
        calibration, manifest.preprocessing.pad_token_id, list(manifest.input_names)
    )
    quantize_static(
        str(inferred),
        str(target),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(options.op_types),
        per_channel=True,
        nodes_to_exclude=excluded,
        activation_type=ACTIVATION_TYPES[options.activation_type],
        weight_type=QuantType.QInt8,
        calibrate_method=CALIBRATION_METHODS[options.calibration_method],
        use_external_data_format=external,
        extra_options={
            "MatMulConstBOnly": True,  # weights only: attention's activation products stay fp32
            # A quantised output would round what LayerNorm/Gelu read: keep outputs fp32.
            "OpTypesToExcludeOutputQuantization": list(options.op_types),
            "CalibStridedMinMax": 1,  # one pair per collect_data call (see CALIBRATION_METHODS)
            "CalibPercentile": options.percentile,
            "ActivationSymmetric": options.symmetric_activations,
            **options.extra_options,
        },
    )
    rewire_file(target, options.op_types)


def quantize_artifact(
    artifact_dir: Path,
    calibration_data: Path,
    out: Path,
    eval_data: Path | None = None,
    gates: Gates | None = None,
    options: QuantizeOptions | None = None,
    version: str | None = None,
) -> QuantizeResult:
    """Quantise, measure against the fp32 source on ``eval_data`` (default: the calibration
    data) and write ``out`` only when every gate passes; else raise ``QuantizeRefused``."""
    gates = gates or Gates()
    options = options or QuantizeOptions()
    for name in ("calibration_pairs", "eval_pairs"):
        if getattr(options, name) < 1:
            raise QuantizeError(f"{name} must be at least 1 (got {getattr(options, name)})")
    artifact = load_artifact(artifact_dir)
    manifest = artifact.manifest
    if manifest.dtype != "fp32":
        raise QuantizeError(f"{artifact_dir}: dtype {manifest.dtype}; quantize needs fp32")
    _check_out_folder(out)
    chosen, rejected = _pairs(calibration_data, options.calibration_pairs, artifact)
    if eval_data is None:
        eval_chosen, eval_rejected = _pairs(calibration_data, options.eval_pairs, artifact)
    else:
        eval_chosen, eval_rejected = _pairs(eval_data, options.eval_pairs, artifact)
    calibration = [p for pair in zip(chosen, rejected, strict=True) for p in pair]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        scratch = Path(tmp)
        staging = scratch / "artifact"
        staging.mkdir()
        log.info("quantize: calibrating on %d responses (%s)", len(calibration), options.describe())
        _quantize_graph(
            artifact_dir / MODEL_FILE, staging / MODEL_FILE, scratch, calibration, manifest, options
        )
        figures = measure(
            cpu_session(artifact_dir / MODEL_FILE, options.threads),
            cpu_session(staging / MODEL_FILE, options.threads),
            eval_chosen, eval_rejected, manifest.preprocessing.pad_token_id, gates,
        )  # fmt: skip
        log.info("quantize: %s", figures.describe())
        if figures.failed:
            raise QuantizeRefused(figures, gates)
        shutil.copyfile(artifact_dir / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        golden = int8_golden(
            artifact,
            cpu_session(artifact_dir / MODEL_FILE, options.threads),
            cpu_session(staging / MODEL_FILE, options.threads),
        )
        if golden is None:
            log.info("quantize: the source carries no golden pairs; the int8 artifact has none")
        else:
            write_golden(staging, golden.golden)
            log.info("quantize: %s", golden.report.describe())
        entries = file_entries(staging, artifact_files(staging))
        written = manifest.model_copy(
            update={
                "format_version": FORMAT_VERSION,
                "version": version or default_version(entries),
                "optimization": f"{manifest.optimization}+{options.describe()}",
                "files": entries,
                "dtype": "int8",
                "parity": parity_report(figures, gates, manifest),
            }
        )
        write_manifest(staging, Manifest.model_validate(written.model_dump()))
        read_manifest(staging)  # what the server will check, checked before it is moved
        _move_into_place(staging, out, scratch)
    return QuantizeResult(read_manifest(out), figures)


def parity_report(figures: Figures, gates: Gates, source: Manifest) -> ParityReport:
    return ParityReport(
        status="checked",
        reference=f"onnx fp32 {source.name} {source.version}",
        provider="CPUExecutionProvider",
        pairs=figures.pairs,
        max_abs_diff=figures.max_abs_diff,
        rank_agreement=figures.rank_agreement,
        batch_invariance_max_abs_diff=figures.batch_invariance_max_abs_diff,
        tolerance=gates.describe(),
        accuracy=figures.accuracy,
        reference_accuracy=figures.reference_accuracy,
        spearman=figures.spearman,
    )
