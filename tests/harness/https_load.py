"""Load over real HTTPS for the edge's tests (stdlib only): threads fetching https://DOMAIN/PATH
from a test server, each request on a new TLS connection verified against the CA's root, until
the block ends. Every request that does not answer 200 with a body is a failure (kept with its
reason); with a JSON body, the `host` it names (the /healthz of several hosts) is counted.

    with HttpsLoad(root_pem, "10.231.21.2", "app.test", path="/healthz") as load:
        ...                                   # redeploy, renew, stop a host
    assert load.failures == [], load.summary()
    load.hosts                                # {"edge1": 812, "edge2": 799}
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from pathlib import Path

TEST_NETWORK = ipaddress.ip_network("10.231.0.0/16")  # the booted servers': no load goes anywhere else


class HttpsLoad:
    def __init__(self, root: Path, address: str, domain: str, threads: int = 4, path: str = "/",
                 max_seconds: float = 300) -> None:
        if ipaddress.ip_address(address) not in TEST_NETWORK:
            raise ValueError(f"{address} is not a test server of ours: no load goes there")
        self.context = ssl.create_default_context(cafile=str(root))
        self.address, self.domain, self.path, self.threads = address, domain, path, threads
        self.max_seconds = max_seconds
        self.requests, self.failures, self.seconds = 0, [], 0.0
        self.hosts: dict[str, int] = {}
        self.done, self.lock = threading.Event(), threading.Lock()

    def one(self) -> str:
        """'' for a good answer, else why not."""
        conn = http.client.HTTPSConnection(self.domain, 443, timeout=10, context=self.context)
        conn._create_connection = lambda _address, *args, **kwargs: socket.create_connection(  # DOMAIN is the server
            (self.address, 443), *args, **kwargs)
        try:
            conn.request("GET", self.path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or not body.strip():
                return f"{response.status}: {body[:80]!r}"
            if response.getheader("Content-Type", "").startswith("application/json"):
                host = json.loads(body).get("host", "?")
                with self.lock:
                    self.hosts[host] = self.hosts.get(host, 0) + 1
            return ""
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()

    def loop(self) -> None:
        while not self.done.is_set() and time.monotonic() < self.started + self.max_seconds:
            why = self.one()
            with self.lock:
                self.requests += 1
                if why:
                    self.failures.append(why)

    def __enter__(self) -> HttpsLoad:
        assert self.one() == ""  # serving before the load starts
        self.hosts.clear()
        self.started = time.monotonic()
        self.workers = [threading.Thread(target=self.loop, daemon=True) for _ in range(self.threads)]
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        for worker in self.workers:
            worker.join(15)
        self.seconds = time.monotonic() - self.started

    def summary(self) -> str:
        hosts = f", answered by {self.hosts}" if self.hosts else ""
        return (f"{self.requests} requests over HTTPS in {self.seconds:.1f}s ({self.requests / self.seconds:.0f}/s, "
                f"{self.threads} threads, a TLS handshake each){hosts}, {len(self.failures)} failed")
