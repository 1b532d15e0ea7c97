"""Retry policies as the spec fixes them: a list of waits, one retry per wait."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tenacity

from calltexts_assets.runlog.log import scrubbed_logger

log = scrubbed_logger(__name__)


class RetryableError(Exception):
    """A failure worth another attempt (429, 5xx, timeout, truncated body).

    `retry_after` is the server's Retry-After in seconds, when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_policy(
    waits: Sequence[float],
    *,
    scale: float = 1.0,
    retry_if: Callable[[BaseException], bool] = lambda exc: isinstance(exc, RetryableError),
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> tenacity.Retrying:
    """One attempt plus one retry per entry of `waits` (seconds, multiplied by `scale`).

    `scale` exists so tests and benchmarks shrink the waits by configuration instead of
    patching `time.sleep`. A server's Retry-After lengthens a wait, never shortens it.
    """

    def wait(state: tenacity.RetryCallState) -> float:
        planned = waits[min(state.attempt_number, len(waits)) - 1] * scale
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            planned = max(planned, min(float(retry_after), max(waits)) * scale)
        return planned

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        if on_retry is not None and exc is not None:
            on_retry(state.attempt_number, exc, delay)

    kwargs = {"sleep": sleep} if sleep is not None else {}
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(len(waits) + 1),
        wait=wait,
        retry=tenacity.retry_if_exception(retry_if),
        before_sleep=before_sleep,
        reraise=True,
        **kwargs,
    )
