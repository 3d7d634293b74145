"""The soak (tests/soak.py) for under a minute: three workers, a mix of tasks, faults every two
seconds on average; then every promise checked against the ledger (docs/reliability.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, child_env


def test_a_short_soak_loses_nothing_and_explains_every_duplicate(tmp_path: Path) -> None:
    report_file = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.soak", "--seconds", "35", "--rate", "60",
         "--fault-every", "2", "--json", str(report_file)],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert report_file.exists(), done.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert report["accepted"] > 1000 and sum(report["faults"].values()) >= 8, report
    assert report["lost"] == 0 and report["stuck"] == 0, report
    assert report["duplicates_unexplained"] == 0, report
    assert report["ticks_enqueued_twice"] == 0 and report["ticks_seen"] > 20, report
    assert report["outcomes"] == {"SUCCESSFUL": report["accepted"]}, report
    assert done.returncode == 0, done.stderr[-3000:]
