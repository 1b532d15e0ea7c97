"""The export store with a configurable S3 client: `definitions.py` builds it only when
CALLTEXTS_STORAGE=s3, so a local run never imports dagster-aws (issue #26)."""

from __future__ import annotations

from typing import Any

from dagster_aws.s3 import S3Resource

from calltexts_assets.resources.storage import StorageResource


class S3StorageResource(StorageResource):
    """`s3` is a nested dagster-aws `S3Resource` (endpoint_url, region_name, credentials...).
    It is optional because dagster 1.13 cannot give a nested resource a default instance;
    None means `S3Resource()`, i.e. the boto3 chain (env, profile, role)."""

    s3: S3Resource | None = None

    def s3_client(self) -> Any:
        return (self.s3 or S3Resource()).get_client()
