"""The Makefile documents itself: `make help` lists every target a user may call, with its `##` description."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def phony_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    return re.search(r"^\.PHONY: (.+)$", text, re.M).group(1).split()


def test_make_help_lists_every_target_with_its_description():
    listed = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=True).stdout
    described = dict(re.findall(r"^  (\S+)\s+(.+)$", listed, re.M))
    missing = [target for target in phony_targets() if not described.get(target)]
    assert not missing, f"targets without a ## description in `make help`: {missing}"
    assert described["serve"].startswith("serve the shipped models")
