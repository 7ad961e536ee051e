"""``rmserve demo-data | train | ensemble | export | import-hf | quantize``. Torch-free at import
time: the handlers import the training extra when they run, and say what to install when it is
missing."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rmserve.cli_args import add_settings_arguments, settings_from_args
from rmserve_training.settings import TrainSettings

TRAIN_EXTRA_MODULES = ("torch", "transformers", "onnx", "peft")


def require_training_extra(command: str) -> None:
    """Exit with an install hint when the ``train`` extra is not installed."""
    for name in TRAIN_EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            raise SystemExit(
                f"rmserve {command} needs the training extra: pip install 'rmserve[train]' "
                f"(could not import {name})"
            ) from None


@contextlib.contextmanager
def user_errors(command: str) -> Iterator[None]:
    """Bad input (data, paths, models, failed export checks) ends with one line, no traceback."""
    from rmserve.text.preference_data import DataError

    expected: tuple[type[Exception], ...] = (DataError, FileNotFoundError)
    if command != "demo-data":
        from rmserve.artifact.manifest import ArtifactError
        from rmserve_training.ensemble.combine import EnsembleError
        from rmserve_training.export.check import ExportError
        from rmserve_training.hf_import.command import HfImportError
        from rmserve_training.quantize.gates import QuantizeError
        from rmserve_training.train.checkpoints import TrainError

        expected += (ArtifactError, EnsembleError, ExportError, HfImportError, QuantizeError)
        expected += (TrainError,)
    try:
        yield
    except expected as e:
        raise SystemExit(f"rmserve {command}: error: {e}") from e


def print_result(result: dict[str, Any]) -> None:
    """The last stdout line of every command is one JSON object."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def run_demo_data(args: argparse.Namespace) -> int:
    from rmserve_training.demo.data import write_demo_data
    from rmserve_training.demo.dialogues import write_dialogue_data

    write = write_dialogue_data if args.format == "dialogue" else write_demo_data
    with user_errors("demo-data"):
        train_path, eval_path = write(
            Path(args.out), n_train=args.train, n_eval=args.eval, seed=args.seed
        )
    print_result({"train": str(Path(train_path).resolve()), "eval": str(Path(eval_path).resolve())})
    return 0


def run_train(args: argparse.Namespace) -> int:
    settings = settings_from_args(TrainSettings, args)
    require_training_extra("train")
    from rmserve_training.ensemble.shared_train import SharedEnsembleResult
    from rmserve_training.ensemble.train import EnsembleResult, train_ensemble
    from rmserve_training.train.distributed import cluster_session
    from rmserve_training.train.loop import TrainResult, train

    with user_errors("train"), cluster_session(settings.strategy) as cluster:
        result: TrainResult | EnsembleResult | SharedEnsembleResult = (
            train_ensemble(settings, cluster) if settings.ensemble > 1 else train(settings, cluster)
        )
    if cluster.is_main:  # under torchrun one summary, from rank 0
        print_result(result.summary())
    # A stop asked for (--stop-after-steps) is no failure: torchrun would restart the workers
    # on any other exit code, so there it exits 0 and the summary says "finished": false.
    return 0 if result.finished or cluster.distributed else 3


