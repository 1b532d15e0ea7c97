"""Telephony statistics: every `voximplant.statistic.get` row of a period, by keyset paging
inside `batch` requests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from calltexts_assets.clients.bitrix24.errors import Bitrix24AuthError, Bitrix24Error, auth_hint
from calltexts_assets.clients.bitrix24.limits import OPERATION_TIME_LIMIT
from calltexts_assets.clients.bitrix24.wire import (
    MAX_BATCH,
    PAGE_SIZE,
    STAT_METHOD,
    Batching,
    BatchResult,
    encode_command,
)
from calltexts_assets.runlog.log import scrubbed_logger

log = scrubbed_logger(__name__)


class TelephonyMixin(Batching):
    """Part of `Bitrix24Client`: the methods that read the telephony statistics."""

    def list_calls(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every statistic row with CALL_START_DATE in [start, end), each once, in ID order."""
        return [row for rows in self.iter_call_batches(start, end) for row in rows]

    def iter_call_batches(self, start: datetime, end: datetime) -> Iterator[list[dict[str, Any]]]:
        """The rows of `list_calls`, one `batch` request (up to 2,500 rows) at a time, so a
        long period is never held in memory whole.

        Keyset pagination (`SORT=ID`, `FILTER[>ID]=<last ID>`, `start=-1`: no deep offsets,
        no count) with up to 50 pages per `batch` request: page k's filter is
        `$result[p{k-1}][49][ID]`, the last ID of the page before it. The pages are read in
        order up to the first short page (< 50 rows), which ends the listing; the commands
        after it are ignored, whether the portal failed them (unresolvable reference) or
        ran them with an empty filter. A failed command after a full page is an error,
        but for OPERATION_TIME_LIMIT: then the client waits for the method's reset and the
        next request starts again at that page (the pages after it depended on it).
        0-49 rows and 50 x 50-1 rows take one request; 2,600 rows take two.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("list_calls needs aware datetimes (the portal compares instants)")
        if end <= start:
            return
        base = {
            "FILTER": {">=CALL_START_DATE": start.isoformat(), "<CALL_START_DATE": end.isoformat()},
            "SORT": "ID",
            "ORDER": "ASC",
            "start": -1,
        }
        last_id = 0
        blocked_for = 0.0
        while True:
            commands = {}
            for k in range(MAX_BATCH):
                floor = str(last_id) if k == 0 else f"$result[p{k - 1}][{PAGE_SIZE - 1}][ID]"
                params = {**base, "FILTER": {**base["FILTER"], ">ID": floor}}
                commands[f"p{k}"] = encode_command(STAT_METHOD, params)
            answer = self.batch(commands, retry_blocked=False)
            rows: list[dict[str, Any]] = []
            for k in range(MAX_BATCH):
                if answer.error_code(f"p{k}") == OPERATION_TIME_LIMIT:
                    blocked_for = self.wait_blocked({STAT_METHOD}, blocked_for)
                    break
                blocked_for = 0.0
                page = self._page(answer, f"p{k}", last_id)
                rows.extend(page)
                if page:
                    last_id = int(page[-1]["ID"])
                if len(page) < PAGE_SIZE:
                    yield self._in_range(rows, start, end)
                    return
            if rows:
                yield self._in_range(rows, start, end)

    def _page(self, answer: BatchResult, name: str, after_id: int) -> list[dict[str, Any]]:
        if name in answer.result_error:
            error = answer.result_error[name]
            code = answer.error_code(name)
            if code.upper() == "ACCESS_DENIED":
                raise Bitrix24AuthError(
                    f"{auth_hint(code, STAT_METHOD)} ({STAT_METHOD} inside batch: "
                    f"{code}: {error.get('error_description')})",
                    method=STAT_METHOD,
                    code=code,
                )
            raise Bitrix24Error(
                f"{STAT_METHOD} page {name} failed inside batch: "
                f"{error.get('error')}: {error.get('error_description')}",
                method=STAT_METHOD,
                code=str(error.get("error") or "batch_command_failed")[:64],
            )
        page = answer.result.get(name)
        if not isinstance(page, list):
            raise Bitrix24Error(
                f"{STAT_METHOD} page {name} missing from the batch answer", method=STAT_METHOD
            )
        previous = after_id
        for row in page:
            try:
                stat_id = int(row["ID"])
            except (KeyError, TypeError, ValueError):
                raise Bitrix24Error(
                    f"{STAT_METHOD} row without a numeric ID in page {name}",
                    method=STAT_METHOD,
                    code="bad_row",
                ) from None
            # Keyset paging is only gap-free if the portal really sorted by ID ascending.
            if stat_id <= previous:
                raise Bitrix24Error(
                    f"{STAT_METHOD} paging out of order (ID {stat_id} after {previous}): "
                    "the portal ignored SORT=ID/FILTER[>ID]",
                    method=STAT_METHOD,
                    code="paging_inconsistent",
                )
            previous = stat_id
        return page

    @staticmethod
    def _in_range(
        rows: list[dict[str, Any]], start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        kept = []
        for row in rows:
            try:
                started = datetime.fromisoformat(str(row.get("CALL_START_DATE")))
            except ValueError:
                kept.append(row)  # call_from_row rejects it with a reason downstream
                continue
            if started.tzinfo is None or start <= started < end:
                kept.append(row)
        if len(kept) != len(rows):
            log.warning(
                "dropped %d statistic rows outside [%s, %s) the portal returned",
                len(rows) - len(kept),
                start.isoformat(),
                end.isoformat(),
            )
        return kept
