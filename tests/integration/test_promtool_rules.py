"""Prometheus' own ``promtool`` on deploy/prometheus/: ``check rules`` accepts rules.yml and
``test rules`` passes rules_test.yml (every rule firing and not firing). Skipped only when promtool
is not installed (Debian package ``prometheus``, installed by scripts/install-system.sh)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from drivers.prometheus_rules import RULES_FILE
from policies.metrics.rules import load_metric_rules

TESTS_FILE = RULES_FILE.with_name("rules_test.yml")
PROMTOOL = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMTOOL is None,
                       reason="promtool not installed (Debian package prometheus; scripts/install-system.sh)"),
]


def test_promtool_check_rules_accepts_the_file() -> None:
    """``promtool check rules`` accepts deploy/prometheus/rules.yml with every rule."""
    assert PROMTOOL is not None
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES_FILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(load_metric_rules().rules)} rules found" in out.stdout


def test_promtool_test_rules_passes() -> None:
    """``promtool test rules`` passes rules_test.yml (every rule firing and not firing)."""
    assert PROMTOOL is not None
    out = subprocess.run([PROMTOOL, "test", "rules", TESTS_FILE.name], capture_output=True, text=True, timeout=60,
                         cwd=TESTS_FILE.parent)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The promtool run can fail: one expected annotation changed makes it exit non-zero."""
    assert PROMTOOL is not None
    shutil.copy(RULES_FILE, tmp_path / "rules.yml")
    (tmp_path / "rules_test.yml").write_text(TESTS_FILE.read_text().replace("(80m/s)", "(81m/s)"))
    out = subprocess.run([PROMTOOL, "test", "rules", "rules_test.yml"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode != 0
