"""vLLM's classify API (``POST /classify``), as verl's reward loop calls it.

verl (volcengine/verl, ``verl/experimental/reward_loop/reward_loop.py``,
``RewardLoopWorker.compute_score_disrm``) posts ``{"model": <RM path>, "input": <text>,
"activation": false}`` to ``/classify`` and reads ``output["data"][-1]["probs"][-1]``. The
request and reply follow vLLM's ``ClassificationCompletionRequest`` / ``ClassificationResponse``
(vllm-project/vllm, ``vllm/entrypoints/pooling/classify/protocol.py``):

- ``input``: a string or a list of strings, each one conversation already rendered with the
  reward model's chat template (verl renders it with the RM's own tokenizer, leading BOS text
  stripped). It is read back into (prompt, response) (``rmserve.text.rendered_input``) and scored
  exactly as ``Score(prompt, response)``, truncation included (earlier turns of a longer
  conversation are part of the prompt text, cut first). A text not rendered with this
  artifact's template, or any text for an artifact without a template (pair-encoded encoders
  have no single-text form), is a 400 that says to send ``messages``.
- ``messages``: one conversation, ``[..., {"role": "assistant", "content": response}]``. With a
  template artifact it must be exactly [user, assistant] (the template renders one turn) and
  scores ``Score(user content, response)``; a pair-encoded artifact scores
  ``Score(render_prompt(messages[:-1]), response)`` (the HH text its training data used).
- ``use_activation`` (vLLM >= 0.11.2; ``activation`` before it, as verl still sends): false →
  ``probs[0]`` is the raw reward; true (vLLM's default for a one-label model) → σ(reward).
- ``model`` names the served model to score with and is echoed back (the default model's
  name when absent). verl sends its RM path here: a server of one model scores any name that
  is not its own with that model, as before; a server of several answers 400 listing the served
  names. ``reward_weights`` asks for a weighted combination (``rmserve.http.served``): ``probs``
  then carry the composite reward and ``components`` each model's normalised rewards.
  ``add_special_tokens`` is accepted (the artifact's own rule always applies).

Reply: ``{"id", "object": "list", "created", "model", "data": [{"index", "label": "LABEL_0",
"probs": [x], "num_classes": 1}], "usage": {"prompt_tokens", "total_tokens",
"completion_tokens": 0}}``, token counts after truncation.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from rmserve.artifact.manifest import ChatTemplate
from rmserve.errors import InvalidRequest
from rmserve.http.json_body import json_object, optional_bool
from rmserve.http.served import Served
from rmserve.rewards.ensemble import sigmoid
from rmserve.serving.composite import Composite
from rmserve.serving.core import RewardCore
from rmserve.text.conversation import MessageError, render_prompt, validate_messages
from rmserve.text.rendered_input import split_rendered

METHOD = "http_classify"
SEND_MESSAGES = 'send "messages": [{"role": "user", ...}, {"role": "assistant", ...}] instead'


@dataclass(frozen=True)
class ClassifyRequest:
    model: str | None
    texts: list[str] | None  # "input"
    messages: list[Any] | None
    activation: bool
    body: dict[str, Any]


def parse_classify(raw: bytes) -> ClassifyRequest:
    body = json_object(raw, '{"model": ..., "input": ...}')
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("model must be a string")
    optional_bool(body, "add_special_tokens", True)
    if "use_activation" in body and body["use_activation"] is not None:
        activation = optional_bool(body, "use_activation", True)
    else:
        activation = optional_bool(body, "activation", True)
    has_input, has_messages = "input" in body, "messages" in body
    if has_input == has_messages:
        raise InvalidRequest('send exactly one of "input" (rendered text) and "messages"')
    if has_messages:
        messages = body["messages"]
        if not isinstance(messages, list):
            raise InvalidRequest("messages must be a list of messages")
        return ClassifyRequest(model, None, messages, activation, body)
    texts = body["input"]
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise InvalidRequest("input must be a string or a non-empty list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidRequest(f"input[{i}] must be a string, got {type(text).__name__}")
    return ClassifyRequest(model, texts, None, activation, body)


def _bos_text(core: RewardCore) -> str:
    """What the tokenizer adds in front of a text by itself (e.g. ``<|begin_of_text|>``)."""
    tokenizer = core.artifact.preprocessor.tokenizer
    ids = tokenizer.encode("", add_special_tokens=True).ids
    return tokenizer.decode(ids[:1], skip_special_tokens=False) if ids else ""


def pairs_from_texts(
    template: ChatTemplate | None, texts: list[str], bos: str
) -> list[tuple[str, str]]:
    if template is None:
        raise InvalidRequest(
            "input: this reward model has no chat template (it encodes prompt and response as "
            f"a pair), so rendered text cannot be split; {SEND_MESSAGES}"
        )
    pairs = []
    for i, text in enumerate(texts):
        pair = split_rendered(template, text, bos)
        if pair is None:
            raise InvalidRequest(
                f"input[{i}]: not a conversation rendered with this reward model's chat "
                f"template, ending in the assistant's response; {SEND_MESSAGES}"
            )
        pairs.append(pair)
    return pairs


def pair_from_messages(template: ChatTemplate | None, messages: list[Any]) -> tuple[str, str]:
    try:
        checked = validate_messages(messages)
    except MessageError as e:
        raise InvalidRequest(f"messages{e.location}: {e.reason}") from None
    if not checked or checked[-1].role != "assistant":
        raise InvalidRequest("messages: the last message must be the assistant's response")
    response = checked[-1].content
    if template is None:
        return render_prompt(messages[:-1]), response
    if [m.role for m in checked] != ["user", "assistant"]:
        raise InvalidRequest(
            "messages: this reward model's chat template renders one user turn and the "
            "assistant's response; send exactly [user, assistant]"
        )
    return checked[0].content, response


def pairs_of(core: RewardCore, request: ClassifyRequest) -> tuple[list[tuple[str, str]], str]:
    """The (prompt, response) pairs of the request as ``core``'s template reads them, and the
    field they came from."""
    preprocessing = core.artifact.manifest.preprocessing
    template = preprocessing.template if preprocessing.join == "template" else None
    if request.texts is not None:
        return pairs_from_texts(template, request.texts, _bos_text(core)), "input"
    assert request.messages is not None
    return [pair_from_messages(template, request.messages)], "messages"


def served_name(served: Served, request: ClassifyRequest) -> str | None:
    """The model the request names; in a server of one model, a name that is not its own (verl
    sends the RM's path) means that model, as it always did."""
    name = served.model_name(request.body)
    if name is not None and name not in served.models.names and len(served.models.names) == 1:
        return None
    return name


async def classify(served: Served, raw: bytes) -> web.Response:
    request = parse_classify(raw)
    with served.select(request.body, served_name(served, request)) as target:
        if isinstance(target, Composite):
            # Rendered text is read with the first model's template; messages suit every model.
            pairs, field = pairs_of(target.components[0].core, request)
            combined = await target.score(pairs, target.options(), None, field=field)
            rewards = [c.reward for c in combined]
            tokens = sum(c.num_tokens for c in combined)
            name = request.model or target.model_version
            extra: dict[str, Any] = {"components": target.rewards_by_model(combined)}
        else:
            core = target
            pairs, field = pairs_of(core, request)
            options = core.reward_options(False)  # an ensemble: the server's default aggregate
            scores = await core.score(pairs, None, field=field)
            rewards = [s.reward for s in core.served(scores, options)]
            tokens = sum(s.num_tokens for s in scores)
            name = request.model or core.name
            extra = {}
    return web.json_response(
        {
            "id": f"classify-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": name,
            "data": [
                {
                    "index": i,
                    "label": "LABEL_0",
                    "probs": [sigmoid(reward) if request.activation else reward],
                    "num_classes": 1,
                }
                for i, reward in enumerate(rewards)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
            **extra,
        }
    )
