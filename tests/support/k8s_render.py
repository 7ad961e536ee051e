"""Render the kustomize folders under k8s/ in pure Python (no kustomize binary here).

Supports exactly the subset k8s/ uses and refuses anything else, so a manifest change that
needs real kustomize fails here instead of rendering wrongly: ``resources`` (files and
folders with a kustomization.yaml), ``images`` (newName / newTag) and ``patches`` holding
JSON 6902 operations (``add``, ``replace``, ``remove``) with a ``target`` of kind and name.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
ADAPTER_VALUES = K8S / "monitoring" / "prometheus-adapter-values.yaml"
# Every kustomization a user applies, by name.
VARIANTS = {
    "gpu": K8S / "overlays" / "gpu",
    "cpu": K8S / "overlays" / "cpu",
    "long-context": K8S / "overlays" / "long-context",
    "long-context-cpu": K8S / "overlays" / "long-context-cpu",
    "multi-model": K8S / "overlays" / "multi-model",
    "artifact-from-image": K8S / "examples" / "artifact-from-image",
    "tls": K8S / "examples" / "tls",
}
# Plain manifests applied with `kubectl apply -f`.
PLAIN_MANIFESTS = [K8S / "examples" / "rl-trainer-job.yaml"]
# torchrun across the pods of an Indexed Job (tests/deploy/test_k8s_training_job.py).
TRAINING_JOB = K8S / "examples" / "distributed-training" / "training-job.yaml"
KNOWN_KEYS = {"apiVersion", "kind", "resources", "images", "patches"}


class RenderError(Exception):
    pass


def load_yaml_documents(path: Path) -> list[Manifest]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def render(folder: Path) -> list[Manifest]:
    """The manifests ``kubectl kustomize folder`` would print, in resource order."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_KEYS
    if unknown:
        raise RenderError(f"{folder}: kustomization keys not supported here: {sorted(unknown)}")
    manifests: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            manifests += render(path)
        else:
            manifests += load_yaml_documents(_inside(folder, entry))
    for patch in kustomization.get("patches", []):
        apply_patch_entry(manifests, folder, patch)
    for image in kustomization.get("images", []):
        set_image(manifests, image)
    return manifests


def _inside(folder: Path, relative: str) -> Path:
    """kustomize's default load restrictor: files (not bases) must lie inside the folder."""
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise RenderError(f"{folder}: {relative} lies outside the kustomization root")
    return path


def apply_patch_entry(manifests: list[Manifest], folder: Path, entry: dict[str, Any]) -> None:
    if set(entry) != {"path", "target"} or set(entry["target"]) != {"kind", "name"}:
        raise RenderError(f"{folder}: only `path` + `target: {{kind, name}}` patches: {entry}")
    operations = yaml.safe_load(_inside(folder, entry["path"]).read_text())
    if not isinstance(operations, list):
        raise RenderError(f"{entry['path']}: expected a list of JSON 6902 operations")
    targets = [
        m
        for m in manifests
        if m["kind"] == entry["target"]["kind"] and m["metadata"]["name"] == entry["target"]["name"]
    ]
    if len(targets) != 1:
        raise RenderError(f"{entry}: {len(targets)} manifests match the target")
    for op in operations:
        json_patch(targets[0], op)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _child(node: Any, key: str) -> Any:
    if isinstance(node, list):
        return node[int(key)]
    if key not in node:
        raise RenderError(f"JSON pointer: no key {key!r}")
    return node[key]


def json_patch(document: Manifest, op: dict[str, Any]) -> None:
    """Apply one RFC 6902 ``add`` / ``replace`` / ``remove`` operation in place."""
    *parents, last = _pointer(op["path"])
    node: Any = document
    for key in parents:
        node = _child(node, key)
    kind = op["op"]
    if kind == "add":
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
        else:
            node[last] = copy.deepcopy(op["value"])
    elif kind == "replace":
        _child(node, last)  # must exist
        if isinstance(node, list):
            node[int(last)] = copy.deepcopy(op["value"])
        else:
            node[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        _child(node, last)
        del node[int(last) if isinstance(node, list) else last]
    else:
        raise RenderError(f"JSON 6902 op {kind!r} not supported here")


def pod_spec(manifest: Manifest) -> dict[str, Any]:
    if manifest["kind"] == "CronJob":
        return dict(manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(manifest["spec"]["template"]["spec"])


def set_image(manifests: list[Manifest], image: dict[str, str]) -> None:
    matched = False
    for m in manifests:
        if m["kind"] not in {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}:
            continue
        spec = pod_spec(m)
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            name, _, tag = c["image"].partition(":")
            if name == image["name"]:
                c["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
                matched = True
    if not matched:
        raise RenderError(f"images entry {image} matches no container")


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and name in (None, m["metadata"]["name"])]
    if len(found) != 1:
        raise LookupError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def adapter_rule() -> dict[str, Any]:
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    rules = values["rules"]["custom"]
    assert len(rules) == 1
    return dict(rules[0])


def adapter_series_for(metric: str) -> str:
    """The Prometheus series prometheus-adapter reads for a custom metric name."""
    rule = adapter_rule()
    series = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{", rule["seriesQuery"])
    assert series is not None, rule["seriesQuery"]
    exposed = re.sub(rule["name"]["matches"], rule["name"]["as"], series.group(1))
    assert exposed == metric, f"the adapter exposes {exposed}, the HPA asks for {metric}"
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    return series.group(1)


def hpa_metric_name(manifests: list[Manifest]) -> str:
    metrics = find(manifests, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Pods"]
    return str(metrics[0]["pods"]["metric"]["name"])
