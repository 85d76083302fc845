"""The Dockerfile, checked without a Docker engine (none runs here, and hadolint is not
available): it is parsed, every path it copies must exist and pass .dockerignore, the lock file
it installs from must be complete and match what the tests run with, and each command it runs
is exercised here another way (building the package from exactly the copied files)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sidecar.cli import _parser
from sidecar.injector.settings import SIDECAR_UID, SidecarSettings
from sidecar.injector.sidecar import sidecar_container

ROOT = Path(__file__).resolve().parents[2]
Instruction = tuple[str, str]


def instructions() -> list[Instruction]:
    """(KEYWORD, arguments) for each instruction, continuation lines joined, comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        result.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def of(keyword: str) -> list[str]:
    return [arguments for key, arguments in instructions() if key == keyword]


def final_stage() -> list[Instruction]:
    steps = instructions()
    last_from = max(i for i, (key, _) in enumerate(steps) if key == "FROM")
    return steps[last_from:]


def locked() -> dict[str, str]:
    """name -> version of every requirement in requirements.lock (each must carry hashes)."""
    text = (ROOT / "requirements.lock").read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):
        if block.startswith("#") or not block.strip():
            continue
        requirement = block.split()[0]
        assert "==" in requirement, f"not pinned: {requirement}"
        assert "--hash=sha256:" in block, f"no hash: {requirement}"
        name, version = requirement.split("==")
        pins[canonicalize_name(name.split("[")[0])] = version
    return pins


def test_the_image_is_multi_stage_on_a_slim_python_matching_requires_python() -> None:
    assert len(of("FROM")) == 2
    assert of("FROM")[0] == "${PYTHON_IMAGE} AS build"
    base = next(a for a in of("ARG") if a.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-\w+)?", base)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"


def test_every_copied_path_exists_and_is_sent_to_the_build() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignored[0] == "*"  # everything is excluded except what is named
    sent = {line.removeprefix("!").rstrip("/") for line in ignored if line.startswith("!")}
    sources = []
    for arguments in of("COPY"):
        if arguments.startswith("--from="):
            continue
        *paths, _destination = shlex.split(arguments)
        sources += paths
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert source.rstrip("/") in sent, f"COPY {source}: excluded by .dockerignore"


def test_it_runs_as_a_fixed_non_root_user_the_injector_agrees_with() -> None:
    final = final_stage()
    users = [arguments for key, arguments in final if key == "USER"]
    assert users == [f"{SIDECAR_UID}:{SIDECAR_UID}"]
    run = " ".join(arguments for key, arguments in final if key == "RUN")
    assert f"--uid {SIDECAR_UID}" in run
    assert f"--gid {SIDECAR_UID}" in run
    context = sidecar_container(SidecarSettings(image="x"))["securityContext"]
    assert context["runAsUser"] == SIDECAR_UID


def test_the_entrypoint_is_integration_sidecar_serve_and_there_is_no_healthcheck() -> None:
    assert [json.loads(a) for a in of("ENTRYPOINT")] == [["integration-sidecar"]]
    assert [json.loads(a) for a in of("CMD")] == [["serve"]]
    assert not of("HEALTHCHECK")  # Kubernetes probes the gRPC health service
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["integration-sidecar"] == "sidecar.cli:main"
    assert _parser().parse_args(["serve"]).command == "serve"


def test_it_works_with_a_read_only_root_filesystem() -> None:
    env = " ".join(arguments for key, arguments in final_stage() if key == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # no .pyc written at run time...
    assert "compileall" in " ".join(of("RUN"))  # ...because they were written at build time
    assert "TMPDIR=/tmp" in env  # the only writable path: the injector mounts an emptyDir
    mounts = sidecar_container(SidecarSettings(image="x"))["volumeMounts"]
    assert {"name": "integration-sidecar-tmp", "mountPath": "/tmp"} in mounts


def test_the_lock_file_pins_every_dependency_within_pyproject_bounds() -> None:
    """Each runtime dependency is locked at a version pyproject.toml allows; exact pins
    (grpcio==...) are what the tests run with. The other versions are the .venv's when the lock
    was made: a fresh `pip install` may pick newer ones, so those are not compared here."""
    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run scripts/lock-requirements.sh"
        assert requirement.specifier.contains(pins[name]), (
            f"{name}: locked {pins[name]} is outside {requirement.specifier}: "
            "run scripts/lock-requirements.sh"
        )
        if any(spec.operator == "==" for spec in requirement.specifier):
            assert importlib.metadata.version(name) == pins[name], name


def test_the_lock_file_is_closed_under_dependencies() -> None:
    """`pip install --no-deps -r requirements.lock` must install everything needed."""
    pins = locked()
    environment = {**default_environment(), "sys_platform": "linux", "platform_system": "Linux"}
    wanted = [Requirement(d) for d in tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]  # fmt: skip
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if requirement.marker and not any(
            requirement.marker.evaluate({**environment, "extra": extra})
            for extra in ("", *sorted(requirement.extras))
        ):
            continue
        assert name in pins, f"{name} is needed but not locked"
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for line in importlib.metadata.requires(name) or []:
            child = Requirement(line)
            if child.marker is None or any(
                child.marker.evaluate({**environment, "extra": extra})
                for extra in ("", *requirement.extras)
            ):
                wanted.append(Requirement(str(child).split(";")[0]))


# Every RUN command of the Dockerfile, and how it is exercised here. A new RUN fails the test
# below until it is listed (and exercised).
RUN_COMMANDS = {
    "python -m venv /opt/venv": "the project's own .venv is made the same way",
    "/opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock": (
        "the two lock-file tests above: complete, hashed, closed, within pyproject's bounds"
    ),
    "/opt/venv/bin/pip install --no-deps --no-build-isolation /src && "
    "/opt/venv/bin/python -m compileall -q /opt/venv": (
        "test_the_package_builds_from_exactly_the_copied_files"
    ),
    "groupadd --system --gid 10001 sidecar && useradd --system --uid 10001 --gid 10001 "
    "--no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sidecar": (
        "test_it_runs_as_a_fixed_non_root_user_the_injector_agrees_with (flags only: adding a "
        "user to this machine is not a test's business)"
    ),
}


def test_every_command_it_runs_is_known() -> None:
    assert of("RUN") == list(RUN_COMMANDS)


@pytest.mark.e2e
def test_the_package_builds_from_exactly_the_copied_files(tmp_path: Path) -> None:
    """What the build stage does, on a copy of just the files the Dockerfile copies."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("sidecar", "generated"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("integration_sidecar-*.whl")
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "integration-sidecar = sidecar.cli:main" in archive.read(entry_points).decode()
    assert {"sidecar/cli.py", "sidecar/injector/probe.py", "sidecar/py.typed"} <= names
    assert any(n.startswith("generated/integration/v1/") for n in names)
    compiled = subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(src / "sidecar")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stdout
