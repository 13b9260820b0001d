"""docs/performance/README.md's Python sample saved as a script, without an ``if __name__ ==
"__main__":`` guard, and run as a user runs it: the naive baseline server starts in a process of
its own without running the script again."""
from __future__ import annotations

import json
import re
import subprocess
import sys

from docs.marked_blocks import ROOT


def test_the_library_sample_runs_as_a_script_without_a_main_guard(tiny, tmp_path):
    (sample,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "performance" / "README.md").read_text(), flags=re.S)
    first, rest = sample.split("\n", 1)
    assert first.startswith("repository, model, files = ") and "seconds=10" in rest and "__main__" not in sample
    (tmp_path / "numbers").mkdir()
    (tmp_path / "numbers" / "1.txt").write_text("2.5")
    script = tmp_path / "my_bench.py"
    script.write_text(f"repository, model, files = {str(tiny.root)!r}, 'tiny-chain', ['numbers']\n"
                      + rest.replace("seconds=10", "seconds=0.5, warmup=0.2"))
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads((tmp_path / "reports" / "my-model.json").read_text())
    assert [row["concurrency"] for row in found["naive"]] == [1, 2, 4]
    assert all(row["throughput"] > 0 and row["errors"] == 0 for row in found["naive"])
