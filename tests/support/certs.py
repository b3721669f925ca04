"""Throwaway X.509 material for TLS tests, made with the openssl CLI: a CA, and certificates it signs."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.toolchain import require_tool


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class TestCA:
    """A CA in `directory` that issues server certificates (for names and IPs) and client certificates."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "ca") -> None:
        require_tool("openssl", "makes the TLS tests' certificates")
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory
        self.cert = directory / f"{name}-ca.crt"
        self._key = directory / f"{name}-ca.key"
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=Meshplane test {name}",
            "-keyout", str(self._key), "-out", str(self.cert),
        )  # fmt: skip

    def server(
        self, name: str, *, dns: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",)
    ) -> Issued:
        names = [f"DNS:{d}" for d in dns] + [f"IP:{ip}" for ip in ips]
        return self._issue(name, f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth")

    def client(self, name: str) -> Issued:
        return self._issue(name, "extendedKeyUsage=clientAuth")

    def _issue(self, name: str, extensions: str) -> Issued:
        key, csr, cert, ext = (self._dir / f"{name}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
        ext.write_text(extensions + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self._key), "-CAcreateserial",
            "-days", "2", "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        return Issued(cert, key)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def replace_file(target: Path, source: Path) -> None:
    """Replace `target` with `source`'s bytes as Kubernetes updates a Secret volume: a new file renamed in."""
    staged = target.with_name(target.name + ".new")
    staged.write_bytes(source.read_bytes())
    staged.replace(target)
