"""Working links to recordings, asked for in `batch` requests shortly before the downloads.

Two kinds (docs/specs/bitrix24_wire.md §2): the Drive file's `DOWNLOAD_URL`
(`disk.file.get`, scope `disk`; it carries an access token or the webhook code, so it is
never stored), and the statistic row read again by its ID for the CALL_RECORD_URL whose
secret parameters the ledger does not keep. Up to 50 commands go in one request, so a
period of thousands of Drive recordings costs one REST request per 25-50 calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from calltexts_assets.clients.bitrix24.errors import Bitrix24Error
from calltexts_assets.clients.bitrix24.wire import (
    MAX_BATCH,
    STAT_METHOD,
    Batching,
    BatchResult,
    as_dict,
)
from calltexts_assets.limits.run_errors import RunWideError

DISK_METHOD = "disk.file.get"
# Drive errors that mean the file is gone (a re-attached recording's old file is deleted,
# ERROR_NOT_FOUND answers HTTP 400 inside or outside a batch: docs §2 disk.file.get).
GONE = frozenset({"ERROR_NOT_FOUND", "deleted"})


@dataclass(frozen=True)
class LinkRequest:
    key: str  # the caller's name for the recording (a call id)
    file_id: str = ""  # RECORD_FILE_ID: ask disk.file.get for its DOWNLOAD_URL
    stat_id: int | None = None  # read the statistic row again for its CALL_RECORD_URL

    @property
    def commands(self) -> int:
        return bool(self.file_id) + (self.stat_id is not None)


@dataclass(frozen=True)
class Links:
    """What Bitrix24 said of one recording's links. URLs here may hold secrets: they are
    used for one download and never written anywhere."""

    record_url: str | None = None  # the row's CALL_RECORD_URL as the portal gives it now
    drive_url: str | None = None  # the Drive file's DOWNLOAD_URL
    drive_name: str = ""  # the Drive file's NAME
    drive_error: str = ""  # why there is no drive_url: ERROR_NOT_FOUND, ACCESS_DENIED, ...
    drive_message: str = ""
    failure: str = ""  # the whole request failed (after its retries): the reason

    @property
    def drive_gone(self) -> bool:
        return self.drive_error in GONE


class LinksMixin(Batching):
    """Part of `Bitrix24Client`: the batch requests that resolve recording links."""

    def resolve_links(self, requests: Sequence[LinkRequest]) -> dict[str, Links]:
        """Links for every request, in as few `batch` requests as 50 commands allow. A
        missing scope raises (`Bitrix24AuthError`, run-wide); a request that fails after
        its retries gives each of its recordings `Links(failure=...)`."""
        found: dict[str, Links] = {}
        for group in _groups(requests):
            commands: dict[str, tuple[str, Mapping[str, Any]]] = {}
            for index, request in enumerate(group):
                if request.file_id:
                    commands[f"f{index}"] = (DISK_METHOD, {"id": request.file_id})
                if request.stat_id is not None:
                    row_filter = {"FILTER": {"ID": request.stat_id}, "start": -1}
                    commands[f"s{index}"] = (STAT_METHOD, row_filter)
            try:
                answer = self.batch(commands)
            except RunWideError:
                raise
            except Bitrix24Error as exc:
                for request in group:
                    found[request.key] = Links(failure=str(exc))
                continue
            for index, request in enumerate(group):
                found[request.key] = _links(answer, index, request)
        return found


def _groups(requests: Sequence[LinkRequest]) -> Iterator[list[LinkRequest]]:
    group: list[LinkRequest] = []
    size = 0
    for request in requests:
        if request.commands == 0:
            continue
        if size + request.commands > MAX_BATCH:
            yield group
            group, size = [], 0
        group.append(request)
        size += request.commands
    if group:
        yield group


def _links(answer: BatchResult, index: int, request: LinkRequest) -> Links:
    fields: dict[str, Any] = {}
    if request.file_id:
        name = f"f{index}"
        file = as_dict(answer.result.get(name))
        error = answer.result_error.get(name)
        if error is not None:
            fields["drive_error"] = answer.error_code(name) or "error"
            fields["drive_message"] = str(as_dict(error).get("error_description") or "")
        elif str(file.get("DELETED_TYPE") or "0") != "0":  # in the trash
            fields["drive_error"] = "deleted"
            fields["drive_message"] = f"Drive file {request.file_id} is deleted (in the trash)"
        elif file.get("DOWNLOAD_URL"):
            fields["drive_url"] = str(file["DOWNLOAD_URL"])
            fields["drive_name"] = str(file.get("NAME") or "")
        else:
            fields["drive_error"] = "no_download_url"
            fields["drive_message"] = f"disk.file.get gave no DOWNLOAD_URL for {request.file_id}"
    if request.stat_id is not None:
        rows = answer.result.get(f"s{index}")
        for row in rows if isinstance(rows, list) else []:
            if str(as_dict(row).get("ID")) == str(request.stat_id):
                fields["record_url"] = str(row.get("CALL_RECORD_URL") or "") or None
    return Links(**fields)
