"""What every training run reads before it builds a model: the preference files, the backbone,
its text setup (tokenizer, template, window) and the preprocessor made from it."""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer

from rmserve.text.preference_data import LoadResult, load_preferences
from rmserve.text.preprocess import Preprocessor
from rmserve_training.model.backbones import BackboneSource, resolve_backbone
from rmserve_training.model.chat_template import ChatTemplateError
from rmserve_training.model.text_setup import TextSetup, TextSetupError, text_setup
from rmserve_training.settings import TrainSettings
from rmserve_training.train.checkpoints import TrainError


@dataclass(frozen=True)
class TrainInputs:
    train_set: LoadResult
    eval_set: LoadResult
    source: BackboneSource
    texts: TextSetup
    preprocessor: Preprocessor


def load_train_inputs(settings: TrainSettings) -> TrainInputs:
    train_set = load_preferences(settings.train_data, skip_bad=settings.skip_bad_lines)
    eval_set = load_preferences(settings.eval_data, skip_bad=settings.skip_bad_lines)
    if not train_set.pairs or not eval_set.pairs:
        raise TrainError("training and eval data must each hold at least one pair")
    source = resolve_backbone(settings.base_model)
    positions = getattr(source.config, "max_position_embeddings", None)
    max_length = settings.max_length
    if isinstance(positions, int) and max_length > positions:
        if "max_length" in settings.model_fields_set:
            raise TrainError(
                f"--max-length {max_length} exceeds the backbone's {positions} positions"
            )
        max_length = positions  # the default window is wider than this backbone: use all of it
    try:
        texts = text_setup(source, max_length)
    except (TextSetupError, ChatTemplateError) as e:
        raise TrainError(str(e)) from e
    preprocessor = Preprocessor(Tokenizer.from_str(texts.tokenizer_json), texts.preprocessing)
    return TrainInputs(train_set, eval_set, source, texts, preprocessor)
