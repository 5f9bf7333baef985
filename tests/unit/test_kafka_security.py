"""Broker TLS and SASL settings reach every Kafka client the scorer builds, and stay secret."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from faust import SASLCredentials, SSLCredentials
from faust.types.auth import AuthProtocol
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient

from streams.app import ScorerService
from streams.kafka_security import aiokafka_options, faust_credentials, kafka_python_options
from streams.settings import SettingsError, load_settings
from tests.support import make_certificates

PASSWORD = "pa55-word"


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certificates(tmp_path_factory.mktemp("ca"))


def _sasl_ssl(ca_file: Path, tmp_path: Path) -> dict[str, object]:
    return {
        "broker": "kafka://kafka-1:9093;kafka://kafka-2:9093",
        "broker_security_protocol": "SASL_SSL",
        "broker_sasl_mechanism": "SCRAM-SHA-256",
        "broker_username": "crm-scorer",
        "broker_password": PASSWORD,
        "broker_ca_file": ca_file,
        "data_dir": tmp_path,
    }


def _trusts(context: object, common_name: str) -> bool:
    certs = context.get_ca_certs()  # type: ignore[attr-defined]
    return any(("commonName", common_name) in rdn for c in certs for rdn in c["subject"])


def test_sasl_ssl_reaches_the_plain_kafka_clients(ca_file: Path, tmp_path: Path) -> None:
    settings = load_settings(**_sasl_ssl(ca_file, tmp_path))

    options = kafka_python_options(settings)

    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "crm-scorer"
    assert options["sasl_plain_password"] == PASSWORD
    assert _trusts(options["ssl_context"], "crm-test-ca")
    for client in (KafkaConsumer, KafkaProducer, KafkaAdminClient):  # options they all take
        assert set(options) <= set(client.DEFAULT_CONFIG), client


def test_sasl_ssl_reaches_aiokafka_as_faust_passes_it(ca_file: Path, tmp_path: Path) -> None:
    settings = load_settings(**_sasl_ssl(ca_file, tmp_path))

    async def build() -> AIOKafkaConsumer:  # aiokafka clients are made in a running loop
        return AIOKafkaConsumer(bootstrap_servers=settings.broker_hosts, **options)

    options = aiokafka_options(settings)
    client = asyncio.run(build())

    assert client._client._security_protocol == "SASL_SSL"
    assert client._client._sasl_mechanism == "SCRAM-SHA-256"
    assert client._client._sasl_plain_password == PASSWORD
    assert _trusts(client._client._ssl_context, "crm-test-ca")


def test_the_worker_app_carries_the_credentials(ca_file: Path, tmp_path: Path) -> None:
    settings = load_settings(**_sasl_ssl(ca_file, tmp_path))

    credentials = ScorerService(settings).app.conf.broker_credentials

    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert (credentials.username, credentials.password) == ("crm-scorer", PASSWORD)


def test_tls_alone_and_plaintext(ca_file: Path, tmp_path: Path) -> None:
    tls = load_settings(broker_security_protocol="SSL", broker_ca_file=ca_file)
    assert isinstance(faust_credentials(tls), SSLCredentials)
    assert kafka_python_options(tls)["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in kafka_python_options(tls)

    plain = load_settings(broker_security_protocol="SASL_PLAINTEXT", broker_sasl_mechanism="PLAIN",
                          broker_username="u", broker_password="p")  # fmt: skip
    assert faust_credentials(plain).protocol is AuthProtocol.SASL_PLAINTEXT
    assert "ssl_context" not in kafka_python_options(plain)


def test_sasl_without_credentials_stops_start_up_naming_the_settings() -> None:
    with pytest.raises(SettingsError, match="CRM_BROKER_USERNAME and CRM_BROKER_PASSWORD"):
        load_settings(broker_security_protocol="SASL_SSL", broker_username="crm-scorer")


def test_a_missing_certificate_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"CRM_BROKER_CA_FILE=.*no such file"):
        load_settings(broker_security_protocol="SSL", broker_ca_file=tmp_path / "nope.pem")


def test_the_password_is_never_shown(ca_file: Path, tmp_path: Path) -> None:
    settings = load_settings(**_sasl_ssl(ca_file, tmp_path))
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    with pytest.raises(SettingsError) as error:
        load_settings(broker_security_protocol="SASL_SSL", broker_password=PASSWORD)
    assert PASSWORD not in str(error.value)