def run_ensemble(args: argparse.Namespace) -> int:
    require_training_extra("ensemble")
    from rmserve_training.ensemble.combine import combine

    with user_errors("ensemble"):
        manifest = combine(
            [Path(m) for m in args.member],
            Path(args.out),
            name=args.name,
            external_data=args.external_data,
            version=args.version,
        )
    print_result(
        {
            "artifact": str(Path(args.out).resolve()),
            "version": manifest.version,
            "members": [m.version for m in manifest.ensemble or ()],
            "parity_max_abs_diff": manifest.parity.max_abs_diff if manifest.parity else None,
        }
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    require_training_extra("export")
    from rmserve_training.train.reexport import reexport

    with user_errors("export"):
        manifest = reexport(
            Path(args.checkpoint),
            Path(args.out),
            eval_data=Path(args.eval_data) if args.eval_data else None,
            version=args.version,
            dtype=args.dtype,
            external_data=args.external_data,
        )
    print_result(
        {
            "artifact": str(Path(args.out).resolve()),
            "version": manifest.version,
            "optimization": manifest.optimization,
            "dtype": manifest.dtype,
        }
    )
    return 0


def run_import_hf(args: argparse.Namespace) -> int:
    require_training_extra("import-hf")
    from rmserve_training.hf_import.command import import_hf

    with user_errors("import-hf"):
        manifest = import_hf(
            Path(args.model),
            Path(args.out),
            eval_data=Path(args.eval_data) if args.eval_data else None,
            max_length=args.max_length,
            name=args.name,
            version=args.version,
            dtype=args.dtype,
            external_data=args.external_data,
            fused_attention=args.attention == "fused",
        )
    print_result(
        {
            "artifact": str(Path(args.out).resolve()),
            "version": manifest.version,
            "architecture": manifest.architecture,
            "join": manifest.preprocessing.join,
            "max_length": manifest.preprocessing.max_length,
            "optimization": manifest.optimization,
            "dtype": manifest.dtype,
            **{k: v for k, v in manifest.metrics.items() if k.startswith("eval_")},
        }
    )
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    require_training_extra("quantize")
    from rmserve_training.quantize.build import QuantizeOptions, quantize_artifact
    from rmserve_training.quantize.gates import Gates, QuantizeRefused

    gates = Gates(
        accuracy_drop=args.max_accuracy_drop,
        spearman=args.min_spearman,
        batch_invariance=args.max_batch_invariance,
    )
    options = QuantizeOptions(
        activation_type=args.activation_type,
        calibration_method=args.calibration_method,
        percentile=args.percentile,
        symmetric_activations=args.symmetric_activations,
        exclude=tuple(args.exclude),
        calibration_pairs=args.calibration_pairs,
        eval_pairs=args.eval_pairs,
    )
    with user_errors("quantize"):
        try:
            result = quantize_artifact(
                Path(args.artifact),
                Path(args.calibration_data),
                Path(args.out),
                eval_data=Path(args.eval_data) if args.eval_data else None,
                gates=gates,
                options=options,
                version=args.version,
            )
        except QuantizeRefused as refused:
            print_result({"written": False, **refused.figures.as_dict()})
            raise
    print_result(
        {
            "written": True,
            "artifact": str(Path(args.out).resolve()),
            "version": result.manifest.version,
            "dtype": result.manifest.dtype,
            **result.figures.as_dict(),
        }
    )
    return 0


def add_quantize_parser(subparsers: Any) -> None:
    from rmserve_training.quantize.gates import Gates

    defaults = Gates()
    q = subparsers.add_parser(
        "quantize",
        help="Write a static int8 (QDQ) copy of an fp32 artifact, only if it passes the gates.",
    )
    q.add_argument("--artifact", required=True, help="fp32 artifact folder.")
    q.add_argument(
        "--calibration-data", required=True, help="Preference JSONL whose texts set the scales."
    )
    q.add_argument("--out", required=True, help="int8 artifact folder to write.")
    q.add_argument("--eval-data", help="Preference JSONL for the gates (default: calibration).")
    q.add_argument("--calibration-pairs", type=int, default=256, help="Lines calibrated on.")
    q.add_argument("--eval-pairs", type=int, default=400, help="Lines the gates score.")
    q.add_argument(
        "--exclude", nargs="*", default=[],
        help="Leave fp32 the nodes whose name contains one of these (e.g. 'output/dense').",
    )  # fmt: skip
    q.add_argument("--activation-type", choices=["int8", "uint8"], default="uint8")
    q.add_argument(
        "--calibration-method", choices=["minmax", "percentile", "entropy"], default="minmax",
        help="How activation ranges are set from the calibration pairs.",
    )  # fmt: skip
    q.add_argument(
        "--percentile", type=float, default=99.999,
        help="With --calibration-method percentile: the share of activation values kept (%%).",
    )  # fmt: skip
    q.add_argument(
        "--symmetric-activations", action="store_true",
        help="Activation ranges centred on zero (default: asymmetric, min to max).",
    )  # fmt: skip
    q.add_argument(
        "--max-accuracy-drop", type=float, default=defaults.accuracy_drop,
        help="Refuse when accuracy falls more than this below fp32's.",
    )  # fmt: skip
    q.add_argument(
        "--min-spearman", type=float, default=defaults.spearman,
        help="Refuse when Spearman of rewards vs fp32 is under this.",
    )  # fmt: skip
    q.add_argument(
        "--max-batch-invariance", type=float, default=defaults.batch_invariance,
        help="Refuse when |alone − in a padded batch of 16| exceeds this.",
    )  # fmt: skip
    q.add_argument("--version", help="Model version (default: model files' sha256 prefix).")
    q.set_defaults(handler=run_quantize)


def add_artifact_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dtype`` and ``--external-data``, documented once in TrainSettings."""
    fields = TrainSettings.model_fields
    parser.add_argument(
        "--dtype", choices=["fp32", "fp16"], default="fp32", help=fields["dtype"].description
    )
    parser.add_argument(
        "--external-data", action="store_true", help=fields["external_data"].description
    )


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo-data", help="Write a deterministic synthetic preference set (train/eval JSONL)."
    )
    demo.add_argument("--out", required=True, help="Folder for train.jsonl and eval.jsonl.")
    demo.add_argument("--train", type=int, default=2000, help="Training pairs (default 2000).")
    demo.add_argument("--eval", type=int, default=400, help="Held-out pairs (default 400).")
    demo.add_argument("--seed", type=int, default=0, help="Random seed (default 0).")
    demo.add_argument(
        "--format",
        choices=["qa", "dialogue"],
        default="qa",
        help="qa: one question, explicit prompt/chosen/rejected (default); dialogue: long "
        "multi-turn Anthropic HH dialogues whose preference depends on the first turn.",
    )
    demo.set_defaults(handler=run_demo_data)

    train = subparsers.add_parser(
        "train", help="Train a Bradley-Terry reward model, export and validate the artifact."
    )
    add_settings_arguments(train, TrainSettings)
    train.set_defaults(handler=run_train)

    ensemble = subparsers.add_parser(
        "ensemble",
        help="Combine artifacts that share preprocessing into one ensemble artifact (one graph, "
        "output [B, K]).",
    )
    ensemble.add_argument(
        "--member",
        action="append",
        required=True,
        help="A member artifact folder; repeat for each member, in output order.",
    )
    ensemble.add_argument("--out", required=True, help="Ensemble artifact folder to write.")
    ensemble.add_argument(
        "--name", help="Model name in the manifest (default: the first member's + '-ensemble')."
    )
    ensemble.add_argument("--version", help="Model version (default: files' sha256 prefix).")
    ensemble.add_argument(
        "--external-data",
        action="store_true",
        help="Weights in model.onnx.data beside model.onnx (always so when a member has them).",
    )
    ensemble.set_defaults(handler=run_ensemble)

    export = subparsers.add_parser("export", help="Re-export a training checkpoint as an artifact.")
    export.add_argument("--checkpoint", required=True, help="checkpoint.pt from a finished run.")
    export.add_argument("--out", required=True, help="Artifact folder to write.")
    export.add_argument(
        "--eval-data", help="Preference JSONL whose texts validate the export (default: the run's)."
    )
    export.add_argument("--version", help="Model version (default: model files' sha256 prefix).")
    add_artifact_arguments(export)
    export.set_defaults(handler=run_export)

    hf = subparsers.add_parser(
        "import-hf",
        help="Turn a local Hugging Face sequence-classification model (1 label) into an artifact.",
    )
    hf.add_argument("--model", required=True, help="Local model folder (save_pretrained layout).")
    hf.add_argument("--out", required=True, help="Artifact folder to write.")
    hf.add_argument(
        "--eval-data",
        help="Held-out preference JSONL: eval metrics and reward normalisation stats "
        "(without it the stats are mean 0, std 1).",
    )
    hf.add_argument(
        "--max-length", type=int, help="Most tokens per sequence (default: the model's limit)."
    )
    hf.add_argument(
        "--attention",
        choices=("fused", "unfused"),
        default="fused",
        help="Decoder attention in the graph: 'fused' (Qwen2/3, Llama, Mistral, Gemma-2: "
        "onnxruntime's GroupQueryAttention, memory linear in length) or 'unfused' (MatMul + "
        "Softmax as traced, memory growing with the square of the length).",
    )
    hf.add_argument("--name", help="Model name in the manifest (default: the folder name).")
    hf.add_argument("--version", help="Model version (default: model files' sha256 prefix).")
    add_artifact_arguments(hf)
    hf.set_defaults(handler=run_import_hf)

    add_quantize_parser(subparsers)
