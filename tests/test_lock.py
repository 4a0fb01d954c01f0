"""requirements-lock.txt pins a version of every package requirements.txt asks for, inside its range."""

from conftest import ROOT
from packaging.markers import default_environment
from packaging.requirements import Requirement


def pins():
    lines = (ROOT / "requirements-lock.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
    assert all(len(pair) == 2 for pair in pairs), "every line of the lock is name==version"
    return {name.lower().replace("_", "-"): version for name, version in pairs}


def test_the_lock_satisfies_every_requirement():
    locked, environment = pins(), default_environment()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = requirement.name.lower().replace("_", "-")
        assert name in locked, f"{name} is required but not pinned in requirements-lock.txt"
        assert requirement.specifier.contains(locked[name], prereleases=True), f"{name}=={locked[name]} is not {line}"
