"""The import contracts (pyproject.toml, [tool.importlinter]): the tree keeps them, and a tree
with one planted import that breaks a rule fails `lint-imports`, naming that rule alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailroom.services import SERVICES

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = 5


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the packages under `root`, whatever the environment has installed."""
    package_dirs = [root / "libs" / "common", *sorted((root / "services").iterdir()), root]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(d) for d in package_dirs if d.is_dir()),
    }
    return subprocess.run(
        [str(LINT_IMPORTS), str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def copy_sources(destination: Path) -> None:
    """The packages' Python sources and the configuration, nothing else."""
    only_python = shutil.ignore_patterns("__pycache__", "*.sql", "*.html", "*.txt", "*.json")
    shutil.copy2(REPO / "pyproject.toml", destination / "pyproject.toml")
    shutil.copytree(REPO / "mailroom", destination / "mailroom", ignore=only_python)
    shutil.copytree(
        REPO / "libs" / "common" / "mailroom_common",
        destination / "libs" / "common" / "mailroom_common",
        ignore=only_python,
    )
    for service in sorted((REPO / "services").iterdir()):
        for package in service.glob("mailroom_*"):
            shutil.copytree(
                package, destination / "services" / service.name / package.name, ignore=only_python
            )


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {CONTRACTS} kept, 0 broken." in result.stdout


PLANTED = [
    pytest.param(
        "services/item_generator/mailroom_item_generator/generator.py",
        "import mailroom_completion",
        "Services are independent of each other",
        "mailroom_item_generator.generator -> mailroom_completion",
        id="service-imports-service",
    ),
    pytest.param(
        "services/completion/mailroom_completion/completion.py",
        "from mailroom import campaigns",
        "Services do not import the mailroom CLI",
        "mailroom_completion.completion -> mailroom.campaigns",
        id="service-imports-cli",
    ),
    pytest.param(
        "libs/common/mailroom_common/db.py",
        "import mailroom_bounce_processor.records",
        "mailroom_common imports no service and not the mailroom CLI",
        "mailroom_common.db -> mailroom_bounce_processor.records",
        id="common-imports-service",
    ),
    pytest.param(
        "mailroom/campaigns.py",
        "from mailroom_config.api import openapi_document",
        "The CLI uses a service only through its service and public modules",
        "mailroom.campaigns -> mailroom_config.api",
        id="cli-imports-service-internals",
    ),
    pytest.param(
        "mailroom/campaigns.py",
        "from mailroom import cli",
        "The CLI's modules import each other without cycles",
        ".campaigns -> .cli",
        id="cli-import-cycle",
    ),
]


@pytest.mark.parametrize(("module", "planted", "contract", "culprit"), PLANTED)
def test_a_planted_import_breaks_its_contract(
    tmp_path: Path, module: str, planted: str, contract: str, culprit: str
) -> None:
    copy_sources(tmp_path)
    with (tmp_path / module).open("a") as source:
        source.write(f"\n{planted}\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Contracts: {CONTRACTS - 1} kept, 1 broken." in result.stdout, result.stdout
    assert re.search(rf"^{re.escape(contract)} BROKEN\b", result.stdout, re.MULTILINE), (
        result.stdout
    )
    assert culprit in result.stdout.split("Broken contracts", 1)[1], result.stdout


def test_the_cli_runs_a_service_through_its_service_module() -> None:
    """services.py imports by name, which lint-imports cannot see: only `service` modules."""
    services = (d.name for d in (REPO / "services").iterdir() if d.is_dir())
    expected = {name: f"mailroom_{name}.service" for name in services}
    assert expected == SERVICES
