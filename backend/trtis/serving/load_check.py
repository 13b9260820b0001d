"""Load a repository's model in a fresh Python process, the way its backend does, and run it once.

An export's own process has imported whatever the caller's script did (``transformers``, a custom
op library, a module that registers pytree types), so a model file that loads there may not load
in the server. ``run_fresh`` writes nothing: it starts ``python -m trtis.serving.load_check`` in an
empty working folder, which imports only ``trtis.runtimes`` (what the Python-based backends import)
and the op libraries the config declares, loads the model with ``runtimes.load`` and runs the
given feeds; the outputs come back for the caller to compare. A failure raises ``LoadError`` with
the child's own error, which is what the server's log would say.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

ADVICE = ("the server's backend process has only the imports of trtis.runtimes: if the model needs a module your "
          "script imported (custom ops, types its program refers to), name it in the config's op_libraries "
          "parameter (export(..., parameters={'op_libraries': 'module_or_absolute_path'}))")


MARK = "trtis.serving.load_check: "  # the child's line that says why it failed


class LoadError(RuntimeError):
    """The model cannot be loaded or run in a process like the server's."""


def run_fresh(repository: Path, name: str, device: str, feeds: Mapping[str, np.ndarray],
              timeout: float = 900) -> dict[str, np.ndarray]:
    """Outputs of model ``name`` of ``repository`` on ``feeds``, loaded in a new process on ``device``."""
    with tempfile.TemporaryDirectory(prefix="trtis-load-check-") as scratch:
        given, returned = Path(scratch) / "feeds.npz", Path(scratch) / "outputs.npz"
        _save(given, feeds)
        env = {key: value for key, value in os.environ.items() if key != "TRTIS_STATE_DIR"}  # no server's state
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]),  # where trtis is
                                             *filter(None, [env.get("PYTHONPATH")])])
        command = [sys.executable, "-m", "trtis.serving.load_check", str(Path(repository).resolve()), name, device,
                   str(given), str(returned)]
        try:
            done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LoadError(f"model {name!r}: loading and running it in a fresh process took over {timeout:.0f} s")
        if done.returncode != 0:
            marked = [line.removeprefix(MARK) for line in done.stderr.splitlines() if line.startswith(MARK)]
            tail = [line for line in done.stderr.strip().splitlines() if line.strip()]
            reason = marked[-1] if marked else tail[-1] if tail else f"exit status {done.returncode}"
            raise LoadError(f"model {name!r} ran in this process but fails in a fresh one, as it would in the server "
                            f"({reason}); {ADVICE}")
        return _load(returned)


def _save(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Arrays under prefixed keys: a tensor may be named ``file``, savez's own argument."""
    np.savez(path, **{f"tensor:{name}": value for name, value in arrays.items()})


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as saved:
        return {key.removeprefix("tensor:"): saved[key] for key in saved.files}


def main(argv: list[str]) -> None:
    repository, name, device, given, returned = argv
    from trtis import config, runtimes

    try:
        model_config = config.from_text((Path(repository) / name / "config.pbtxt").read_text())
        runtime = runtimes.load(Path(repository) / name, model_config, device)
        feed = runtimes.typed(_load(Path(given)), runtime.inputs)
        try:
            _save(Path(returned), runtime.run(feed))
        finally:
            runtime.close()
    except Exception as error:  # noqa: BLE001 - the parent reports it; the lines of carets and code go
        lines = [line.strip() for line in str(error).splitlines() if line.strip(" ~^\t")]
        print(f"{MARK}{type(error).__name__}: {' / '.join(lines)[:800]}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main(sys.argv[1:])
