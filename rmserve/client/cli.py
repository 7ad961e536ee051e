"""``rmserve score`` / ``rmserve prefer``: one call through ``RewardClient``, printed as JSON;
``rmserve swap-model``: the operator call that serves a new version of a named model.

Client flags are ``ClientSettings`` fields (``--target``, ``--timeout``, ``--tls*``); every other
client setting, the bearer token included, comes from ``RMSERVE_CLIENT_*`` (a token belongs in
the environment or a secret, not in a flag that ``ps`` shows).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from rmserve.cli_args import add_settings_arguments, settings_from_args
from rmserve.client import RewardClient, RewardClientError
from rmserve.client.channel import call_metadata
from rmserve.client.settings import ClientSettings
from rmserve.client.transport import open_channel
from rmserve.v1 import reward_pb2, reward_pb2_grpc

CLIENT_FLAGS = (
    "target", "timeout", "tls", "tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name",
)  # fmt: skip


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, ClientSettings, only=CLIENT_FLAGS)


def client_settings(args: argparse.Namespace) -> ClientSettings:
    return settings_from_args(ClientSettings, args)


def _fields(message: Any) -> dict[str, Any]:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _call(args: argparse.Namespace, method: str, request: Any) -> int:
    try:
        with RewardClient(settings=client_settings(args)) as client:
            reply = client.call(method, request)
    except (RewardClientError, ValueError, OSError) as e:
        print(f"rmserve {args.command}: {e}", file=sys.stderr)
        return 1
    out = _fields(reply)
    if "result" in out:  # Prefer: the result's fields beside the model version
        out = {**out.pop("result"), **out}
    print(json.dumps(out))
    return 0


def score(args: argparse.Namespace) -> int:
    request = reward_pb2.ScoreRequest(
        prompt=args.prompt, response=args.response, normalize=args.normalize, model=args.model
    )
    return _call(args, "Score", request)


def prefer(args: argparse.Namespace) -> int:
    request = reward_pb2.PreferRequest(
        prompt=args.prompt, response_a=args.response_a, response_b=args.response_b,
        model=args.model,
    )  # fmt: skip
    return _call(args, "Prefer", request)


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="a served model's name (default: the server's default)"
    )


def swap_model(args: argparse.Namespace) -> int:
    """``ModelAdmin.SwapModel`` once (never retried: a swap is not idempotent in time)."""
    try:
        settings = client_settings(args)
        if args.server is not None:
            settings = settings.model_copy(update={"target": args.server})
        request = reward_pb2.SwapModelRequest(model=args.model, artifact=args.artifact)
        with open_channel(grpc, settings, None) as channel:
            stub = reward_pb2_grpc.ModelAdminStub(channel)  # type: ignore[no-untyped-call]
            reply = stub.SwapModel(
                request, timeout=settings.timeout, metadata=call_metadata(settings)
            )
    except grpc.RpcError as e:
        print(f"rmserve swap-model: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"rmserve swap-model: {e}", file=sys.stderr)
        return 1
    print(json.dumps(_fields(reply)))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    env = "TLS and the bearer token come from RMSERVE_CLIENT_* (e.g. RMSERVE_CLIENT_TOKEN)."
    p = subparsers.add_parser(
        "score",
        help="score one (prompt, response) pair; prints JSON",
        description=f"Score one pair with rmserve.client.RewardClient; prints JSON. {env}",
    )
    add_client_arguments(p)
    p.add_argument("--prompt", required=True, help="the prompt (may be empty)")
    p.add_argument("--response", required=True, help="the response (may be empty)")
    p.add_argument(
        "--normalize", action="store_true", help="return (r - mean) / std from the manifest"
    )
    add_model_argument(p)
    p.set_defaults(handler=score)

    p = subparsers.add_parser(
        "prefer",
        help="P(response A preferred to response B); prints JSON",
        description=f"P(A preferred to B) with rmserve.client.RewardClient; prints JSON. {env}",
    )
    add_client_arguments(p)
    p.add_argument("--prompt", required=True, help="the prompt (may be empty)")
    p.add_argument("--response-a", required=True, help="first response (may be empty)")
    p.add_argument("--response-b", required=True, help="second response (may be empty)")
    add_model_argument(p)
    p.set_defaults(handler=prefer)

    p = subparsers.add_parser(
        "swap-model",
        help="serve a new version of a named model without downtime; prints JSON",
        description="Ask a server (ModelAdmin.SwapModel) to load, check and warm up a new "
        "artifact for a served model and switch to it; requests in flight finish on the old "
        "version. The server must have an auth_token and the call its bearer token "
        f"(docs/guides/serving.md#version-swap). {env}",
    )
    # The connection flags of score and prefer, but --target: the server is named here.
    add_settings_arguments(p, ClientSettings, only=[f for f in CLIENT_FLAGS if f != "target"])
    p.add_argument(
        "--target",
        dest="server",
        metavar="TARGET",
        default=None,
        help="the server, host:port (default: RMSERVE_CLIENT_TARGET, else the client default)",
    )
    p.add_argument("--model", required=True, help="the served model's name")
    p.add_argument(
        "--artifact", required=True, help="the new version's folder, as the server sees it"
    )
    p.set_defaults(handler=swap_model)
