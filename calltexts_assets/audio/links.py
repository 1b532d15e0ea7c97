"""Working links for the calls about to be downloaded, resolved a `batch` at a time.

The ledger keeps a recording's link without its secrets (or has only a Drive file id), so
the download step asks Bitrix24 for working links: for the next up to 50 calls that need
them, in one request, as the download workers take the calls (links are short-lived:
never resolved for a whole period up front). A call whose link is refused gets a fresh
one, alone, once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

from calltexts_assets.clients.bitrix24 import Bitrix24Client, LinkRequest, Links
from calltexts_assets.clients.bitrix24.wire import MAX_BATCH
from calltexts_assets.state.ledger import CallRecord


def link_request(record: CallRecord) -> LinkRequest:
    """What to ask Bitrix24 for this call: its Drive file's link when it has one (the
    download's fallback, or its only source), and the statistic row again when the
    stored link lost its secrets."""
    signed = bool(record.recording_url_signed and record.recording_url)
    return LinkRequest(
        key=record.call_id,
        file_id=record.record_id,
        stat_id=record.stat_id if signed and record.stat_id is not None else None,
    )


class LinkPrefetcher:
    """Resolves links for groups of calls as they are pulled, and hands each worker its
    call's links. Thread-safe: the workers take while the stage's feeder resolves."""

    def __init__(self, client: Bitrix24Client, *, group: int = MAX_BATCH) -> None:
        self.client = client
        self.group = group
        self._links: dict[str, Links] = {}
        self._lock = threading.Lock()
        self.resolved = 0  # calls whose links were asked for in a group
        self.fresh = 0  # calls that needed a fresh link after a refusal

    def ahead(
        self, records: Iterable[CallRecord], wanted: Callable[[CallRecord], bool]
    ) -> Iterator[CallRecord]:
        """`records`, each call that is `wanted` (about to be downloaded) and needs links
        held back until its group is resolved; the others pass straight through."""
        waiting: list[tuple[CallRecord, LinkRequest]] = []
        commands = 0
        for record in records:
            request = link_request(record)
            if not request.commands or not wanted(record):
                yield record
                continue
            waiting.append((record, request))
            commands += request.commands
            if commands > self.group - 2:  # the next call could need two more
                yield from self._resolved(waiting)
                waiting, commands = [], 0
        yield from self._resolved(waiting)

    def _resolved(self, waiting: list[tuple[CallRecord, LinkRequest]]) -> Iterator[CallRecord]:
        if not waiting:
            return
        found = self.client.resolve_links([request for _, request in waiting])
        with self._lock:
            self._links.update(found)
            self.resolved += len(found)
        for record, _ in waiting:
            yield record

    def take(self, record: CallRecord) -> Links:
        """The links resolved ahead for this call; resolved now, alone, if it needs some
        that were not (a stored copy found lost)."""
        with self._lock:
            found = self._links.pop(record.call_id, None)
        if found is None and link_request(record).commands:
            return self.renew(record)
        return found or Links()

    def renew(self, record: CallRecord) -> Links:
        """Fresh links for one call whose link was refused (one REST request)."""
        with self._lock:
            self.fresh += 1
        return self.client.resolve_links([link_request(record)]).get(record.call_id, Links())
