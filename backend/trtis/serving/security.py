"""Who may call what: Triton's restricted API groups behind keys, TLS for gRPC, and what an address exposes.

Triton checks a header on each restricted group (``--http-restricted-api``,
``--grpc-restricted-protocol``). The admin groups sit behind the admin key; with an inference key,
inference and model metadata sit behind it too. Health stays open for probes. The same flags go to
the embedded server and to the Docker image, so both modes are locked alike (docs/security.md).
"""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ADMIN_HEADER = "admin-key"
INFERENCE_HEADER = "inference-key"
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"  # gRPC metadata carries the header under this prefix
# What a stranger could do with each: silence or flood the log, read traffic patterns, register
# the backend's own shared memory (the first step of CVE-2025-23319/23320/23334), load models.
ADMIN_APIS = ("logging", "trace", "shared-memory", "model-repository", "statistics")
INFERENCE_APIS = ("inference", "metadata", "model-config")
_KEY = re.compile(r"[A-Za-z0-9_.~-]{16,}")


class SecurityError(ValueError):
    """A key or certificate setting that cannot work."""


def new_key() -> str:
    return secrets.token_urlsafe(32)


def _checked(key: str, where: str) -> str:
    key = key.strip()
    if not _KEY.fullmatch(key):
        raise SecurityError(f"the key in {where} must be at least 16 characters of A-Z a-z 0-9 _ . ~ - "
                            "(Triton takes it inside a flag): make one with "
                            "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return key


def read_key(path: Path) -> str:
    try:
        return _checked(Path(path).read_text(), str(path))
    except FileNotFoundError:
        raise SecurityError(f"key file {path} does not exist") from None


def key_file(path: Path) -> str:
    """The key in ``path``, made (random, readable by this user only) when the file does not exist."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(new_key() + "\n")
    return read_key(path)


@dataclass(frozen=True)
class GrpcTls:
    """gRPC over TLS: the server's PEM certificate and key; with ``client_ca``, clients must present
    a certificate signed by it (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def files(self) -> list[Path]:
        return [Path(p) for p in (self.cert, self.key, self.client_ca) if p is not None]


@dataclass(frozen=True, kw_only=True)
class Security:
    """How a server is locked. The default locks nothing (``serve()`` for tests and sweeps);
    ``start.sh`` locks the admin APIs with a key unless told otherwise."""

    admin_key: str | None = None
    inference_key: str | None = None
    grpc_tls: GrpcTls | None = None

    def __post_init__(self):
        for name in ("admin_key", "inference_key"):
            if getattr(self, name) is not None:
                _checked(getattr(self, name), name)
        if self.grpc_tls is not None:
            missing = [str(p) for p in self.grpc_tls.files() if not Path(p).is_file()]
            if missing:
                raise SecurityError(f"TLS file(s) not found: {', '.join(missing)}")

    @property
    def admin_headers(self) -> dict[str, str]:
        """What an admin call needs, as tritonclient's ``headers=`` of either protocol (HTTP reads
        the header as named, gRPC under Triton's prefix); empty when nothing is locked."""
        return _headers(ADMIN_HEADER, self.admin_key)

    @property
    def inference_headers(self) -> dict[str, str]:
        return _headers(INFERENCE_HEADER, self.inference_key)

    def server_flags(self, path: Callable[[Path], str] = lambda p: str(Path(p).resolve())) -> list[str]:
        """tritonserver's flags for these settings; ``path`` maps a TLS file to where the server sees it."""
        flags = []
        for apis, header, key in ((ADMIN_APIS, ADMIN_HEADER, self.admin_key),
                                  (INFERENCE_APIS, INFERENCE_HEADER, self.inference_key)):
            if key:
                flags += [f"--http-restricted-api={','.join(apis)}:{header}={key}",
                          f"--grpc-restricted-protocol={','.join(apis)}:{header}={key}"]
        tls = self.grpc_tls
        if tls is not None:
            flags += ["--grpc-use-ssl=true", f"--grpc-server-cert={path(tls.cert)}", f"--grpc-server-key={path(tls.key)}"]
            if tls.client_ca is not None:
                flags += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={path(tls.client_ca)}"]
        return flags

    def exposure_warnings(self, host: str, http_port: int, grpc_port: int, metrics_port: int) -> list[str]:
        """What anyone who reaches ``host`` can do with these settings; nothing on a loopback address."""
        if _loopback(host):
            return []
        where = "every network of this machine" if host in ("0.0.0.0", "::", "") else host
        warnings = [f"HTTP (port {http_port}) is plain text on {where}: Triton has no TLS for HTTP, so images "
                    "and keys sent over it can be read, and the bundled Triton 2.51 has a known HTTP crash "
                    "(CVE-2025-23310); put a TLS reverse proxy in front (docs/security.md)",
                    f"metrics (port {metrics_port}) are open to anyone on {where}: they show the models and their load"]
        if self.grpc_tls is None:
            warnings.append(f"gRPC (port {grpc_port}) is plain text: turn TLS on with --grpc-tls-cert/--grpc-tls-key")
        if self.inference_key is None:
            warnings.append("anyone who reaches the server can run inference and read model metadata: "
                            "require a key with --inference-key-file")
        if self.admin_key is None:
            warnings.append("the admin APIs (logging, trace, shared memory, model repository, statistics) are "
                            "open to anyone: drop --no-admin-key")
        return warnings


def _headers(name: str, key: str | None) -> dict[str, str]:
    return {name: key, GRPC_HEADER_PREFIX + name: key} if key else {}


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
