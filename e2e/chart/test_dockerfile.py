"""The Dockerfile builds the release binary with a recent enough Rust and runs it as the chart expects.

No Docker engine runs where these tests run, so they lint and parse the file
instead of building it.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import pytest

import render
from chart_objects import controller_container, controller_pod_spec
from render import Document

DOCKERFILE = render.REPO_ROOT / "Dockerfile"
DOCKERIGNORE = render.REPO_ROOT / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"


@pytest.fixture(scope="module")
def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def build_arguments(instructions: list[dockerfile.Command]) -> dict[str, str]:
    pairs = [value.split("=", 1) for command in instructions if command.cmd == "ARG" for value in command.value]
    return {name: default for name, default in pairs}


def stages(instructions: list[dockerfile.Command]) -> list[list[dockerfile.Command]]:
    """Split the instructions into build stages, each starting with its FROM."""
    result: list[list[dockerfile.Command]] = []
    for command in instructions:
        if command.cmd == "FROM":
            result.append([])
        if result:
            result[-1].append(command)
    return result


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_hadolint_passes() -> None:
    result = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stdout + result.stderr


def test_rust_version_meets_crate_minimum(instructions: list[dockerfile.Command]) -> None:
    crate_minimum = tomllib.loads((render.REPO_ROOT / "Cargo.toml").read_text())["package"]["rust-version"]

    rust_version = build_arguments(instructions)["RUST_VERSION"]

    assert len(version_tuple(rust_version)) == 3, "pin a full Rust version, such as 1.95.0"
    assert version_tuple(rust_version) >= version_tuple(crate_minimum)
    assert version_tuple(rust_version) >= (1, 92, 0)


def test_build_stage_runs_locked_release_build(instructions: list[dockerfile.Command]) -> None:
    build_stage = stages(instructions)[0]

    assert build_stage[0].value[0] == "rust:${RUST_VERSION}-bookworm"
    runs = " ".join(command.value[0] for command in build_stage if command.cmd == "RUN")
    assert "cargo build --release --locked" in runs


def test_runtime_stage_distroless_nonroot(instructions: list[dockerfile.Command]) -> None:
    runtime_stage = stages(instructions)[-1]

    base = runtime_stage[0].value[0]
    assert base == "gcr.io/distroless/cc-debian12:nonroot"
    # bookworm is Debian 12, so the builder's glibc matches the runtime's.
    assert "bookworm" in stages(instructions)[0][0].value[0]
    users = [command.value[0] for command in runtime_stage if command.cmd == "USER"]
    assert users == ["65532:65532"]


def test_image_matches_chart(instructions: list[dockerfile.Command], default_documents: list[Document]) -> None:
    container = controller_container(default_documents)
    pod_context = controller_pod_spec(default_documents)["securityContext"]
    entrypoint = [command for command in instructions if command.cmd == "ENTRYPOINT"]
    exposed = {int(port) for command in instructions if command.cmd == "EXPOSE" for port in command.value}

    assert [command.value for command in entrypoint] == [("/usr/local/bin/gangway",)]
    assert entrypoint[0].json, "use the exec form so that SIGTERM reaches gangway, not a shell"
    assert "command" not in container, "the chart must keep the image's ENTRYPOINT"
    assert exposed == {port["containerPort"] for port in container["ports"]}
    assert (pod_context["runAsUser"], pod_context["runAsGroup"]) == (65532, 65532)


def test_dockerignore_excludes_target() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]

    assert "target/" in patterns
    assert ".git/" in patterns
    assert ".venv/" in patterns
