"""A bounded HTTP load generator for hand-over tests (stdlib only: threads + http.client).

    with Load(port, threads=8, max_seconds=120) as load:
        load.wait_for(ok=20)          # traffic is flowing
        ...                           # deploy, restart, roll back
    assert load.failed == 0, load.failures[:5]
    print(load.ok, load.worst_latency, load.releases_seen)

Every request opens a new connection (``Connection: close``), so each one goes
through accept() on the listening socket, which is what a hand-over changes. It
only ever targets 127.0.0.1 or a test host the tests made (the namespace hosts'
10.213.0.0/24, the systemd servers' 10.231.0.0/16), and it stops by itself after
``max_seconds`` or ``max_requests``, whichever comes first, even if nobody calls stop().
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import threading
import time
from types import TracebackType

HOST = "127.0.0.1"
TEST_NETWORKS = ("127.0.0.0/8", "10.213.0.0/24", "10.231.0.0/16")  # ours: loopback and the tests' hosts


class Load:
    def __init__(self, port: int, threads: int = 8, path: str = "/healthz",
                 max_seconds: float = 120.0, max_requests: int | None = None,
                 timeout: float = 10.0, pause: float = 0.0, host: str = HOST) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"bad port {port}")
        if not any(ipaddress.ip_address(host) in ipaddress.ip_network(net) for net in TEST_NETWORKS):
            raise ValueError(f"{host} is not loopback or a test host of ours: no load goes there")
        self.host = host
        self.port = port
        self.threads = threads
        self.path = path
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.timeout = timeout
        self.pause = pause  # seconds each thread sleeps between its requests (0: flat out)
        self.ok = 0
        self.failed = 0
        self.failures: list[tuple[float, str]] = []  # the first 100: (seconds since start, error)
        self.latencies: list[float] = []  # seconds, of every request, ok or not
        self.releases_seen: set[str] = set()
        self.per_release: dict[str, int] = {}
        self.last_release: str | None = None
        self.longest_gap = 0.0  # longest time in seconds with no request succeeding
        self._last_ok = 0.0
        self.started = 0.0
        self.stopped = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    # --- results ----------------------------------------------------------------------
    @property
    def total(self) -> int:
        return self.ok + self.failed

    @property
    def worst_latency(self) -> float:
        with self._lock:
            return max(self.latencies, default=0.0)

    @property
    def duration(self) -> float:
        return (self.stopped or time.monotonic()) - self.started

    @property
    def rps(self) -> float:
        """ok requests per second over the run."""
        return self.ok / self.duration if self.duration > 0 else 0.0

    def summary(self) -> str:
        return (f"{self.ok} ok, {self.failed} failed in {self.duration:.1f}s, worst "
                f"{self.worst_latency * 1000:.0f}ms, longest gap {self.longest_gap * 1000:.0f}ms, releases {sorted(self.releases_seen)}, "
                f"first failures {self.failures[:3]}")

    # --- running ----------------------------------------------------------------------
    def _one(self) -> None:
        began = time.monotonic()
        error: str | None = None
        release: str | None = None
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", self.path, headers={"Connection": "close"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                error = f"HTTP {response.status}"
            elif self.path == "/healthz":
                release = json.loads(body).get("release")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        ended = time.monotonic()
        with self._lock:
            self.latencies.append(ended - began)
            if error is None:
                self.ok += 1
                self.longest_gap = max(self.longest_gap, ended - self._last_ok)
                self._last_ok = ended
                if release is not None:
                    self.releases_seen.add(release)
                    self.per_release[release] = self.per_release.get(release, 0) + 1
                    self.last_release = release
            else:
                self.failed += 1
                if len(self.failures) < 100:
                    self.failures.append((round(began - self.started, 3), error))

    def _run(self) -> None:
        deadline = self.started + self.max_seconds
        while not self._stop.is_set():
            if time.monotonic() >= deadline:
                break
            if self.max_requests is not None:
                with self._lock:
                    if self.ok + self.failed >= self.max_requests:
                        break
            self._one()
            if self.pause:
                self._stop.wait(self.pause)

    def start(self) -> Load:
        self.started = self._last_ok = time.monotonic()
        self._workers = [threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
                         for i in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 5)
        if not self.stopped:
            self.stopped = time.monotonic()
            with self._lock:
                self.longest_gap = max(self.longest_gap, self.stopped - self._last_ok)

    def wait(self) -> None:
        """Block until the workers stop by themselves (max_seconds or max_requests)."""
        for worker in self._workers:
            worker.join()
        self.stop()

    def wait_for(self, ok: int, timeout: float = 30.0) -> None:
        """Block until at least `ok` requests succeeded (raise TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        while self.ok < ok:
            if time.monotonic() > deadline or not any(w.is_alive() for w in self._workers):
                raise TimeoutError(f"load on port {self.port} got no traffic through: {self.summary()}")
            time.sleep(0.02)

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
