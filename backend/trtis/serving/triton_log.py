"""What Triton's log says about a failed start: each model that did not load, with its reason."""
from __future__ import annotations

import re
from pathlib import Path

# Triton's line for a model that did not load; its reason is one quoted, escaped string:
#   E1126 07:26:52.406581 8170 model_lifecycle.cc:642] "failed to load 'broken' version 1: Internal: ...\n\nAt:\n..."
LOAD_FAILURE = re.compile(r"\] \"failed to load '(?P<model>[^']+)' version (?P<version>\d+): (?P<reason>.*)\"$", re.M)
REASON_LINES = 20  # of each reason, at most (a Python backend's ends in its traceback)


def load_failures(log: str) -> list[str]:
    """Each model the log says did not load, with Triton's whole reason (the backend's message often
    spans lines: ``RuntimeError: `` on the first, what went wrong on the next), once."""
    failures = []
    for match in LOAD_FAILURE.finditer(log):
        reason = match["reason"].replace("\\n", "\n").replace('\\"', '"')
        lines = [line.rstrip() for line in reason.splitlines() if line.strip()]
        if len(lines) > REASON_LINES:
            lines = [*lines[:REASON_LINES], f"... ({len(lines) - REASON_LINES} more lines in the log)"]
        failures.append(f"model '{match['model']}' (version {match['version']}) did not load: " + "\n    ".join(lines))
    return list(dict.fromkeys(failures))


def start_failure(log: str, where: str, lines: int = 60) -> str:
    """What a failed start shows: the models that did not load and ``where`` the whole log is, or
    (no model named there) the end of the log."""
    failures = load_failures(log)
    if failures:
        return "\n".join([*failures, f"(the whole log: {where})"])
    return f"last lines of {where}:\n" + "\n".join(log.splitlines()[-lines:])


def read_log(path: Path) -> str:
    """The log file's text, or a placeholder when the server never wrote one."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return "(no log)"
