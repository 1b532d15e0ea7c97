"""The export store as a Dagster resource: a local folder (default) or an S3 bucket."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from calltexts_assets.clients.s3 import S3Storage
from calltexts_assets.clients.storage import LocalStorage, Storage


class StorageResource(dg.ConfigurableResource):
    """`s3` is a nested dagster-aws `S3Resource` (endpoint_url, region_name, credentials...).
    It is optional because dagster 1.13 cannot give a nested resource a default instance, and
    a local-only setup should not have to configure S3; None means `S3Resource()`, i.e. the
    boto3 chain (env, profile, role). `sse`/`kms_key_id` apply to the S3 backend only.
    """

    backend: str = "local"
    local_root: str = "var"
    s3_bucket: str = ""
    s3_prefix: str = ""
    sse: str = "AES256"
    kms_key_id: str = ""
    s3: S3Resource | None = None

    _storage: Storage | None = PrivateAttr(default=None)

    def get(self) -> Storage:
        # One backend object per resource instance: boto3 clients are costly and thread-safe.
        if self._storage is None:
            self._storage = self._build()
        return self._storage

    def _build(self) -> Storage:
        if self.backend == "local":
            return LocalStorage(Path(self.local_root))
        if self.backend == "s3":
            return S3Storage(
                (self.s3 or S3Resource()).get_client(),
                bucket=self.s3_bucket,
                prefix=self.s3_prefix,
                sse=self.sse,
                kms_key_id=self.kms_key_id or None,
            )
        raise ValueError(f"storage backend must be 'local' or 's3', got {self.backend!r}")
