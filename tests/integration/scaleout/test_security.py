"""The Kafka security settings become the same aiokafka client arguments and Faust broker credentials;
an incomplete or contradictory combination is a configuration error before anything connects."""
from __future__ import annotations

import os
import ssl
import subprocess
import sys

import certifi
import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from opmas.connectors.kafka.security import KafkaSecurity
from opmas.config import ConfigError, load_config
from tests.paths import PROJECT_ROOT
from opmas.runtime.faust_worker import WorkerRuntime, WorkerSettings
from opmas.runtime.rules import RuleFiles

SASL = {"sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "opmas", "sasl_plain_password": "s3cret"}


@pytest.mark.parametrize("env, expected, credentials", [
    ({}, {"security_protocol": "PLAINTEXT"}, type(None)),
    ({"OPMAS_KAFKA_SECURITY_PROTOCOL": "SSL"}, {"security_protocol": "SSL", "ssl_context": ssl.SSLContext},
     SSLCredentials),
    ({"OPMAS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "OPMAS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
      "OPMAS_KAFKA_SASL_USERNAME": "opmas", "OPMAS_KAFKA_SASL_PASSWORD": "s3cret"},
     {"security_protocol": "SASL_PLAINTEXT", **SASL}, SASLCredentials),
    ({"OPMAS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "OPMAS_KAFKA_SASL_MECHANISM": "PLAIN",
      "OPMAS_KAFKA_SASL_USERNAME": "opmas", "OPMAS_KAFKA_SASL_PASSWORD": "s3cret",
      "OPMAS_KAFKA_SSL_CAFILE": certifi.where()},
     {"security_protocol": "SASL_SSL", **SASL, "sasl_mechanism": "PLAIN", "ssl_context": ssl.SSLContext},
     SASLCredentials),
])
def test_settings_map_to_client_arguments_and_faust_credentials(env, expected, credentials):
    security = KafkaSecurity.of(load_config(env=env).kafka)
    kwargs = security.client_kwargs()
    assert {k: type(v) if k == "ssl_context" else v for k, v in kwargs.items()} == expected
    if "ssl_context" in kwargs:
        context = kwargs["ssl_context"]
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    faust = security.faust_credentials()
    assert type(faust) is credentials
    # Faust's own translation of the credentials gives its clients what ours get.
    assert {k: v for k, v in credentials_to_aiokafka_auth(faust).items() if v is not None} == kwargs
    assert "s3cret" not in repr(security) and "s3cret" not in repr(load_config(env=env))


def test_cafile_certificates_are_loaded():
    with_file = KafkaSecurity("SSL", ssl_cafile=certifi.where()).ssl_context
    assert len(with_file.get_ca_certs()) > 100  # the bundle's certificates


@pytest.mark.parametrize("values, message", [
    ({"protocol": "TLS"}, "OPMAS_KAFKA_SECURITY_PROTOCOL TLS is not one of PLAINTEXT, SSL"),
    ({"protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "p"},
     "SASL_SSL needs OPMAS_KAFKA_SASL_MECHANISM, one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    ({"protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u", "sasl_password": "p"},
     r"SCRAM-SHA-512 \(not GSSAPI\)"),
    ({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_password": "p"},
     "needs OPMAS_KAFKA_SASL_USERNAME and OPMAS_KAFKA_SASL_PASSWORD"),
    ({"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"},
     "the OPMAS_KAFKA_SASL_\\* settings need OPMAS_KAFKA_SECURITY_PROTOCOL SASL_SSL or SASL_PLAINTEXT, not PLAINTEXT"),
    ({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p",
      "ssl_cafile": certifi.where()}, "OPMAS_KAFKA_SSL_CAFILE needs OPMAS_KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL"),
    ({"protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "OPMAS_KAFKA_SSL_CAFILE /nonexistent/ca.pem: "),
    ({"protocol": "SSL", "ssl_cafile": __file__}, "OPMAS_KAFKA_SSL_CAFILE .*test_security.py: "),
])
def test_invalid_combinations_are_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        KafkaSecurity(**values)


def test_scaleout_command_refuses_sasl_without_username():
    env = {**os.environ, "OPMAS_KAFKA_URL": "127.0.0.1:1", "NATS_URL": "nats://127.0.0.1:1",
           "OPMAS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "OPMAS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"}
    done = subprocess.run([sys.executable, "-m", "opmas.cli", "bridge"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert "error: OPMAS_KAFKA_SECURITY_PROTOCOL SASL_SSL needs OPMAS_KAFKA_SASL_USERNAME" in done.stderr


def test_worker_app_gets_the_credentials():
    security = KafkaSecurity("SASL_SSL", "SCRAM-SHA-256", "opmas", "s3cret")
    settings = WorkerSettings(kafka_url="127.0.0.1:1", topic="t", partitions=2, partition_key="agent",
                              nats_url="nats://127.0.0.1:1", db_url="postgresql:///unused", security=security)
    credentials = WorkerRuntime(settings, RuleFiles(())).app.conf.broker_credentials
    assert isinstance(credentials, SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value, credentials.username, credentials.password) \
        == ("SASL_SSL", "SCRAM-SHA-256", "opmas", "s3cret")
    assert credentials.ssl_context is security.ssl_context
