"""The README and the docs pages of docs/ (serving, converter, detection, zh-CN quick start): every
command block is marked, the marks are honoured, the links lead somewhere, and the samples that need
no detection server run as written (the converter's own model end to end, the training smoke run).
The samples that talk to the served detection example are run by tests/detection/test_readme.py."""
from __future__ import annotations

import json
import re

import pytest

from docs.marked_blocks import PAGES, ROOT, RUN_BY, RUNNABLE, blocks, blocks_named, checkout, run_shell


@pytest.mark.parametrize("page", PAGES)
def test_every_command_block_is_marked_tested_or_illustrative(page):
    for block in blocks(page):
        if block.language in RUNNABLE:
            assert block.marker, f"{block.where}: mark the block <!-- test: NAME --> or <!-- illustrative: why -->"
        if block.marker and block.marker[0] == "test":
            assert block.marker[1] in RUN_BY, f"{block.where}: no test runs blocks named {block.marker[1]!r}"
        if block.marker and block.marker[0] == "illustrative":
            assert len(block.marker[1]) > 10, f"{block.where}: say why the block is not run"


def test_every_name_a_test_runs_is_in_the_docs():
    for name in RUN_BY:
        blocks_named(name)


def test_the_blocks_marked_ci_are_what_ci_runs():
    """.ci/run must run each command of a ``test: ci`` block (the README's two commands)."""
    ci = (ROOT / ".ci" / "run").read_text()
    for block in blocks_named("ci"):
        for line in block.code.splitlines():
            for command in (part.strip() for part in line.split("&&")):
                assert command in ci, f"{block.where}: .ci/run does not run {command!r}"


def _anchors(path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


# Every hand-written page, the performance notes included (the reports bench.sh writes have no links).
LINKED_PAGES = sorted({*PAGES, *(str(path.relative_to(ROOT)) for path in (ROOT / "docs").rglob("*.md"))})


@pytest.mark.parametrize("page", LINKED_PAGES)
def test_every_link_leads_to_a_file_and_heading(page):
    source = ROOT / page
    for target in re.findall(r"\]\(([^)\s]+)\)", source.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve() if path else source
        assert resolved.exists(), f"{page}: link {target} leads nowhere"
        if anchor:
            assert anchor in _anchors(resolved), f"{page}: {path or page} has no heading for #{anchor}"


def test_the_converter_example_runs_as_a_script(tmp_path):
    """docs/converter.md's three blocks saved as classifier.py and run as the page says, in a
    checkout: a model of its own, every CPU format, served, called and benchmarked."""
    script = "\n\n".join(block.code for block in blocks_named("converter-example"))
    assert not re.search(r"^\s*(from|import) detection", script, flags=re.M), "the example imports nothing from example/"
    root = checkout(tmp_path / "checkout")
    (root / "classifier.py").write_text(script)
    run = run_shell(blocks_named("converter-run")[0].code, root)
    for fmt in ("onnx", "onnx-int8", "torchscript", "compiled"):
        assert re.search(rf"^{fmt} \[\d( \d){{3}}\]$", run.stdout, flags=re.M), f"no served answer of {fmt}"
        assert f"classifier-{fmt}: PyTorch vs" in run.stdout
    assert len(re.findall(r"^3_\d+\S*\.jpg class \d$", run.stdout, flags=re.M)) == 7
    written = sorted(p.name for p in (root / "model_repository-classifier").iterdir())
    assert written == ["classifier", "classifier-compiled", "classifier-onnx", "classifier-onnx-int8",
                       "classifier-preprocess", "classifier-torchscript"]
    report = json.loads((root / "reports" / "classifier.json").read_text())
    assert [row["concurrency"] for row in report["served"]] == [1, 4]
    assert all(row["errors"] == 0 and row["throughput"] > 0 for row in report["served"])
    assert report["in_process"]["throughput"] > 0 and report["naive"]


def test_the_training_smoke_run_ends_and_saves_a_checkpoint(tmp_path):
    root = checkout(tmp_path / "checkout")
    run = run_shell(blocks_named("detection-train")[0].code, root, timeout=300)
    assert "after 5 iterations" in run.stdout
    assert (root / "reports" / "smoke" / "centernet_dlav0_34.pth").stat().st_size > 1e6
    assert json.loads((root / "reports" / "smoke" / "training_log.json").read_text())[-1]["iteration"] == 5
