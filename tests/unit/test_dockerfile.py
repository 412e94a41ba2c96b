"""The Dockerfile (multi-stage, pinned tools, non-root, health check) and what the build
context leaves out (.dockerignore). No Docker engine runs here: the files are read."""

from __future__ import annotations

import re

from tests.support.deployment import ROOT, ops_port, setting_variables

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    return re.findall(rf"^{name} (.+)$", DOCKERFILE, flags=re.MULTILINE)


def test_multi_stage_with_pinned_images() -> None:
    stages = _instructions("FROM")
    assert len(stages) >= 3  # uv, build, runtime
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, flags=re.MULTILINE)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base)
    (uv,) = [s for s in stages if "astral-sh/uv" in s]
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+ AS uv", uv)
    assert "COPY --from=build /opt/venv /opt/venv" in DOCKERFILE


def test_the_lock_file_decides_the_dependencies() -> None:
    assert "uv sync --frozen --no-dev --no-editable" in DOCKERFILE


def test_runs_as_a_non_root_user_with_a_health_check() -> None:
    (user,) = _instructions("USER")
    assert user.split(":")[0] not in ("0", "root")
    assert "HEALTHCHECK" in DOCKERFILE
    assert "/healthz" in DOCKERFILE and f"'{ops_port()}'" in DOCKERFILE


def test_the_build_context_leaves_out_what_the_image_does_not_need() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {
        ".git",
        ".venv",
        ".venv-tools",
        "**/__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        "tests",
    } <= ignored
    # ...but keeps what the build copies
    for copied in ("pyproject.toml", "uv.lock", "README.md", "libs", "services", "mailroom"):
        assert copied not in ignored
        assert copied in DOCKERFILE


def test_environment_names_real_settings() -> None:
    variables = set(re.findall(r"\b(MAILROOM_[A-Z_]+)=", DOCKERFILE))
    assert variables
    assert variables <= setting_variables()
