"""S3 credentials come from a prefect-aws AwsCredentials block named in the settings."""

from __future__ import annotations

import uuid

import pytest
from prefect_aws import AwsCredentials
from pydantic import SecretStr

from backupflow.config import Settings
from backupflow.errors import ConfigError
from backupflow.storage import make_s3_client


def test_the_named_block_supplies_the_credentials(settings: Settings) -> None:
    name = f"backupflow-test-{uuid.uuid4().hex[:8]}"
    AwsCredentials(
        aws_access_key_id="AKIABLOCKEXAMPLE", aws_secret_access_key=SecretStr("from-the-block")
    ).save(name)
    tier = settings.repository.dr.model_copy(update={"credentials_block": name})
    client = make_s3_client(tier, settings.repository)
    credentials = client._request_signer._credentials
    assert credentials.access_key == "AKIABLOCKEXAMPLE"
    assert credentials.secret_key == "from-the-block"
    assert client.meta.region_name == "ap-northeast-1"


def test_a_missing_block_is_a_clear_configuration_error(settings: Settings) -> None:
    tier = settings.repository.dr.model_copy(update={"credentials_block": "no-such-block"})
    with pytest.raises(ConfigError, match="no-such-block"):
        make_s3_client(tier, settings.repository)
