"""The Kubernetes manifests in deploy/ run real ``opmas`` commands with settings OPMAS knows."""
from __future__ import annotations

import yaml

from opmas.cli import build_parser
from opmas.config import ENV_VARS
from opmas.paths import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"


def manifests() -> list[dict]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]
    return docs


def test_manifests_reference_what_exists():
    docs = manifests()
    by_kind = {(d["kind"], d["metadata"]["name"]) for d in docs}
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"opmas-bridge", "opmas-worker", "opmas-archiver"}
    for deployment in deployments:
        spec = deployment["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
        for container in spec["template"]["spec"]["containers"]:
            assert container["command"][0] == "opmas" and container["command"][1] in commands
            for source in container["envFrom"]:
                kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else \
                    ("Secret", source["secretRef"])
                assert (kind, ref["name"]) in by_kind
    workers = next(d for d in deployments if d["metadata"]["name"] == "opmas-worker")
    assert workers["spec"]["replicas"] >= 2
    bridge = next(d for d in deployments if d["metadata"]["name"] == "opmas-bridge")
    assert bridge["spec"]["replicas"] == 1  # its JetStream consumer acknowledges cumulatively


def test_settings_are_known_to_opmas():
    known = set(ENV_VARS)
    settings = {}
    for doc in manifests():
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "opmas-config":
            settings.update(doc["data"])
        if doc["kind"] == "Secret":
            settings.update(doc["stringData"])
    assert settings and set(settings) <= known, set(settings) - known
    hpa = next(d for d in manifests() if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == int(settings["OPMAS_PARTITIONS"])  # more workers would idle
