"""``rmserve export``: a finished run's checkpoint -> a validated artifact folder."""

from __future__ import annotations

from pathlib import Path

from rmserve.artifact.manifest import Manifest
from rmserve.text.preference_data import load_preferences
from rmserve_training.export.build import export_artifact
from rmserve_training.export.onnx_layout import Dtype
from rmserve_training.train.checkpoints import (
    export_request,
    load_checkpoint,
    model_from_checkpoint,
    validation_texts,
)


def reexport(
    checkpoint_path: Path,
    out: Path,
    eval_data: Path | None = None,
    version: str | None = None,
    dtype: Dtype = "fp32",
    external_data: bool = False,
) -> Manifest:
    """Validation texts come from ``eval_data``, else the run's eval file if it still exists,
    else only the built-in edge cases."""
    checkpoint = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(checkpoint)
    source = eval_data or Path(checkpoint["settings"]["eval_data"])
    texts = validation_texts(load_preferences(source).pairs) if source.is_file() else []
    request = export_request(model, checkpoint, texts, version, dtype, external_data)
    return export_artifact(request, out)
