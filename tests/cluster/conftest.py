"""The two-node Swarm of deploy/swarm/cluster.sh, driven from Python: scaling, updates, faults, load and leftovers."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from loadtest.profiles import HttpAnswer, profiles
from service.operations.launch import ROOT

CLUSTER_SCRIPT = ROOT / "deploy" / "swarm" / "cluster.sh"
WORK_DIR = Path(os.environ.get("CLUSTER_DIR", ROOT / ".cluster"))
SERVICE = "modelserver_modelserver"
BALANCER_PORT = int(os.environ.get("BALANCER_PORT", "18080"))
GRPC_PORT = int(os.environ.get("BALANCER_GRPC_PORT", "18081"))
STATS_PORT = int(os.environ.get("BALANCER_STATS_PORT", "18404"))
IMAGE = os.environ.get("IMAGE", "localhost/modelserver:cpu")


def mixed_requests() -> list:
    """Every model's smoke request, weighted as the mixed load-test scenario (digits 6 : sentiment 3 : denoise 1)."""
    return [(model, model.smoke.request()) for model in profiles() for _ in range(model.mixed_weight)]


async def send(client: httpx.AsyncClient, model, request) -> str | None:
    """None when the answer is right, else what went wrong."""
    try:
        response = await client.post(request.path, content=request.body, headers={"content-type": request.content_type})
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}"
    return None if model.smoke.check(HttpAnswer.of(response)) else f"{response.status_code} {response.text[:100]}"


def closed_loop_rate(url: str, seconds: float, concurrency: int = 8) -> dict:
    """Right answers per second from `concurrency` callers each sending when its last answer came back."""
    async def run() -> dict:
        done, failed, stop_at = 0, 0, time.monotonic() + seconds
        cycle = itertools.cycle(mixed_requests())
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            async def caller() -> None:
                nonlocal done, failed
                while time.monotonic() < stop_at:
                    wrong = await send(client, *next(cycle))
                    done += wrong is None
                    failed += wrong is not None
            started = time.monotonic()
            await asyncio.gather(*(caller() for _ in range(concurrency)))
        return {"per_s": done / (time.monotonic() - started), "failed": failed}
    return asyncio.run(run())


class SteadyLoad:
    """An open-loop mixed load at `rate` requests/s in a background thread, for as long as the `with` block lasts."""

    def __init__(self, url: str, rate: float) -> None:
        self.url, self.rate = url, max(1.0, rate)
        self.results: list[tuple[float, float, str | None]] = []  # (sent, answered: seconds since start; None or what went wrong)
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        cycle = itertools.cycle(mixed_requests())
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=self.url, timeout=60, limits=limits) as client:
            started, tasks = self.started, []

            async def one(model, request) -> None:
                sent = time.monotonic() - started
                wrong = await send(client, model, request)
                self.results.append((sent, time.monotonic() - started, wrong))

            for n in itertools.count():
                if self.stopping.is_set():
                    break
                await asyncio.sleep(max(0.0, started + n / self.rate - time.monotonic()))
                tasks.append(asyncio.ensure_future(one(*next(cycle))))
            await asyncio.gather(*tasks)

    def __enter__(self) -> SteadyLoad:
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stopping.set()
        self.thread.join(timeout=120)

    @property
    def sent(self) -> int:
        return len(self.results)

    @property
    def failures(self) -> list[str]:
        return [wrong for _, _, wrong in self.results if wrong is not None]

    @property
    def failed(self) -> int:
        return len(self.failures)

    def answered_in_every_second(self) -> bool:
        """Some request sent in every whole second of the run got its right answer."""
        seconds = int(max(sent for sent, _, _ in self.results))
        answered = {int(sent) for sent, _, wrong in self.results if wrong is None}
        return all(second in answered for second in range(seconds))


