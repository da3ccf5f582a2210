"""Checks on the source itself: generated code is current, the API lints clean, types hold."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, require_tool

GENERATED = ROOT / "client" / "mshare" / "v1"


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "tools" / "genproto.py"), str(tmp_path)], check=True, capture_output=True)
    fresh = tmp_path / "mshare" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == sorted(p.name for p in GENERATED.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    _, mismatch, errors = filecmp.cmpfiles(fresh, GENERATED, names, shallow=False)
    assert not mismatch and not errors, f"stale generated code {mismatch + errors}: run `make proto`"


def test_buf_lint() -> None:
    result = subprocess.run(
        [require_tool("buf", "npm package @bufbuild/buf"), "lint"], cwd=ROOT / "proto", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_lint_and_format() -> None:
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
