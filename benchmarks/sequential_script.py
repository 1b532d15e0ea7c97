"""What a user would write instead of calltexts (issue #26 goal 5): list a period's calls,
download each recording, send it to the STT, write its text. One call at a time.

    BITRIX24_WEBHOOK_URL=... OPENAI_BASE_URL=... OPENAI_API_KEY=... \
        python benchmarks/sequential_script.py 2026-11-01 2026-11-30 texts/

No roles, no resuming, no cutting of recordings over the STT's 25 MB, no ledger: a failed
call is printed and skipped. Waits a second and asks again when the portal says
QUERY_LIMIT_EXCEEDED, as its docs advise. `benchmarks/versus_script.py` measures it.
"""

import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import httpx

WEBHOOK = os.environ["BITRIX24_WEBHOOK_URL"].rstrip("/")
STT = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1").rstrip("/")
KEY = os.environ["OPENAI_API_KEY"]


def rest(client: httpx.Client, method: str, params: dict) -> dict:
    while (answer := client.post(f"{WEBHOOK}/{method}.json", json=params)).status_code == 503:
        time.sleep(1)  # QUERY_LIMIT_EXCEEDED: 2 requests a second
    answer.raise_for_status()
    return answer.json()


def calls(client: httpx.Client, first: str, last: str):
    end = (date.fromisoformat(last) + timedelta(days=1)).isoformat()
    where = {">=CALL_START_DATE": f"{first}T00:00:00", "<CALL_START_DATE": f"{end}T00:00:00"}
    start = 0
    while start is not None:
        page = rest(client, "voximplant.statistic.get", {"FILTER": where, "start": start})
        yield from page["result"]
        start = page.get("next")


def main(first: str, last: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=600) as client:
        for call in calls(client, first, last):
            url = call.get("CALL_RECORD_URL")
            if not url and call.get("RECORD_FILE_ID"):  # kept on the portal's Drive only
                url = rest(client, "disk.file.get", {"id": call["RECORD_FILE_ID"]})["result"]
                url = url["DOWNLOAD_URL"]
            if not url:
                continue
            audio = client.get(url)
            if audio.status_code != 200:
                print(f"{call['CALL_ID']}: download {audio.status_code}", file=sys.stderr)
                continue
            kind = "wav" if "wav" in audio.headers.get("content-type", "") else "mp3"
            text = client.post(
                f"{STT}/audio/transcriptions",
                headers={"Authorization": f"Bearer {KEY}"},
                files={"file": (f"call.{kind}", audio.content)},
                data={"model": "whisper-1", "response_format": "text"},
            )
            if text.status_code != 200:
                print(f"{call['CALL_ID']}: STT {text.status_code}", file=sys.stderr)
                continue
            (out / f"{call['CALL_ID']}.txt").write_text(text.text, encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
