"""The broker security settings as each Kafka client of the scorer takes them.

Faust (the worker), aiokafka (the lag probe) and kafka-python (topic administration, the
producer CLI, the demo) spell the same TLS and SASL options differently; they are derived
here from the one settings object, and nowhere else.
"""

from __future__ import annotations

import ssl
from typing import Any

from streams.settings import Settings

__all__ = ["aiokafka_options", "faust_credentials", "kafka_python_options"]


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if "SSL" not in settings.broker_security_protocol:
        return None
    cafile = None if settings.broker_ca_file is None else str(settings.broker_ca_file)
    context = ssl.create_default_context(cafile=cafile)
    if settings.broker_cert_file is not None and settings.broker_key_file is not None:
        context.load_cert_chain(str(settings.broker_cert_file), str(settings.broker_key_file))
    return context


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` of the Faust app (None for PLAINTEXT).

    >>> faust_credentials(Settings()) is None
    True
    """
    import faust  # here: the plain-client commands do not load Faust

    protocol = settings.broker_security_protocol
    context = _ssl_context(settings)
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.broker_username,
            password=settings.broker_password.get_secret_value(),
            mechanism=settings.broker_sasl_mechanism,
            ssl_context=context,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of an aiokafka client, as Faust derives them for its own.

    >>> aiokafka_options(Settings())
    {'security_protocol': 'PLAINTEXT'}
    """
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    return dict(credentials_to_aiokafka_auth(faust_credentials(settings)))


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of a kafka-python client.

    >>> kafka_python_options(Settings())
    {'security_protocol': 'PLAINTEXT'}
    """
    protocol = settings.broker_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=settings.broker_sasl_mechanism,
            sasl_plain_username=settings.broker_username,
            sasl_plain_password=settings.broker_password.get_secret_value(),
        )
    if "SSL" in protocol:
        options["ssl_context"] = _ssl_context(settings)
    return options
