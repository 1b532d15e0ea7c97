"""The export store as a Dagster resource: a local folder (default) or an S3 bucket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from calltexts_assets.clients.storage import LocalStorage, Storage


class StorageResource(dg.ConfigurableResource):
    """`sse`/`kms_key_id` apply to the S3 backend only. The S3 backend's client is the boto3
    chain's (env, profile, role), as dagster-aws' `S3Resource()` builds it; to configure it
    (endpoint_url, region_name, credentials...) use `S3StorageResource`, which nests one.
    boto3 and dagster-aws are imported only when the S3 backend is built: a local run does
    not pay ~1 s of their import (issue #26).
    """

    backend: str = "local"
    local_root: str = "var"
    s3_bucket: str = ""
    s3_prefix: str = ""
    sse: str = "AES256"
    kms_key_id: str = ""

    _storage: Storage | None = PrivateAttr(default=None)

    def get(self) -> Storage:
        # One backend object per resource instance: boto3 clients are costly and thread-safe.
        if self._storage is None:
            self._storage = self._build()
        return self._storage

    def s3_client(self) -> Any:
        # Here, not at the top: only CALLTEXTS_STORAGE=s3 needs dagster-aws and boto3.
        from dagster_aws.s3 import S3Resource

        return S3Resource().get_client()

    def _build(self) -> Storage:
        if self.backend == "local":
            return LocalStorage(Path(self.local_root))
        if self.backend == "s3":
            # Here, not at the top: boto3 is imported with it, for the S3 backend only.
            from calltexts_assets.clients.s3 import S3Storage

            return S3Storage(
                self.s3_client(),
                bucket=self.s3_bucket,
                prefix=self.s3_prefix,
                sse=self.sse,
                kms_key_id=self.kms_key_id or None,
            )
        raise ValueError(f"storage backend must be 'local' or 's3', got {self.backend!r}")
