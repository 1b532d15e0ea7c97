"""The duplicate-transcripts check: no call transcribed twice, no two files for one call,
no transcript path shared by two calls, in one pass with memory that barely grows."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from calltexts_assets.files.storage_keys import RECORDING_SEPARATOR
from calltexts_assets.quality.checks import (
    DETAIL_ROWS,
    MAX_OFFENDING_IDS,
    CheckOutcome,
    capped_ids,
)
from calltexts_assets.quality.one_pass import (
    FingerprintTable,
    Smallest,
    SmallestKeys,
    fingerprint,
)
from calltexts_assets.state.ledger import CallRecord, Status


def _unit(r: CallRecord) -> str:
    """What must have exactly one transcript: a recording, named by its file id (the call
    id, or "<call id>~<recording>" for each of several recordings of one call)."""
    name = (r.transcript_path or "").rpartition("/")[2]
    if name.startswith(f"call_{r.call_id}{RECORDING_SEPARATOR}") and name.endswith(".txt"):
        return name[len("call_") : -len(".txt")]
    return r.call_id


def _transcript_call_id(key: str) -> str | None:
    path = PurePosixPath(key)
    if path.parent.name != "transcripts" or not path.name.startswith("call_"):
        return None
    if path.suffix != ".txt":
        return None
    return path.name[len("call_") : -len(".txt")]


def _folder_of(path: str, call_id: str) -> str | None:
    """The folder, with its "/", of a path "<folder>/call_<call_id>.txt" (the form this
    pipeline writes: such a path is its folder and the call id), else None."""
    folder, slash, name = path.rpartition("/")
    return folder + slash if name == f"call_{call_id}.txt" else None


# Per call id, one 64-bit word in a FingerprintTable (a call without a word is not one of
# the period's calls): flags, the folders of its first transcript path and first stored
# file (indices into the folder names, which are few: one per month), and a 32-bit
# fingerprint of the record id of the row with that transcript path.
_TEXT, _TEXT_TWICE, _PATH, _FILE, _FILE_TWICE, _OFFENDER = 1, 2, 4, 8, 16, 32
_PATH_SHIFT, _FILE_SHIFT, _RECORD_SHIFT = 8, 20, 32
_FOLDER_MASK = 0xFFF
_MAX_FOLDERS = _FOLDER_MASK + 1  # more (never seen) fall back to keeping the strings
_RECORD_MASK = 0xFFFF_FFFF


class _Duplicates:
    """`duplicate_transcripts` in one pass over the rows, then one over the listed keys.

    What grows with the period is one table word per call id (see above). Strings are kept
    only for rows and files that already break the pattern: a transcript path that is not
    "<folder>/call_<own id>.txt", a call with two transcript paths or records, a stored
    file not named so; and for the first few (sorted) offenders reported."""

    def __init__(self) -> None:
        self.calls = FingerprintTable()
        self.folders: dict[str, int] = {}
        self.folder_names: list[str] = []
        # kind 1: call id -> rows with a transcript, for the first ids in sorted order
        self.same_call: SmallestKeys[str, int] = SmallestKeys(DETAIL_ROWS)
        self.same_call_total = 0
        # kind 2: call id -> its stored files, for the first ids in sorted order
        self.two_files: SmallestKeys[str, set[str]] = SmallestKeys(DETAIL_ROWS)
        self.two_files_total = 0
        self.odd_files: dict[str, set[str]] = {}  # files not named "<folder>/call_<id>.txt"
        # kind 3: the rows whose transcript path the table cannot hold
        self.odd_paths: dict[str, set[tuple[str, int]]] = {}  # path -> (call id, record fp)
        self.more_paths: dict[str, set[tuple[int, int]]] = {}  # call id -> (folder, record fp)
        self.offenders: Smallest[str] = Smallest(MAX_OFFENDING_IDS, key=str)

    def _folder(self, path: str, call_id: str) -> int | None:
        folder = _folder_of(path, call_id)
        if folder is None:
            return None
        index = self.folders.get(folder)
        if index is None and len(self.folder_names) < _MAX_FOLDERS:
            index = self.folders[folder] = len(self.folder_names)
            self.folder_names.append(folder)
        return index

    def _offend(self, call_id: str, word: int) -> int:
        if not word & _OFFENDER:
            self.offenders.add(call_id)  # each call once: the union is counted exactly
        return word | _OFFENDER

    def add_record(self, r: CallRecord) -> None:
        unit = _unit(r)
        fp = fingerprint(unit)
        word = self.calls.get(fp) or 0
        if r.transcript_path or r.status == Status.TRANSCRIBED:
            if word & _TEXT_TWICE:
                count = self.same_call.get(unit)
                if count is not None:
                    self.same_call.set(unit, count + 1)
            elif word & _TEXT:
                word |= _TEXT_TWICE
                self.same_call_total += 1
                self.same_call.set(unit, 2)
                word = self._offend(unit, word)
            else:
                word |= _TEXT
            if r.transcript_path:
                word = self._add_path(r, unit, word)
        self.calls.put(fp, word)

    def _add_path(self, r: CallRecord, unit: str, word: int) -> int:
        record = fingerprint(r.record_id) & _RECORD_MASK
        folder = self._folder(r.transcript_path or "", unit)
        if folder is None:
            self.odd_paths.setdefault(r.transcript_path or "", set()).add((unit, record))
        elif not word & _PATH:
            word |= _PATH | folder << _PATH_SHIFT | record << _RECORD_SHIFT
        elif (folder, record) != _first_path(word):
            self.more_paths.setdefault(unit, set()).add((folder, record))
        return word

    def add_file(self, key: str) -> None:
        call_id = _transcript_call_id(key)
        if call_id is None:
            return
        fp = fingerprint(call_id)
        word = self.calls.get(fp)
        if word is None:
            return  # not a call of this period
        if word & _FILE_TWICE:
            files = self.two_files.get(call_id)
            if files is not None:
                files.add(key)
            return
        known = set(self.odd_files.get(call_id, ()))
        if word & _FILE:
            name = f"call_{call_id}.txt"
            known.add(self.folder_names[word >> _FILE_SHIFT & _FOLDER_MASK] + name)
        if key in known:
            return  # listed twice
        folder = self._folder(key, call_id)
        if known:
            word |= _FILE_TWICE
            self.two_files_total += 1
            self.two_files.set(call_id, {*known, key})
            word = self._offend(call_id, word)
        elif folder is not None:
            word |= _FILE | folder << _FILE_SHIFT
        else:
            self.odd_files[call_id] = {key}
        self.calls.put(fp, word)

    def shared_paths(self) -> dict[str, list[str]]:
        """Transcript paths recorded for several (call id, record id): path -> call ids."""
        paths = {path: set(rows) for path, rows in self.odd_paths.items()}
        for call_id, more in self.more_paths.items():
            word = self.calls.get(fingerprint(call_id)) or 0
            for folder, record in {_first_path(word), *more}:
                path = self.folder_names[folder] + f"call_{call_id}.txt"
                paths.setdefault(path, set()).add((call_id, record))
        # An odd row may share its path with the usual row of the call the path names.
        for path, rows in paths.items():
            _, _, name = path.rpartition("/")
            if not (name.startswith("call_") and name.endswith(".txt") and len(name) >= 9):
                continue
            owner = name[len("call_") : -len(".txt")]
            if owner in self.more_paths:
                continue  # every path of that call is in already
            word = self.calls.get(fingerprint(owner)) or 0
            folder, record = _first_path(word)
            if word & _PATH and self.folder_names[folder] + name == path:
                rows.add((owner, record))
        return {
            path: sorted(call_id for call_id, _ in rows)
            for path, rows in paths.items()
            if len(rows) > 1
        }

    def mark(self, call_id: str) -> None:
        fp = fingerprint(call_id)
        word = self.calls.get(fp)
        if word is not None:
            self.calls.put(fp, self._offend(call_id, word))


def _first_path(word: int) -> tuple[int, int]:
    """(folder index, record fingerprint) of the first transcript path of a call."""
    return word >> _PATH_SHIFT & _FOLDER_MASK, word >> _RECORD_SHIFT & _RECORD_MASK


def duplicate_transcripts(
    records: Iterable[CallRecord], listed_transcript_keys: Iterable[str] = ()
) -> CheckOutcome:
    """Zero tolerance for three kinds of duplicates among the period's recordings (a call's
    one recording is named by the call id; each of several by "<call id>~<recording>"):
    - the same recording on two ledger rows that both have a transcript;
    - two transcript files in storage for one call (`listed_transcript_keys`: the keys
      under the transcripts/ folders the period touches; other keys are ignored);
    - one transcript path recorded for two different calls.

    One pass over `records`, then over the keys. Calls are told apart by 64-bit
    fingerprints of their ids (a false match among 100,000 calls: ~3e-10) and records of one
    call by 32-bit ones (compared only between two rows of one transcript path)."""
    found = _Duplicates()
    for r in records:
        found.add_record(r)
    for key in listed_transcript_keys:
        found.add_file(key)
    shared = found.shared_paths()
    for call_ids in shared.values():
        for call_id in call_ids:
            found.mark(call_id)
    offending = found.offenders.items()
    total = found.offenders.total
    return CheckOutcome(
        name="duplicate_transcripts",
        passed=not total,
        value=float(total),
        threshold=0.0,
        summary=f"{found.same_call_total} calls transcribed twice, {found.two_files_total} "
        f"calls with several transcript files, {len(shared)} transcript paths shared by "
        "several calls",
        details={
            "same_call_total": found.same_call_total,
            "two_files_total": found.two_files_total,
            "shared_paths_total": len(shared),
            "same_call_twice": dict(found.same_call.smallest()),
            "several_files_for_one_call": {
                call_id: sorted(keys) for call_id, keys in found.two_files.smallest()
            },
            "one_path_for_several_calls": dict(sorted(shared.items())[:DETAIL_ROWS]),
        },
        **capped_ids(offending, total),
    )
