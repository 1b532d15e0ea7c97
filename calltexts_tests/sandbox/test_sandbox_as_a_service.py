"""The sandbox as a service of the Docker stack (#27): it listens beyond loopback only when told
the name its clients reach it by, and then its recording links and its variables use that name
(the run containers download from `sandbox`, not from the sandbox's own loopback)."""

from __future__ import annotations

from datetime import date
from urllib.parse import urlsplit

import httpx
import pytest

from calltexts_assets.ops.cli import main
from calltexts_sandbox.runtime import start_sandbox
from calltexts_sandbox.server import serve_in_thread


def test_a_non_loopback_address_without_a_public_name_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["sandbox", "serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--host 0.0.0.0" in err and "--public-host" in err
    with pytest.raises(ValueError, match="loopback"):
        serve_in_thread(object(), "0.0.0.0")


def test_with_a_public_name_links_and_variables_name_it() -> None:
    # Served on loopback under the name `localhost`: in the stack, 0.0.0.0 under `sandbox`.
    sandbox = start_sandbox(
        seed=3, start=date(2026, 11, 2), days=1, calls_per_day=12, public_host="localhost"
    )
    try:
        env = sandbox.environment()
        assert urlsplit(env["BITRIX24_WEBHOOK_URL"]).hostname == "localhost"
        assert urlsplit(env["OPENAI_BASE_URL"]).hostname == "localhost"
        assert env["CALLTEXTS_RECORDING_HOSTS"] == "localhost"
        listed = httpx.post(
            env["BITRIX24_WEBHOOK_URL"] + "voximplant.statistic.get.json",
            json={"FILTER": {">=CALL_START_DATE": "2026-11-01T00:00:00+03:00"}},
            timeout=30,
        ).json()["result"]
        links = [row["CALL_RECORD_URL"] for row in listed if row.get("CALL_RECORD_URL")]
        assert links, "the seed lists recordings with links"
        assert {urlsplit(link).hostname for link in links} == {"localhost"}
        recording = httpx.get(links[0], timeout=30)
        assert recording.status_code == 200 and len(recording.content) > 1000
    finally:
        sandbox.stop()


class _Started(Exception):
    pass


@pytest.mark.parametrize(("flags", "metered"), [([], True), (["--no-download-metered"], False)])
def test_serve_passes_download_metering_to_the_portal(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], metered: bool
) -> None:
    """`calltexts sandbox serve --no-download-metered`: the portal's `download_metered`
    (docs/specs/bitrix24_downloads.md); metered unless told."""
    seen: dict[str, object] = {}

    def started(**kwargs: object) -> None:
        seen.update(kwargs)
        raise _Started

    monkeypatch.setattr("calltexts_sandbox.runtime.start_sandbox", started)
    with pytest.raises(_Started):
        main(["sandbox", "serve", *flags])
    assert seen["portal_config"] == {"download_metered": metered}
