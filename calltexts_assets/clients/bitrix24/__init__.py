"""Bitrix24 REST: telephony statistics, batches and recording downloads."""

from calltexts_assets.clients.bitrix24.client import Bitrix24Client
from calltexts_assets.clients.bitrix24.errors import (
    Bitrix24AuthError,
    Bitrix24Error,
    DownloadDeadline,
    RecordingMissing,
    RecordingRefused,
    RecordingTooLarge,
    TransientError,
)
from calltexts_assets.clients.bitrix24.links import LinkRequest, Links
from calltexts_assets.clients.bitrix24.wire import (
    DEFAULT_RETRY_WAITS,
    MAX_BATCH,
    PAGE_SIZE,
    STAT_METHOD,
    BatchResult,
    ClientStats,
    DownloadResult,
    encode_command,
    flatten_params,
)

__all__ = [
    "DEFAULT_RETRY_WAITS",
    "MAX_BATCH",
    "PAGE_SIZE",
    "STAT_METHOD",
    "BatchResult",
    "Bitrix24AuthError",
    "Bitrix24Client",
    "Bitrix24Error",
    "ClientStats",
    "DownloadDeadline",
    "DownloadResult",
    "LinkRequest",
    "Links",
    "RecordingMissing",
    "RecordingRefused",
    "RecordingTooLarge",
    "TransientError",
    "encode_command",
    "flatten_params",
]
