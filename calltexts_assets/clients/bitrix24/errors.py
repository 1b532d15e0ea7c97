"""What a Bitrix24 request can end in, beyond a result."""

from __future__ import annotations

from calltexts_assets.core.errors import RunWideError
from calltexts_assets.core.retrying import RetryableError


class Bitrix24Error(Exception):
    """A Bitrix24 request that failed for good; `code` is short and safe for the ledger."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        code: str = "bitrix24_error",
        status: int | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.method, self.code, self.status, self.attempts = method, code, status, attempts


class Bitrix24AuthError(Bitrix24Error, RunWideError):
    """401/403: retrying cannot help, the credentials or their scope must change."""


class RecordingRefused(Bitrix24Error):
    """This link to a recording does not work for us: the host refused it (401/403, e.g. an
    expired token in it) or it points where downloads may not go. A per-call problem:
    another link to the same recording may work (a fresh one, or its Drive file)."""


class RecordingTooLarge(Bitrix24Error):
    """The recording is over the size cap (CALLTEXTS_MAX_RECORDING_MB): not downloaded."""


class DownloadDeadline(Bitrix24Error):
    """One recording's download took longer than its deadline, retries included."""


class RecordingMissing(Exception):
    """The recording URL answered 404/410: the file is gone (not retried)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.code = f"http_{status}"


class TransientError(RetryableError):
    """Worth another attempt: 429/5xx, a limit, a timeout, a cut connection."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.code, self.status = code, status


class MethodBlocked(TransientError):
    """OPERATION_TIME_LIMIT: the method's running-time budget is spent until its reset."""
