"""Clients for rmserve's gRPC reward service, for RL trainers and scripts.

    from rmserve.client import RewardClient

    with RewardClient("localhost:50051") as client:
        rewards = client.score(prompts, responses)           # np.ndarray[float32], in order
        p_a = client.prefer(prompts, responses_a, responses_b)
        reward_funcs = [client.as_trl_reward_func()]         # TRL GRPOTrainer

Large inputs are split into chunks under the server's ``max_request_pairs`` and the client's
byte limit, sent concurrently and reassembled in order. Every call has a deadline
(``timeout``); only ``UNAVAILABLE``, a server-sent ``CANCELLED`` (a stream the server never
dispatched, e.g. while it shuts down) and overload (``RESOURCE_EXHAUSTED`` with retry pushback)
are retried, with exponential backoff and jitter, within that deadline.

May import: ``rmserve.v1``, ``rmserve.text`` and ``rmserve.cli_args``; never server code,
onnxruntime, aiohttp or prometheus-client.
"""

from rmserve.client.aio import AsyncRewardClient
from rmserve.client.errors import DeadlineExceededError, InvalidRequestError, RewardClientError
from rmserve.client.plan import GroupScores, ModelInfo, ScoreDetails
from rmserve.client.settings import ClientSettings
from rmserve.client.sync import RewardClient

__all__ = [
    "AsyncRewardClient",
    "ClientSettings",
    "DeadlineExceededError",
    "GroupScores",
    "InvalidRequestError",
    "ModelInfo",
    "RewardClient",
    "RewardClientError",
    "ScoreDetails",
]
