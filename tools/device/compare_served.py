"""Two bench.sh reports of one lease side by side: requests/s and latency per level, and the
ratio of the candidate to the baseline (at each level and at their peaks). Made for the image
tree against the embedded server (docs/performance/h200-image-tree.md), fit for any two arms.

    .venv/bin/python tools/device/compare_served.py BASELINE.json CANDIDATE.json --output PREFIX
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def compare(baseline: dict, candidate: dict) -> dict:
    """The levels both reports measured, each with both arms' figures and their ratio."""
    theirs = {(level["clients"], level["concurrency"]): level for level in candidate["served"]}
    levels = []
    for level in baseline["served"]:
        other = theirs.get((level["clients"], level["concurrency"]))
        if other is not None:
            levels.append({"clients": level["clients"], "concurrency": level["concurrency"],
                           "baseline_rps": level["throughput"], "candidate_rps": other["throughput"],
                           "ratio": round(other["throughput"] / level["throughput"], 3),
                           "baseline_p50_ms": level["p50_ms"], "candidate_p50_ms": other["p50_ms"],
                           "baseline_p99_ms": level["p99_ms"], "candidate_p99_ms": other["p99_ms"],
                           "errors": level["errors"] + other["errors"]})
    if not levels:
        raise SystemExit("compare_served.py: the two reports share no level (clients and concurrency)")
    peaks = max(lv["baseline_rps"] for lv in levels), max(lv["candidate_rps"] for lv in levels)
    return {"device": baseline["device"], "date": baseline["date"], "baseline": baseline["settings"],
            "candidate": candidate["settings"], "levels": levels, "baseline_peak_rps": peaks[0],
            "candidate_peak_rps": peaks[1], "peak_ratio": round(peaks[1] / peaks[0], 3),
            "lowest_ratio": min(lv["ratio"] for lv in levels)}


def markdown(report: dict, names: tuple[str, str]) -> str:
    rows = [f"| {lv['clients']} x {lv['concurrency']} | {lv['baseline_rps']:,.0f} | {lv['candidate_rps']:,.0f} | "
            f"{lv['ratio']:.3f} | {lv['baseline_p50_ms']:.1f} / {lv['candidate_p50_ms']:.1f} | "
            f"{lv['baseline_p99_ms']:.1f} / {lv['candidate_p99_ms']:.1f} | {lv['errors']} |" for lv in report["levels"]]
    return "\n".join([
        f"# {names[1]} against {names[0]}: {report['device']}, {report['date']}", "",
        f"Peak: {report['candidate_peak_rps']:,.0f} against {report['baseline_peak_rps']:,.0f} requests/s, "
        f"**{report['peak_ratio']:.3f}x**; lowest ratio at any level {report['lowest_ratio']:.3f}x.", "",
        f"| clients x in flight | {names[0]} req/s | {names[1]} req/s | ratio | p50 ms | p99 ms | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |", *rows, "",
        f"{names[0]}: {report['baseline']}. {names[1]}: {report['candidate']}.", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--output", type=Path, required=True, help="PREFIX: writes PREFIX.json and PREFIX.md")
    args = parser.parse_args()
    report = compare(json.loads(args.baseline.read_text()), json.loads(args.candidate.read_text()))
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.output.with_suffix(".md").write_text(markdown(report, (args.baseline.stem, args.candidate.stem)))
    print(markdown(report, (args.baseline.stem, args.candidate.stem)))


if __name__ == "__main__":
    main()
