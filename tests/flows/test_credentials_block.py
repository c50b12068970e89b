"""Secrets and credentials come from the Prefect blocks the settings name, through the core's
one Prefect adapter; a block that cannot be loaded is one sentence naming the setting to fix."""

from __future__ import annotations

import uuid

import pytest
from prefect.blocks.system import Secret
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prefect_aws import AwsCredentials
from pydantic import SecretStr

from backupflow.config import FailoverSettings, Settings
from backupflow.engines import database_password
from backupflow.errors import ConfigError, MissingKeyError
from backupflow.failover import route53_client
from backupflow.keys import GeneratedKeys, key_id, load_keyring
from backupflow.keystore import block_exists
from backupflow.redact import known_secrets
from backupflow.storage import make_s3_client


def unique(kind: str) -> str:
    return f"backupflow-test-{kind}-{uuid.uuid4().hex[:8]}"


def saved_secret(value: str) -> str:
    name = unique("secret")
    Secret(value=value).save(name)
    return name


def saved_aws_block(key_id: str, secret: str) -> str:
    name = unique("aws")
    AwsCredentials(aws_access_key_id=key_id, aws_secret_access_key=SecretStr(secret)).save(name)
    return name


def test_the_named_block_supplies_the_s3_credentials(settings: Settings) -> None:
    name = saved_aws_block("AKIABLOCKEXAMPLE", "from-the-block")
    tier = settings.repository.dr.model_copy(update={"credentials_block": name})
    client = make_s3_client(tier, settings.repository)
    credentials = client._request_signer._credentials
    assert credentials.access_key == "AKIABLOCKEXAMPLE"
    assert credentials.secret_key == "from-the-block"
    assert client.meta.region_name == "ap-northeast-1"


def test_a_missing_s3_block_is_a_clear_configuration_error(settings: Settings) -> None:
    tier = settings.repository.dr.model_copy(update={"credentials_block": "no-such-block"})
    with pytest.raises(ConfigError, match="no-such-block") as caught:
        make_s3_client(tier, settings.repository)
    assert "CREDENTIALS_BLOCK" in str(caught.value)
    assert str(caught.value).count(". ") == 0  # one sentence


def test_the_named_block_supplies_the_route53_credentials() -> None:
    name = saved_aws_block("AKIAROUTE53EXAMPLE", "route53-secret")
    client = route53_client(FailoverSettings(credentials_block=name))
    assert client._request_signer._credentials.access_key == "AKIAROUTE53EXAMPLE"
    with pytest.raises(ConfigError, match="BACKUPFLOW_FAILOVER__CREDENTIALS_BLOCK"):
        route53_client(FailoverSettings(credentials_block="no-such-block"))


def test_the_database_password_comes_from_its_secret_block(settings: Settings) -> None:
    name = saved_secret("pa55-from-the-block")
    database = settings.database.model_copy(
        update={"password_block": name, "password": SecretStr("not-this-one")}
    )
    assert database_password(settings.model_copy(update={"database": database})) == (
        "pa55-from-the-block"
    )
    missing = settings.database.model_copy(update={"password_block": "no-such-block"})
    with pytest.raises(ConfigError) as caught:
        database_password(settings.model_copy(update={"database": missing}))
    message = str(caught.value)
    assert "'no-such-block'" in message and "BACKUPFLOW_DATABASE__PASSWORD_BLOCK" in message


def test_repository_keys_come_from_their_secret_blocks(
    settings: Settings, repo_keys: GeneratedKeys
) -> None:
    crypto = settings.crypto.model_copy(
        update={
            "signing_key": SecretStr(""),
            "identities": SecretStr(""),
            "signing_key_block": saved_secret(repo_keys.signing_key),
            "identities_block": saved_secret(repo_keys.identity),
        }
    )
    ring = load_keyring(crypto)
    assert [str(i.to_public()) for i in ring.identities] == [repo_keys.recipient]
    assert ring.signer is not None and ring.signer.key_id == key_id(repo_keys.verify_key)
    verifier = ring.verifier(ring.signer.key_id)
    assert verifier is not None and verifier.verify(ring.signer.sign(b"manifest"), b"manifest")
    assert block_exists(crypto.signing_key_block or "")
    assert not block_exists("no-such-block")

    gone = crypto.model_copy(update={"signing_key_block": "no-such-block"})
    with pytest.raises(MissingKeyError) as caught:
        load_keyring(gone)
    message = str(caught.value)
    assert "'no-such-block'" in message and "BACKUPFLOW_CRYPTO__SIGNING_KEY_BLOCK" in message


def test_block_secrets_are_masked(settings: Settings) -> None:
    password = saved_secret("masked-pa55word")
    aws = saved_aws_block("AKIAMASKEDEXAMPLE", "masked-aws-secret")
    named = settings.model_copy(
        update={
            "database": settings.database.model_copy(update={"password_block": password}),
            "failover": settings.failover.model_copy(update={"credentials_block": aws}),
        }
    )
    found = known_secrets(named, {})
    assert {"masked-pa55word", "AKIAMASKEDEXAMPLE", "masked-aws-secret"} <= set(found)


def test_an_unreachable_prefect_api_is_one_sentence_naming_it(settings: Settings) -> None:
    missing = settings.database.model_copy(update={"password_block": "any-block"})
    with (
        temporary_settings(
            {PREFECT_API_URL: "http://127.0.0.1:9/api", PREFECT_CLIENT_MAX_RETRIES: 0}
        ),
        pytest.raises(ConfigError, match="PREFECT_API_URL"),
    ):
        database_password(settings.model_copy(update={"database": missing}))
