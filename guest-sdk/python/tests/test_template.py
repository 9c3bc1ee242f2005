"""The `ferry new --lang python` template: filled in, its own tests pass."""

import shutil
import subprocess
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parent.parent


def instantiate(target: Path, name: str) -> None:
    """What `ferry new` does: copy the template, fill in the placeholders."""
    shutil.copytree(SDK / "template", target)
    for path in target.rglob("*"):
        if path.is_file():
            path.write_text(path.read_text().replace("{{name}}", name).replace("{{sdk_path}}", str(SDK)))


def test_template_tests_pass(tmp_path: Path) -> None:
    project = tmp_path / "demo"
    instantiate(project, "demo")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
