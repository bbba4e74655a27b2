"""Real Redis topologies for the tests, from Debian's redis-server on 127.0.0.1 and free ports:
a Sentinel setup (a master, a replica, three Sentinels) and a Redis Cluster (three masters,
each with a replica when a test needs failovers). Each process is killed when its fixture ends.

Failovers are made the way production meets them: the master's process is killed (SIGKILL, no
goodbye), the Sentinels or the Cluster's own nodes notice it is gone and promote its replica.
The timeouts that decide how soon are shortened (a second, where production keeps the default
tens of seconds) so that a test waits a few seconds, not a minute.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from support import free_port, free_ports

SERVICE = "cloudmfa-master"
# How long a master may be silent before it is taken to be down (Sentinel's
# down-after-milliseconds, the Cluster's cluster-node-timeout). Production keeps the defaults
# (30 s and 15 s): a short one fails over on a mere pause of the master.
DOWN_AFTER_MS = 1000
START_TIMEOUT_S = 30  # the machine may be busy with the rest of the suite
FAILOVER_TIMEOUT_S = 60


def require_redis_server() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")


def wait_for_ping(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping():
                return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class Node:
    """One redis-server process (a data node or a Sentinel), restartable on its port."""

    port: int
    data: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", *self.args],
            stdout=(self.data / "log").open("ab"),
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True
        )


def data_node(data: Path, *extra: str, port: int | None = None) -> Node:
    port = port or free_port()
    args = [
        *("--bind", "127.0.0.1", "--port", str(port), "--dir", str(data)),
        # Nothing on disk: a restarted node comes back empty, as a lost machine does.
        *("--save", "", "--appendonly", "no"),
        *extra,
    ]
    return Node(port, data, args)


# --- Sentinel --------------------------------------------------------------------------------


@dataclass
class SentinelSetup:
    master: Node
    replica: Node
    sentinels: list[Node]
    killed: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{seeds}/{SERVICE}"

    def master_port(self) -> int:
        """The master's port, as the first Sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                return int(sentinel.client().sentinel_get_master_addr_by_name(SERVICE)[1])
            except redis.ConnectionError:
                continue
        raise AssertionError("no Sentinel answers")

    def node_on(self, port: int) -> Node:
        return next(n for n in (self.master, self.replica) if n.port == port)

    def kill_master(self) -> Node:
        """SIGKILL the current master; the Sentinels will promote the replica."""
        node = self.node_on(self.master_port())
        node.kill()
        self.killed.append(node)
        return node

    def wait_for_failover_from(self, old: Node) -> int:
        """Wait until every Sentinel names a new master, and it takes writes."""
        deadline = time.monotonic() + FAILOVER_TIMEOUT_S
        while True:
            named = {self._named_by(s) for s in self.sentinels}
            if len(named) == 1 and old.port not in named and None not in named:
                port = named.pop()
                assert port is not None
                role = self.node_on(port).client().execute_command("ROLE")[0]
                if role == "master":
                    return port
            assert time.monotonic() < deadline, f"no failover: the Sentinels name {named}"
            time.sleep(0.1)

    @staticmethod
    def _named_by(sentinel: Node) -> int | None:
        try:
            return int(sentinel.client().sentinel_get_master_addr_by_name(SERVICE)[1])
        except redis.ConnectionError:
            return None

    def restart_killed(self) -> None:
        """Bring the killed node back (empty); the Sentinels make it a replica of the new
        master, so that the next failover has somewhere to go."""
        while self.killed:
            node = self.killed.pop()
            node.start()
            wait_for_ping(node.port)
        self.wait_until_replicated()

    def wait_until_replicated(self) -> None:
        deadline = time.monotonic() + FAILOVER_TIMEOUT_S
        master = self.node_on(self.master_port())
        while True:
            info = master.client().info("replication")
            if info.get("connected_slaves", 0) >= 1 and info["slave0"]["state"] == "online":
                return
            assert time.monotonic() < deadline, f"the replica does not follow: {info}"
            time.sleep(0.1)

    def stop(self) -> None:
        for node in (*self.sentinels, self.master, self.replica):
            node.kill()


