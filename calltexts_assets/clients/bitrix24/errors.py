"""What a Bitrix24 request can end in, beyond a result."""

from __future__ import annotations

from calltexts_assets.limits.retrying import RetryableError
from calltexts_assets.limits.run_errors import RunWideError

_AUTH_HINTS = {
    "expired_token": "access token expired: refresh the OAuth token or webhook",
    "invalid_token": "invalid credentials: check the webhook code or the OAuth token",
    "invalid_credentials": "invalid credentials: check the webhook code or the OAuth token",
    "no_auth_found": "no credentials accepted: check the webhook URL or the OAuth token",
    "authorization_error": "the webhook's or application's user cannot be authorized "
    "(deactivated?)",
}
# Which scope and which permission a method needs (docs/specs/bitrix24_wire.md §1, §2).
_SCOPES = {
    "voximplant.": "telephony",
    "telephony.": "telephony",
    "disk.": "disk",
    "user.": "user_brief",  # or user_basic / user: names need no more (§12)
}
_PERMISSIONS = {
    "voximplant.statistic.get": "the 'Call statistics: view' telephony permission",
    "disk.file.get": "read access to the call recordings folder on Drive (administrators)",
    "voximplant.line.get": "the 'Management of numbers: modification' telephony permission",
}


def scope_of(method: str) -> str:
    """The scope a method belongs to, as Bitrix24 names it ("" when we do not know)."""
    return next((scope for prefix, scope in _SCOPES.items() if method.startswith(prefix)), "")


def auth_hint(code: str, method: str) -> str | None:
    """What to do about an auth error `code` of `method`; None when it is not one."""
    lowered = code.lower()
    if lowered == "insufficient_scope":
        scope = scope_of(method)
        named = f"the `{scope}` scope" if scope else "a scope this method needs"
        return f"insufficient scope: the webhook or application lacks {named} ({method}): add it"
    if lowered == "access_denied":
        needed = _PERMISSIONS.get(method, "the permission this method needs")
        return f"access denied: the webhook's or application's user lacks {needed}"
    return _AUTH_HINTS.get(lowered)


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
