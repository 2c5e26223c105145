"""The Kubernetes manifests in deploy/ run real ``opmas`` commands with settings OPMAS knows."""
from __future__ import annotations

import yaml

from opmas.connectors.kafka.security import KafkaSecurity
from opmas.cli import build_parser
from opmas.config import load_config, settings as config_settings
from tests.paths import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"


def manifests() -> list[dict]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]
    return docs


def settings() -> dict[str, str]:
    """The environment of the containers: the opmas-config ConfigMap and the Secret."""
    found = {}
    for doc in manifests():
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "opmas-config":
            found.update(doc["data"])
        if doc["kind"] == "Secret":
            found.update(doc["stringData"])
    return found


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
    assert "replicas" not in workers["spec"]  # the autoscaler's: each `kubectl apply` would reset it
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "opmas-worker" and hpa["spec"]["minReplicas"] >= 2
    bridge = next(d for d in deployments if d["metadata"]["name"] == "opmas-bridge")
    assert bridge["spec"]["replicas"] == 1  # its JetStream consumer acknowledges cumulatively
    archiver = next(d for d in deployments if d["metadata"]["name"] == "opmas-archiver")
    if archiver["spec"]["replicas"] > 1:  # several share a ClickHouse server; embedded chdb takes one
        assert settings()["OPMAS_CLICKHOUSE_URL"].startswith(("http://", "https://"))


def test_every_container_is_probed_on_its_metrics_port():
    for deployment in (d for d in manifests() if d["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            command = container["command"]
            port = int(command[command.index("--metrics-port") + 1])
            named = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                get = container[probe]["httpGet"]
                assert get["path"] == "/metrics", (container["name"], probe)
                assert named.get(get["port"], get["port"]) == port, (container["name"], probe)


def test_kafka_security_settings_are_there_with_the_password_in_the_secret():
    config = next(d for d in manifests() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "opmas-config")
    secret = next(d for d in manifests() if d["kind"] == "Secret")
    assert {"OPMAS_KAFKA_SECURITY_PROTOCOL", "OPMAS_KAFKA_SASL_MECHANISM", "OPMAS_KAFKA_SSL_CAFILE"} <= \
        set(config["data"])
    assert {"OPMAS_KAFKA_SASL_USERNAME", "OPMAS_KAFKA_SASL_PASSWORD"} <= set(secret["stringData"])
    assert "OPMAS_KAFKA_SASL_PASSWORD" not in config["data"]
    assert KafkaSecurity.of(load_config(env=settings()).kafka).client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_settings_are_known_to_opmas():
    known = {f.metadata["env"] for _, f in config_settings()}
    env = settings()
    assert env and set(env) <= known, set(env) - known
    hpa = next(d for d in manifests() if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == int(env["OPMAS_PARTITIONS"])  # more workers would idle
