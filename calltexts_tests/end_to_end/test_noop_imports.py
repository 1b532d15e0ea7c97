"""A no-op re-run imports only what finding "nothing left" needs (issue #26): no OpenAI SDK
(nothing to transcribe), no boto3/dagster-aws (local storage), no FastAPI/uvicorn/starlette
(no API, no sandbox: the portal has credentials). The whole `calltexts run`, in a child."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.child_run import REPO_ROOT, ChildLayout
from calltexts_tests.support.sandboxed import SANDBOX_START, sandbox_child_env

NEEDLESS = ("openai", "boto3", "botocore", "dagster_aws", "fastapi", "uvicorn", "starlette", "fpdf")
# The CLI in-process, then the top-level packages it loaded, as the last line of output.
_RUN_AND_LIST = """
import json, sys
from calltexts_assets.ops.cli import main
code = main(["run", "--from", sys.argv[1], "--to", sys.argv[1]])
print(json.dumps({"code": code, "packages": sorted({m.partition(".")[0] for m in sys.modules})}))
"""


def _calltexts_run(day: date, env: dict[str, str], log: Path) -> tuple[int, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST, day.isoformat()],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    log.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, log.read_text()[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return found["code"], set(found["packages"])


def test_a_no_op_rerun_imports_no_sdk_no_s3_and_no_web_framework(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    env = sandbox_child_env(sandbox, ChildLayout.under(tmp_path))
    day = SANDBOX_START
    code, first = _calltexts_run(day, env, tmp_path / "first.log")
    assert code == 0
    # The first run transcribed its calls through the SDK: the check below can tell.
    assert sandbox.stt.stats()["requests"] > 0 and "openai" in first
    requests = sandbox.stt.stats()["requests"]

    code, again = _calltexts_run(day, env, tmp_path / "again.log")
    assert code == 0
    assert sandbox.stt.stats()["requests"] == requests  # a no-op: nothing sent
    assert "Nothing new" in (tmp_path / "again.log").read_text()
    assert sorted(again & set(NEEDLESS)) == []
    assert {"dagster", "calltexts_assets"} <= again
