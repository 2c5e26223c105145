"""How the Kafka clients authenticate and encrypt: the OPMAS_KAFKA_SECURITY_PROTOCOL / SASL / SSL
settings, checked once, as aiokafka client arguments and as the Faust app's broker credentials."""
from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from aiokafka.helpers import create_ssl_context
from faust.auth import Credentials, SASLCredentials, SSLCredentials

from opmas.config import ConfigError, KafkaConfig

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    """A valid combination of the Kafka security settings (ConfigError otherwise). With SSL or SASL_SSL
    the brokers' certificates are checked against ``ssl_cafile``, else the system's CAs."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, kafka: KafkaConfig) -> KafkaSecurity:
        return cls(kafka.security_protocol, kafka.sasl_mechanism, kafka.sasl_username, kafka.sasl_password,
                   kafka.ssl_cafile)

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ConfigError(problem)
        if self.tls:
            try:
                context = create_ssl_context(cafile=self.ssl_cafile)
            except OSError as exc:  # missing or unreadable CA file (ssl.SSLError is an OSError)
                raise ConfigError(f"OPMAS_KAFKA_SSL_CAFILE {self.ssl_cafile}: {exc}") from exc
            object.__setattr__(self, "ssl_context", context)

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def _problem(self) -> str | None:
        protocol = f"OPMAS_KAFKA_SECURITY_PROTOCOL {self.protocol}"
        if self.protocol not in PROTOCOLS:
            return f"{protocol} is not one of {', '.join(PROTOCOLS)}"
        if self.sasl:
            if self.sasl_mechanism not in MECHANISMS:
                return f"{protocol} needs OPMAS_KAFKA_SASL_MECHANISM, one of {', '.join(MECHANISMS)}" + (
                    f" (not {self.sasl_mechanism})" if self.sasl_mechanism else "")
            if not (self.sasl_username and self.sasl_password):
                return f"{protocol} needs OPMAS_KAFKA_SASL_USERNAME and OPMAS_KAFKA_SASL_PASSWORD"
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            return f"the OPMAS_KAFKA_SASL_* settings need OPMAS_KAFKA_SECURITY_PROTOCOL SASL_SSL or" \
                   f" SASL_PLAINTEXT, not {self.protocol}"
        if self.ssl_cafile and not self.tls:
            return f"OPMAS_KAFKA_SSL_CAFILE needs OPMAS_KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL, not {self.protocol}"
        return None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the aiokafka clients (producer, consumer, admin client)."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context
        if self.sasl:
            kwargs.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                          sasl_plain_password=self.sasl_password)
        return kwargs

    def faust_credentials(self) -> Credentials | None:
        """The Faust app's ``broker_credentials`` (None: PLAINTEXT)."""
        if self.sasl:
            return SASLCredentials(username=self.sasl_username, password=self.sasl_password,
                                   ssl_context=self.ssl_context, mechanism=self.sasl_mechanism)
        if self.tls:
            return SSLCredentials(self.ssl_context)
        return None
