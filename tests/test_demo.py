"""``make demo``'s last lines (issue 21): they say how to get the ``deformrt`` command, and every next
step they print runs as printed, in a shell where ``deformrt`` is on PATH only after activating the
virtual environment (as after ``make demo``). The demo runs as the Makefile runs it, with a small body
and size; its exports use the synthetic checkpoint, so their checks are clean (strict, no float64)."""

from __future__ import annotations

import re
import subprocess
import sys

from cli_shell import BARE_PATH, ENV, ROOT, shell, table_rows


def test_demo_ends_with_how_to_get_the_command_and_next_steps_that_run_as_printed(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "scripts/demo.py", "--body", "R-50-C4", "--shape", "64x64", "--out-dir",
                           str(out)], cwd=ROOT, env={**ENV, "PATH": BARE_PATH}, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    # The synthetic checkpoint gives the demo's exports a clean, strict check.
    rows = table_rows(text, "yes")
    assert rows and all(row.endswith(" yes") for row in rows) and "ill-conditioned" not in text
    assert text.count("PASSED") == 1 and "(vs fp64)" not in text
    tail = text[text.index("Next steps:"):].splitlines()
    activate = re.search(r"first run `(source \S+/bin/activate)`", tail[0]).group(1)
    commands = [line.strip() for line in tail[1:] if line.startswith("  deformrt ")]
    assert len(commands) >= 4 and tail[-1] == "  deformrt --help"
    assert {c.split()[1] for c in commands} >= {"info", "compare", "bench", "synthetic-checkpoint", "--help"}
    for command in commands:
        done = shell(f"{activate} && {command}", path=BARE_PATH)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
