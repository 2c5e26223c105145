"""The enrollment string of ``opmas agent enroll``, and how an agent's settings read it."""
from __future__ import annotations

import argparse
import base64

import pytest

from opmas.agents.enrollment import PREFIX, Enrollment, EnrollmentError, read_enrollment
from opmas.cli.agent import _settings

FULL = Enrollment(token="aaa.bbb.ccc", api_url="https://opmas.example.org:8080",
                  nats_url="tls://opmas.example.org:4222", ca_fingerprint="SHA256:AB:CD")


def test_the_string_carries_token_urls_and_fingerprint():
    text = FULL.encode()
    assert text.startswith(PREFIX) and "\n" not in text and " " not in text
    assert read_enrollment(f"  {text}\n") == FULL
    assert read_enrollment(Enrollment(token="t").encode()) == Enrollment(token="t")


def test_a_bare_jwt_is_the_token_alone():
    assert read_enrollment("aaa.bbb.ccc") == Enrollment(token="aaa.bbb.ccc")


@pytest.mark.parametrize("text, says", [
    (PREFIX + "%%%not-base64", "damaged"),
    (PREFIX + FULL.encode().removeprefix(PREFIX)[:-7], "damaged"),  # cut short in a copy
    (PREFIX + base64.urlsafe_b64encode(b'["token"]').decode(), "must hold a token"),
    (PREFIX + base64.urlsafe_b64encode(b'{"api_url": "https://x"}').decode(), "must hold a token"),
    (PREFIX + base64.urlsafe_b64encode(b'{"token": "t", "admin": "yes"}').decode(), "must hold a token"),
    (PREFIX + base64.urlsafe_b64encode(b'{"token": 1}').decode(), "must hold a token"),
    (PREFIX + "A" * 20_000, "longer than"),
])
def test_a_damaged_or_forged_string_is_refused_clearly(text, says):
    with pytest.raises(EnrollmentError, match=says):
        read_enrollment(text)


def _args(**flags) -> argparse.Namespace:
    return argparse.Namespace(config=None, log_level=None, name="tail@host", agent_id=None, credentials=None,
                              management_url=flags.get("management_url"), nats_url=flags.get("nats_url"))


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("OPMAS_CONFIG", "OPMAS_API_URL", "NATS_URL", "OPMAS_CA_FINGERPRINT", "OPMAS_ENROLL_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPMAS_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


def test_an_agent_takes_everything_from_the_string(clean_env):
    clean_env.setenv("OPMAS_ENROLL_TOKEN", FULL.encode())
    settings = _settings(_args(), "tail")
    assert (settings.enroll_token, settings.management_url, settings.nats_url, settings.ca_fingerprint,
            settings.ca_file) == (FULL.token, FULL.api_url, FULL.nats_url, FULL.ca_fingerprint, None)


def test_flags_and_settings_given_on_the_agents_machine_win(clean_env):
    clean_env.setenv("OPMAS_ENROLL_TOKEN", FULL.encode())
    clean_env.setenv("OPMAS_API_URL", "https://inside:8080")
    clean_env.setenv("OPMAS_CA_FINGERPRINT", "SHA256:EF")
    settings = _settings(_args(nats_url="tls://inside:4222"), "tail")
    assert (settings.management_url, settings.nats_url, settings.ca_fingerprint) == (
        "https://inside:8080", "tls://inside:4222", "SHA256:EF")


def test_without_a_token_the_agent_uses_its_credentials_file(clean_env):
    settings = _settings(_args(), "tail")
    assert settings.enroll_token is None and settings.management_url.startswith("http://127.0.0.1:")
