"""Processes as /proc shows them: who a pid really is, its children, and ending only those proven ours.

A pid alone names nobody for long: pids are reused, and a pid file outlives a reboot. A process is
identified here by its pid, its start time and the boot it started in, and its executable; the
server's Python backend stubs are found by the shared-memory prefix their command line carries.
Standard library only: the supervisor runs this inside the official Triton image too.
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROC = Path("/proc")
SHM = Path("/dev/shm")
STUB_NAME = "triton_python_backend_stub"
# A server's own prefix for the Python backend's shared-memory regions (``shm-region-prefix-name``):
# random, so that its stubs and regions are told from any other server's.
SHM_PREFIX = re.compile(r"trtis_[0-9a-f]{8}_")


def new_shm_prefix() -> str:
    return f"trtis_{secrets.token_hex(4)}_"


def _checked_prefix(shm_prefix: str) -> str:
    """Refuse what would match other servers' stubs and regions (a damaged state file, say)."""
    if not SHM_PREFIX.fullmatch(shm_prefix or ""):
        raise ValueError(f"{shm_prefix!r} is not a server's shared-memory prefix (trtis_ and 8 hex digits)")
    return shm_prefix


def _boot_id() -> str:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state is [0], ppid [1], start time [19])."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


@dataclass(frozen=True)
class ProcessId:
    """A process as it can be recognised later: the pid is reused, the start time and boot are not."""

    pid: int
    start: int  # clock ticks after boot
    boot: str
    exe: str

    def alive(self) -> bool:
        """Whether this very process still runs (not another one that got the pid, not a zombie)."""
        return identify(self.pid) == self

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ProcessId:
        return cls(int(data["pid"]), int(data["start"]), str(data["boot"]), str(data["exe"]))


def identify(pid: int) -> ProcessId | None:
    """The running process ``pid`` (None when there is none, or it is a zombie)."""
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":
        return None
    try:
        exe = os.readlink(PROC / str(pid) / "exe")
    except OSError:  # another user's process, or a kernel thread: nothing we started
        exe = ""
    return ProcessId(pid, int(fields[19]), _boot_id(), exe)


def started_at(pid: int) -> float | None:
    """The wall-clock time ``pid`` started (to the second, from the boot time)."""
    fields = _stat(pid)
    if fields is None:
        return None
    boot = next(int(line.split()[1]) for line in (PROC / "stat").read_text().splitlines() if line.startswith("btime"))
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def state(pid: int) -> str | None:
    """The process state letter (R, S, Z, ...), or None when there is no such pid."""
    fields = _stat(pid)
    return fields[0] if fields else None


def _pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def children(pid: int) -> list[int]:
    """The direct children of ``pid``, zombies included."""
    return [child for child in _pids() if (fields := _stat(child)) is not None and int(fields[1]) == pid]


def named(name: str) -> list[int]:
    """The live processes whose executable is called ``name`` (those of this user, or all as root)."""
    found = []
    for pid in _pids():
        try:
            if Path(os.readlink(PROC / str(pid) / "exe")).name == name:
                found.append(pid)
        except OSError:
            pass
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return [part.decode(errors="replace") for part in (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")[:-1]]
    except OSError:
        return []


def stubs(shm_prefix: str) -> dict[int, str]:
    """The live Python backend stubs of one server, wherever they were re-parented: pid -> instance name.

    A stub's command line is ``stub <model file> <shm region> <sizes> <parent pid> <backend dir>
    <ipc handle> <instance name> ...``; the region's name starts with the server's own prefix.
    """
    _checked_prefix(shm_prefix)
    found = {}
    for pid in _pids():
        arguments = cmdline(pid)
        if len(arguments) > 8 and Path(arguments[0]).name == STUB_NAME and arguments[2].startswith(shm_prefix):
            found[pid] = arguments[8]
    return found


def stub_model(pid: int) -> str:
    """The model a live stub serves: its model file is ``<repository>/<model>/<version>/<file>``."""
    arguments = cmdline(pid)
    return Path(arguments[1]).parent.parent.name if len(arguments) > 1 else ""


def dead_stubs(server_pid: int) -> list[int]:
    """The server's stub children that died: Triton 2.51 never reaps them, so they stay zombies."""
    return [pid for pid in children(server_pid) if state(pid) == "Z" and _comm(pid) == STUB_NAME[:15]]


def _comm(pid: int) -> str:
    """The process name, as the kernel keeps it (15 characters)."""
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (0 when it is gone)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def end(processes: list[ProcessId], grace: float) -> None:
    """SIGTERM each process that is still the one recorded, SIGKILL those alive after ``grace`` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        living = [p for p in processes if p.alive()]
        for process in living:
            try:
                os.kill(process.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(p.alive() for p in living) and time.monotonic() < deadline:
            time.sleep(0.05)


def end_stubs(shm_prefix: str) -> int:
    """Kill the stubs of the server that used ``shm_prefix`` (they hold nothing worth a grace period)."""
    found = [p for pid in stubs(shm_prefix) if (p := identify(pid)) is not None]
    end(found, grace=0)
    return len(found)


def regions(shm_prefix: str) -> list[Path]:
    """The server's Python-backend shared-memory regions in /dev/shm."""
    return list(SHM.glob(f"{_checked_prefix(shm_prefix)}*"))


def make_regions_private(shm_prefix: str) -> None:
    """Make the server's /dev/shm regions readable by its own user alone: they hold every request's
    tensors, and the Python backend creates them 0644 whatever the umask (boost.interprocess sets it)."""
    for region in regions(shm_prefix):
        try:
            if region.stat().st_mode & 0o077:
                region.chmod(0o600)
        except OSError:  # gone meanwhile, or another user's
            pass


def remove_shared_memory(shm_prefix: str) -> list[str]:
    """Delete the server's leftover /dev/shm regions; returns their names."""
    removed = []
    for region in regions(shm_prefix):
        try:
            region.unlink()
            removed.append(region.name)
        except OSError:
            pass
    return removed
