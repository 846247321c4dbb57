"""An ACME CA on this machine for the tests: Debian's `pebble`, with `pebble-challtestsrv` as
the DNS that points every name at the test server (stdlib only, plus openssl).

    with Pebble(tmp_path, listen="10.231.20.1", target="10.231.20.2") as ca:
        ca.directory        # https://10.231.20.1:14000/dir, for [proxy] acme_directory
        ca.tls_root         # the throw-away CA of pebble's own TLS: acme_ca_bundle on the server
        ca.issuing_root()   # the root that signs the certificates it issues (new at every start)
        ca.refuse("refused.test")  # SERVFAIL for one name: its order is refused

pebble validates http-01 on port 80 of the address the DNS gives (httpPort 80): the server's
nginx answers it. PEBBLE_VA_NOSLEEP=1 and PEBBLE_WFE_NONCEREJECT=0 make it quick and
deterministic.
"""
from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

ACME_PORT, MANAGEMENT_PORT, DNS_PORT, DNS_MANAGEMENT_PORT = 14000, 15000, 8053, 8055


def unavailable() -> str | None:
    for tool in ("pebble", "pebble-challtestsrv", "openssl"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install {'openssl' if tool == 'openssl' else 'pebble'})"
    return None


def throwaway_ca(directory: Path, address: str, name: str = "") -> tuple[Path, Path, Path]:
    """A CA and a certificate that it signs for ADDRESS (an IP), or for the host NAME when
    given: (ca.pem, cert.pem, key.pem)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "key.pem", "cert.csr", "cert.pem"))
    run = lambda *argv: subprocess.run(["openssl", *argv], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=cfd test CA", "-keyout", str(ca_key), "-out", str(ca))
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name or address}",
        "-keyout", str(key), "-out", str(csr))
    extensions = directory / "san.cnf"
    extensions.write_text(f"subjectAltName={f'DNS:{name}' if name else f'IP:{address}'}\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
        "-extfile", str(extensions), "-out", str(cert))
    return ca, cert, key


class Pebble:
    def __init__(self, base: Path, listen: str, target: str) -> None:
        self.dir = Path(base) / "pebble"
        self.listen, self.target = listen, target
        self.directory = f"https://{listen}:{ACME_PORT}/dir"
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> Pebble:
        self.tls_root, cert, key = throwaway_ca(self.dir, self.listen)
        config = self.dir / "pebble-config.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"{self.listen}:{ACME_PORT}", "managementListenAddress": f"{self.listen}:{MANAGEMENT_PORT}",
            "certificate": str(cert), "privateKey": str(key), "httpPort": 80, "tlsPort": 443,
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        dns = f"{self.listen}:{DNS_PORT}"
        for name, argv in (
                ("challtestsrv", ["pebble-challtestsrv", "-defaultIPv4", self.target, "-defaultIPv6", "",
                                  "-dns01", dns, "-http01", "", "-https01", "", "-tlsalpn01", "",
                                  "-management", f"{self.listen}:{DNS_MANAGEMENT_PORT}"]),
                ("pebble", ["pebble", "-config", str(config), "-dnsserver", dns])):
            with open(self.dir / f"{name}.log", "ab") as log:
                self._procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                                    start_new_session=True))
        self._tls = ssl.create_default_context(cafile=str(self.tls_root))
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(self.directory, timeout=2, context=self._tls).read()
                break
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self._procs):
                    logs = "\n".join((self.dir / f"{n}.log").read_text(errors="replace")[-1500:]
                                     for n in ("challtestsrv", "pebble"))
                    self.stop()
                    raise RuntimeError(f"pebble did not answer at {self.directory}:\n{logs}") from None
                time.sleep(0.1)
        return self

    def issuing_root(self) -> str:
        url = f"https://{self.listen}:{MANAGEMENT_PORT}/roots/0"
        return urllib.request.urlopen(url, timeout=5, context=self._tls).read().decode()

    def point(self, host: str, address: str) -> None:
        """challtestsrv answers A queries for HOST with ADDRESS (the others: the target)."""
        self._manage("add-a", {"host": host, "addresses": [address]})

    def refuse(self, host: str) -> None:
        """challtestsrv answers SERVFAIL for HOST: pebble cannot validate it, and refuses the order."""
        self._manage("set-servfail", {"host": host})

    def _manage(self, what: str, data: dict) -> None:
        url = f"http://{self.listen}:{DNS_MANAGEMENT_PORT}/{what}"
        request = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST")
        urllib.request.urlopen(request, timeout=5).read()

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self._procs = []

    def __enter__(self) -> Pebble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