@pytest.fixture(scope="module")
def sentinel_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    require_redis_server()
    master = data_node(tmp_path_factory.mktemp("redis-master"))
    replica = data_node(tmp_path_factory.mktemp("redis-replica"))
    replica.args += ["--replicaof", "127.0.0.1", str(master.port)]
    sentinels = []
    for _ in range(3):
        data = tmp_path_factory.mktemp("sentinel")
        port = free_port()
        config = data / "sentinel.conf"  # a Sentinel rewrites its file: one each
        config.write_text(
            f"bind 127.0.0.1\nport {port}\ndir {data}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        sentinels.append(Node(port, data, [str(config), "--sentinel"]))
    setup = SentinelSetup(master, replica, sentinels)
    try:
        for node in (master, replica, *sentinels):
            node.start()
        for node in (master, replica, *sentinels):
            wait_for_ping(node.port)
        setup.wait_until_replicated()
        _wait_for_sentinels_to_meet(sentinels)
        yield setup
    finally:
        setup.stop()


def _wait_for_sentinels_to_meet(sentinels: list[Node]) -> None:
    """Each Sentinel knows the replica and the two other Sentinels: a failover needs their
    quorum, and a replica to promote."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        ready = True
        for sentinel in sentinels:
            state = sentinel.client().sentinel_master(SERVICE)
            if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                ready = False
        if ready:
            return
        assert time.monotonic() < deadline, "the Sentinels did not find each other"
        time.sleep(0.1)


# --- Cluster ---------------------------------------------------------------------------------


@dataclass
class ClusterSetup:
    nodes: list[Node]
    killed: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        # Seeds: not every node (the client learns the rest).
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def masters(self) -> list[Node]:
        return [n for n in self.live() if n.client().execute_command("ROLE")[0] == "master"]

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n not in self.killed]

    def kill_master_of(self, key: str) -> Node:
        """SIGKILL the master that holds ``key``'s slot; its replica takes over."""
        slot = int(self.live()[0].client().execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, master, *_ in self.live()[0].client().execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                node = next(n for n in self.nodes if n.port == int(master[1]))
                node.kill()
                self.killed.append(node)
                return node
        raise AssertionError(f"no master holds slot {slot}")

    def wait_for_state_ok(self) -> None:
        deadline = time.monotonic() + FAILOVER_TIMEOUT_S
        while True:
            states = {self._state(n) for n in self.live()}
            if states == {"ok"} and len(self.masters()) == 3:
                return
            assert time.monotonic() < deadline, f"the cluster is not ok: {states}"
            time.sleep(0.1)

    @staticmethod
    def _state(node: Node) -> str:
        return str(node.client().cluster("info")["cluster_state"])

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def start_cluster(tmp_path_factory: pytest.TempPathFactory, *, replicas: int) -> ClusterSetup:
    require_redis_server()
    nodes = []
    count = 3 * (1 + replicas)
    ports = free_ports(2 * count)  # each node's port and its cluster bus port, all distinct
    for port, bus_port in zip(ports[:count], ports[count:], strict=True):
        data = tmp_path_factory.mktemp("redis-cluster")
        nodes.append(
            data_node(
                data,
                *("--cluster-enabled", "yes", "--cluster-config-file", str(data / "nodes.conf")),
                *("--cluster-node-timeout", str(DOWN_AFTER_MS)),
                # The bus port defaults to port + 10000, past 65535 for a port above 55535.
                *("--cluster-port", str(bus_port)),
                port=port,
            )
        )
    setup = ClusterSetup(nodes)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            wait_for_ping(node.port)
        created = subprocess.run(
            [
                *("redis-cli", "--cluster", "create"),
                *(f"127.0.0.1:{n.port}" for n in nodes),
                *("--cluster-replicas", str(replicas)),
            ],
            input="yes\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        setup.wait_for_state_ok()
        if replicas:
            _wait_for_replicas_online(setup)
    except BaseException:
        setup.stop()
        raise
    return setup


def _wait_for_replicas_online(setup: ClusterSetup) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        masters = setup.masters()
        infos = [m.client().info("replication") for m in masters]
        if all(
            i.get("connected_slaves", 0) >= 1 and i["slave0"]["state"] == "online" for i in infos
        ):
            return
        assert time.monotonic() < deadline, "the cluster's replicas do not follow"
        time.sleep(0.1)