class Cluster:
    """The running cluster: both engines, the service, the balancer's view of the replicas."""

    url = f"http://127.0.0.1:{BALANCER_PORT}"
    grpc_target = f"127.0.0.1:{GRPC_PORT}"
    summary_file = ROOT / "runs" / "cluster" / "summary.txt"

    def docker(self, node: int, *args: str, timeout: float = 300) -> str:
        finished = subprocess.run(["docker", "-H", f"unix://{WORK_DIR}/d{node}.sock", *args], capture_output=True,
                                  text=True, timeout=timeout)
        if finished.returncode:
            raise RuntimeError(f"docker {' '.join(args)}: {finished.stderr.strip()}")
        return finished.stdout.strip()

    def stats(self, backend: str = "replicas") -> list[dict]:
        """The balancer's rows for one backend: its servers, then the BACKEND total (haproxy's CSV statistics)."""
        text = httpx.get(f"http://127.0.0.1:{STATS_PORT}/stats;csv", timeout=10).text.lstrip("# ")
        rows = [row for row in csv.DictReader(io.StringIO(text)) if row["pxname"] == backend]
        return [row for row in rows if row["svname"] != "BACKEND"] + [row for row in rows if row["svname"] == "BACKEND"]

    def retried(self) -> int:
        """Requests the balancer has sent again to another replica so far (its backend's retries)."""
        (total,) = [row for row in self.stats() if row["svname"] == "BACKEND"]
        return int(total["wretr"] or 0)

    def served_per_replica(self, backend: str = "replicas") -> dict[str, int]:
        return {row["svname"]: int(row["stot"] or 0) for row in self.stats(backend) if row["svname"] != "BACKEND"}

    def node_names(self) -> dict[str, str]:
        """Swarm node ID -> node1 (the manager, this process's network) or node2 (the namespace)."""
        rows = self.docker(1, "node", "ls", "--format", "{{.ID}} {{.Self}}").splitlines()
        return {node_id: "node1" if self_ == "true" else "node2" for node_id, self_ in (row.split() for row in rows)}

    def running_tasks(self) -> list[dict]:
        ids = self.docker(1, "service", "ps", "-q", "--filter", "desired-state=running", SERVICE).split()
        if not ids:
            return []
        rows = self.docker(1, "inspect", "--format", "{{.ID}} {{.NodeID}} {{.Status.State}} {{.Spec.ContainerSpec.Image}}", *ids)
        return [dict(zip(("id", "node", "state", "image"), row.split())) for row in rows.splitlines()]

    def running_task_ids(self) -> set[str]:
        return {task["id"] for task in self.running_tasks() if task["state"] == "running"}

    def wait_for_replacement(self, before: set[str], timeout: float) -> float:
        """Wait until a task that was not running before runs and the balancer sends to 4 replicas again."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.running_task_ids()
            try:
                if len(now) == 4 and now - before and self.replicas_up_in_balancer() == 4:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"no replacement ready after {timeout} s: {self.replicas_per_node()}")

    def replicas_per_node(self) -> dict[str, int]:
        names, counts = self.node_names(), {}
        for task in self.running_tasks():
            if task["state"] == "running":
                counts[names.get(task["node"], task["node"])] = counts.get(names.get(task["node"], task["node"]), 0) + 1
        return counts

    def replicas_up_in_balancer(self, backend: str = "replicas") -> int:
        return sum(row["status"].startswith("UP") for row in self.stats(backend) if row["svname"] != "BACKEND")

    def wait_for_backend(self, backend: str, count: int, timeout: float) -> None:
        """Wait until the balancer's `backend` sends to `count` replicas (its health checks passed)."""
        deadline = time.monotonic() + timeout
        while self.replicas_up_in_balancer(backend) != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{backend}: not {count} replicas up after {timeout} s: {self.stats(backend)}")
            time.sleep(0.5)

    def wait_for_replicas(self, count: int, timeout: float, node: str | None = None) -> float:
        """Wait until `count` replicas run (on `node`, if given) and the balancer sends to exactly that many."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            placed = self.replicas_per_node()
            running = placed.get(node, 0) if node else sum(placed.values())
            try:
                if running == count and self.replicas_up_in_balancer() == count:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"not {count} ready replicas after {timeout} s: {self.replicas_per_node()}")

    def scale(self, replicas: int) -> None:
        self.docker(1, "service", "scale", "--detach=false", f"{SERVICE}={replicas}")
        self.wait_for_replicas(replicas, timeout=240)

    def tag_new_image(self, tag: str) -> None:
        for node in (1, 2):
            self.docker(node, "tag", IMAGE, f"{IMAGE.split(':')[0]}:{tag}")

    def update_image(self, tag: str) -> float:
        """Roll every replica to the image tag (start-first, health-gated); seconds until converged."""
        started = time.monotonic()
        self.docker(1, "service", "update", "--detach=false", "--no-resolve-image", "--image",
                    f"{IMAGE.split(':')[0]}:{tag}", SERVICE, timeout=600)
        self.wait_for_replicas(4, timeout=120)
        return time.monotonic() - started

    def running_image_tags(self) -> set[str]:
        return {task["image"].split("@")[0].rsplit(":", 1)[-1] for task in self.running_tasks() if task["state"] == "running"}

    def kill_one_server_process(self) -> tuple[str, int, float, float]:
        """SIGKILL the `bentoml serve` process of a replica on node 1; (its container, requests in flight on it a
        moment before, time.monotonic() at the kill, and when the last of its processes had gone: its workers
        outlive it briefly, and may be cut off mid-answer then)."""
        container = self.docker(1, "ps", "-q", "--filter", f"name={SERVICE}").split()[0]
        init_pid = int(self.docker(1, "inspect", "--format", "{{.State.Pid}}", container))
        (server,) = [child for child in psutil.Process(init_pid).children() if "bentoml" in " ".join(child.cmdline())]
        tree = [server, *server.children(recursive=True)]
        in_flight = self.in_progress(container)
        server.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        psutil.wait_procs(tree, timeout=30)
        return container[:12], in_flight, killed, time.monotonic()

    def in_progress(self, container: str) -> int:
        """Requests the replica itself counts as in progress (its /metrics), read from inside the container."""
        read = ("import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:3000/metrics', timeout=5)"
                ".read().decode())")
        metrics = self.docker(1, "exec", container, "python3", "-c", read)
        return int(sum(float(value) for value in re.findall(r"^modelserver_requests_in_progress\{[^}]*\} (\S+)$",
                                                               metrics, re.M)))

    def stop_node_2(self) -> None:
        """Stop node 2's engine (its containers stop with it), as when a machine goes away."""
        engine = psutil.Process(int((WORK_DIR / "d2.pid").read_text()))
        engine.terminate()
        engine.wait(timeout=60)

    def down(self) -> None:
        subprocess.run([str(CLUSTER_SCRIPT), "down"], check=True, timeout=300)

    def leftovers(self) -> list[str]:
        """Anything of the cluster still on the machine: processes, bridges, veths, the namespace, iptables chains."""
        found = [f"process {p.pid}: {' '.join(p.cmdline())[:80]}" for p in psutil.process_iter(["cmdline"])
                 if str(WORK_DIR) in " ".join(p.info["cmdline"] or ())]
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        found += [f"link {name}" for name in ("docker0", "docker_gwbridge", "ms-veth1") if re.search(rf": {name}[@:]", links)]
        if "ms-node2" in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
            found.append("network namespace ms-node2")
        for table in ("filter", "nat"):
            rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
            found += [f"iptables {table}: {line}" for line in rules.splitlines() if "DOCKER" in line]
        return found + ([f"directory {WORK_DIR}"] if WORK_DIR.exists() else [])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    subprocess.run([str(CLUSTER_SCRIPT), "down"], timeout=300)  # whatever an interrupted run left
    up = subprocess.run([str(CLUSTER_SCRIPT), "up"], timeout=900)
    running = Cluster()
    try:
        assert up.returncode == 0, "cluster.sh up failed (see its output above)"
        yield running
    finally:
        if (WORK_DIR / "d1.pid").exists():
            running.down()
