"""The lock file is what a fresh clone installs: it pins every dependency the project
declares, within the declared ranges, each with its hashes (`make install` and `.ci/run`
install with `--require-hashes`). Updating it is a deliberate commit: `make lock`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# `name==version \` then its `--hash=sha256:...` lines
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s\\]+)\s*\\?\s*$")


def _pins() -> dict[str, tuple[Version, int]]:
    pins: dict[str, tuple[Version, int]] = {}
    current = None
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if match := _PIN.match(line):
            current = canonicalize_name(match[1])
            pins[current] = (Version(match[2]), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
        elif not line.startswith(" "):
            current = None
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    names = project["project"]["dependencies"] + project["project"]["optional-dependencies"]["dev"]
    return [Requirement(name) for name in [*names, *project["build-system"]["requires"]]]


def test_every_declared_dependency_is_pinned_within_its_range_with_hashes() -> None:
    pins = _pins()
    assert pins, "requirements.lock pins nothing"
    missing = [str(r) for r in _declared() if canonicalize_name(r.name) not in pins]
    outside = [
        f"{r} (locked {pins[canonicalize_name(r.name)][0]})"
        for r in _declared()
        if canonicalize_name(r.name) in pins
        and not r.specifier.contains(pins[canonicalize_name(r.name)][0], prereleases=True)
    ]
    unhashed = sorted(name for name, (_v, hashes) in pins.items() if hashes == 0)
    assert not missing, f"not in requirements.lock (run `make lock`): {missing}"
    assert not outside, f"locked outside the declared range (run `make lock`): {outside}"
    assert not unhashed


def test_installs_use_the_lock_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements.lock" in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile
