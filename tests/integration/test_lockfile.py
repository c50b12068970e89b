"""requirements.lock: every host installs the same versions, checked without a network.

`make lock` writes requirements.lock from pyproject.toml (the runtime dependencies and the dev
extra) with every distribution's hashes; `make bootstrap` and the Dockerfile install it with
`pip install --require-hashes`. These tests fail when pyproject.toml names a dependency the
lock does not pin (edited, not relocked), when a pin no longer satisfies pyproject.toml's
range, when the lock misses a dependency of what it pins (pip's hash mode would refuse it), and
when this virtualenv holds other versions than the lock (a drifted venv: run `make bootstrap`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})$")


@dataclass(frozen=True)
class Pin:
    name: NormalizedName
    version: Version
    hashes: tuple[str, ...]


def _parse_lock(text: str) -> dict[NormalizedName, Pin]:
    """The lock's entries by normalized name: `name==version \\ --hash=sha256:... ...`."""
    logical = re.sub(r"\\\n", " ", text)
    pins: dict[NormalizedName, Pin] = {}
    for raw in logical.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("-"), f"the lock holds an option or a local path: {line!r}"
        words = line.split()
        requirement = Requirement(words[0])
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"not pinned: {line!r}"
        hashes = []
        for word in words[1:]:
            match = HASH.match(word)
            assert match, f"{requirement.name}: not a sha256 hash: {word!r}"
            hashes.append(match.group(1))
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{name} is pinned twice"
        pins[name] = Pin(name, Version(specifiers[0].version), tuple(hashes))
    return pins


PINS = _parse_lock(LOCK.read_text())
DECLARED = [
    Requirement(text)
    for text in [
        *PYPROJECT["project"]["dependencies"],
        *PYPROJECT["project"]["optional-dependencies"]["dev"],
    ]
]


def test_every_entry_is_pinned_with_hashes_and_the_project_is_not_in_it() -> None:
    assert len(PINS) > 50, "the lock must pin the whole tree, not only the direct dependencies"
    for pin in PINS.values():
        assert pin.hashes, f"{pin.name}=={pin.version} has no --hash=sha256:"
    assert canonicalize_name(PYPROJECT["project"]["name"]) not in PINS
    assert "make lock" in LOCK.read_text().split("\n", 3)[1], "the header says how to remake it"


@pytest.mark.parametrize("requirement", DECLARED, ids=str)
def test_every_dependency_of_pyproject_is_pinned_within_its_range(
    requirement: Requirement,
) -> None:
    name = canonicalize_name(requirement.name)
    assert name in PINS, f"pyproject.toml names {requirement}, the lock does not: run make lock"
    pin = PINS[name]
    assert requirement.specifier.contains(pin.version, prereleases=True), (
        f"the lock pins {name}=={pin.version}, pyproject.toml asks {requirement}: run make lock"
    )


def _installed(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def test_the_lock_holds_every_dependency_of_what_it_pins() -> None:
    """The closure, extras included, through the installed distributions' metadata."""
    base = {str(k): str(v) for k, v in default_environment().items()}
    seen: set[tuple[NormalizedName, str]] = set()
    todo = [(canonicalize_name(r.name), extra) for r in DECLARED for extra in ("", *r.extras)]
    missing: list[str] = []
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        dist = _installed(name)
        if dist is None:
            continue  # the test below asks for every locked package to be installed
        for text in dist.requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is not None and not marker.evaluate({**base, "extra": extra}):
                continue
            if marker is None and extra:
                continue  # an unconditional requirement was walked with the base
            dependency = canonicalize_name(requirement.name)
            pin = PINS.get(dependency)
            if pin is None:
                missing.append(f"{dependency} (for {name}{f'[{extra}]' if extra else ''})")
                continue
            assert requirement.specifier.contains(pin.version, prereleases=True), (
                f"{name} needs {requirement}, the lock pins {pin.version}: run make lock"
            )
            todo += [(dependency, e) for e in ("", *requirement.extras)]
    assert not missing, f"pip --require-hashes would refuse: not in the lock: {missing}"


def test_this_virtualenv_holds_the_locked_versions() -> None:
    drifted = []
    absent = []
    for pin in PINS.values():
        dist = _installed(pin.name)
        if dist is None:
            absent.append(pin.name)
        elif Version(dist.version) != pin.version:
            drifted.append(f"{pin.name} {dist.version} (lock: {pin.version})")
    assert not drifted, f"the virtualenv drifted from requirements.lock: {drifted}; make bootstrap"
    # A package pinned for another platform or Python would be absent; every locked package
    # is for this one (CPython 3.11, Linux x86_64), so make bootstrap installs them all.
    assert not absent, f"locked but not installed: {absent}; run make bootstrap"
