"""Several nodes as one chat: real server processes sharing the real Redis (127.0.0.1:6379)
and PostgreSQL (127.0.0.1:5432) of the machine.

Each test has a Redis key prefix and a PostgreSQL database of its own (both removed at the
end), so parallel runs never see each other's nodes, users or messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
from conftest import WAIT, IrcClient, JsonClient, LineClient
from store_backends import postgres_database
from test_config_and_process import free_port
from test_irc_accounts import PASSWORD, sasl_plain
from test_shared_rules import irc_join

from threadchat.app.server import Server
from threadchat.core.history import HistoryQuery
from threadchat.core.hub import node_shard
from threadchat.protocols.irc.wire import parse
from threadchat.services.cluster import shard_of
from threadchat.store.postgres import PostgresStore, wait_for

REDIS_URL = os.environ.get("THREADCHAT_TEST_REDIS", "redis://127.0.0.1:6379/0")
REPO_ROOT = Path(__file__).resolve().parent.parent
# The expiry of the tests' nodes: short, so that a lost node is seen quickly, yet several
# heartbeats long on a loaded machine.
EXPIRY = 3.0


class Node:
    """One `threadchat serve` process: its ports, and its log as it is written."""

    def __init__(self, proc: subprocess.Popen[str], name: str, line: int, irc: int) -> None:
        self.proc, self.name, self.line, self.irc = proc, name, line, irc
        self.log: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            if "limits:" in line:  # logged once every listener is up
                self.ready.set()
        self.ready.set()

    def wait_ready(self) -> None:
        assert self.ready.wait(4 * WAIT), f"{self.name} did not start"
        assert self.proc.poll() is None, f"{self.name} exited:\n{''.join(self.log)}"

    def json(self, name: str) -> JsonClient:
        client = JsonClient(self.line)
        client.send_json(type="hello", name=name)
        client.expect_event("who", room="lobby")
        return client

    def irc_client(self, nick: str) -> IrcClient:
        client = IrcClient(self.irc)
        client.register(nick)
        return client

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(3 * WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)
        self._reader.join(WAIT)


class Cluster:
    def __init__(self, tmp_path: Path, prefix: str, database_url: str) -> None:
        self.tmp_path, self.prefix, self.database_url = tmp_path, prefix, database_url
        self.nodes: list[Node] = []

    def start(self, name: str, **settings: str) -> Node:
        line, irc = free_port(), free_port()
        workdir = self.tmp_path / name
        workdir.mkdir()
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "THREADCHAT_LINE_PORT": str(line),
            "THREADCHAT_IRC_PORT": str(irc),
            "THREADCHAT_UDP_PORT": "0",
            "THREADCHAT_WEB_PORT": "0",
            "THREADCHAT_FLOOD_RATE": "0",
            "THREADCHAT_REDIS_URL": REDIS_URL,
            "THREADCHAT_REDIS_PREFIX": self.prefix,
            "THREADCHAT_DATABASE_URL": self.database_url,
            "THREADCHAT_NODE_NAME": name,
            "THREADCHAT_NODE_EXPIRY": str(EXPIRY),
            **settings,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "threadchat", "serve", "--log-level", "info"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        node = Node(proc, name, line, irc)
        self.nodes.append(node)
        return node

    def start_all(self, *names: str) -> list[Node]:
        nodes = [self.start(name) for name in names]
        for node in nodes:
            node.wait_ready()
        return nodes


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    prefix = f"threadchat-test-{os.getpid()}-{uuid.uuid4().hex[:10]}"
    with postgres_database() as database_url:
        made = Cluster(tmp_path, prefix, database_url)
        try:
            yield made
        finally:
            for node in made.nodes:
                node.stop()
                # Shown by pytest only when the test failed: what each node logged.
                print(f"---- log of node {node.name} ----\n{''.join(node.log)}")
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)  # polling a condition another process changes; bounded
    return condition()


def test_users_on_three_nodes_chat_in_a_room_and_privately(cluster: Cluster) -> None:
    one, two, three = cluster.start_all("one", "two", "three")
    alice = one.irc_client("alice")  # IRC on node one
    bob = two.json("bob")  # JSON on node two
    carol = LineClient(three.line)  # native text on node three
    carol.send("carol")
    carol.expect("--- in lobby:")

    assert irc_join(alice, "#dev") == ["alice"]
    bob.send_json(type="join", room="dev")
    members = bob.expect_event("who", room="dev")["members"]
    # Membership is eventually consistent: a join on node two applies what Redis holds of
    # the room first (`catch_up`), but alice's join may still be on its way from node one;
    # then it follows as an event.
    if "alice" not in members:
        bob.expect_event("join", room="dev", name="alice")
    assert "bob" in members
    alice.expect_msg("JOIN", lambda m: m.source.startswith("bob!"))
    carol.send("/join dev")
    carol.expect("--- in dev:")
    bob.expect_event("join", room="dev", name="carol")
    alice.expect_msg("JOIN", lambda m: m.source.startswith("carol!"))

    alice.send("PRIVMSG #dev :hello from irc")
    assert bob.expect_event("message", room="dev")["text"] == "hello from irc"
    carol.expect("alice: hello from irc")
    bob.send_json(type="say", room="dev", text="hello from json")
    said = alice.expect_msg("PRIVMSG", lambda m: m.params == ["#dev", "hello from json"])
    assert said.source.startswith("bob!")
    carol.expect("bob: hello from json")
    carol.send("hello from text")
    alice.expect_msg("PRIVMSG", lambda m: m.params == ["#dev", "hello from text"])
    bob.expect_event("message", room="dev", text="hello from text", **{"from": "carol"})

    # Private messages cross nodes too, each way.
    alice.send("PRIVMSG bob :psst")
    assert bob.expect_event("private", text="psst")["from"] == "alice"
    bob.send_json(type="msg", to="alice", text="hi back")
    alice.expect_msg("PRIVMSG", lambda m: m.params == ["alice", "hi back"])

    # Every message of the room has one id on every node: PostgreSQL's.
    stored = PostgresStore(cluster.database_url)
    try:
        history = stored.room_history("dev", HistoryQuery.latest(10))
    finally:
        stored.close()
    assert [m.text for m in history] == ["hello from irc", "hello from json", "hello from text"]

    # A topic and a leave reach the other nodes.
    alice.send("TOPIC #dev :cluster talk")
    bob.expect_event("topic", room="dev")
    carol.send("/leave dev")
    bob.expect_event("leave", room="dev", name="carol")
    alice.expect_msg("PART", lambda m: m.source.startswith("carol!"))
    for client in (alice, bob, carol):
        client.close()


def test_a_nick_taken_on_one_node_is_refused_on_another(cluster: Cluster) -> None:
    one, two = cluster.start_all("one", "two")
    ann = one.json("ann")
    refused = JsonClient(two.line)
    refused.send_json(type="hello", name="ANN")
    assert refused.expect_event("error")["code"] == "name_in_use"
    irc = IrcClient(two.irc)
    irc.send("NICK Ann", "USER ann 0 * :Ann")
    irc.expect_msg("433")
    # A nick change to a taken name is refused as well, and a freed one can be had.
    other = two.json("other")
    other.send_json(type="nick", name="ann")
    assert other.expect_event("error")["code"] == "name_in_use"
    ann.close()
    assert wait_until(lambda: _hello(two, "ann"), 2 * WAIT)
    for client in (refused, irc, other):
        client.close()


def _hello(node: Node, name: str) -> bool:
    client = JsonClient(node.line)
    try:
        client.send_json(type="hello", name=name)
        return client.read_event()["type"] == "welcome"
    finally:
        client.close()


def test_a_killed_nodes_users_leave_within_the_expiry(cluster: Cluster) -> None:
    one, two, three = cluster.start_all("one", "two", "three")
    watcher = one.irc_client("watcher")
    irc_join(watcher, "#ops")
    survivor = two.json("survivor")
    survivor.send_json(type="join", room="ops")
    survivor.expect_event("who", room="ops")
    doomed = three.json("doomed")
    doomed.send_json(type="join", room="ops")
    doomed.expect_event("who", room="ops")
    survivor.expect_event("join", room="ops", name="doomed")
    watcher.expect_msg("JOIN", lambda m: m.source.startswith("doomed!"))

    three.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    quit_line = watcher.expect_msg(
        "QUIT", lambda m: m.source.startswith("doomed!"), timeout=EXPIRY + 2 * WAIT
    )
    assert quit_line.params == ["node lost"]
    survivor.expect_event("quit", name="doomed", timeout=EXPIRY + 2 * WAIT)
    # Within the expiry, plus the one-second check and a loaded machine's slack.
    assert time.monotonic() - killed_at < EXPIRY + 3

    # Every message among the survivors still arrives, both ways.
    for i in range(20):
        watcher.send(f"PRIVMSG #ops :w{i}")
        survivor.send_json(type="say", room="ops", text=f"s{i}")
    got = [survivor.expect_event("message", room="ops", text=f"w{i}")["text"] for i in range(20)]
    assert got == [f"w{i}" for i in range(20)]
    for i in range(20):
        watcher.expect_msg("PRIVMSG", lambda m, i=i: m.params == ["#ops", f"s{i}"])
    # The lost user's nick is free again.
    assert wait_until(lambda: _hello(one, "doomed"), 2 * WAIT)
    watcher.close()
    survivor.close()


def test_history_written_on_one_node_is_read_on_another(cluster: Cluster) -> None:
    one, two = cluster.start_all("one", "two")
    ann = one.json("ann")
    ann.send_json(type="join", room="log")
    ann.expect_event("who", room="log")
    for i in range(3):
        ann.send_json(type="say", room="log", text=f"kept {i}", ref=f"r{i}")
        ann.expect_event("ok", ref=f"r{i}")
    bob = two.json("bob")
    bob.send_json(type="join", room="log")
    replayed = [bob.expect_event("message", room="log", text=f"kept {i}") for i in range(3)]
    assert all(event.get("history") for event in replayed)
    ann.close()
    bob.close()


def test_an_unreachable_redis_or_database_at_start_exits_2(cluster: Cluster) -> None:
    with socket_without_listener() as port:
        node = cluster.start("no-redis", THREADCHAT_REDIS_URL=f"redis://127.0.0.1:{port}/0")
        assert node.proc.wait(4 * WAIT) == 2
        node.stop()
        assert any("cannot use Redis" in line for line in node.log), node.log
        node = cluster.start(
            "no-database", THREADCHAT_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/x"
        )
        assert node.proc.wait(4 * WAIT) == 2
        node.stop()
        assert any("cannot use the database" in line for line in node.log), node.log
    assert not any("Traceback" in line for n in cluster.nodes for line in n.log)


@contextlib.contextmanager
def socket_without_listener() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def test_irc_names_show_users_of_every_node(cluster: Cluster) -> None:
    one, two = cluster.start_all("one", "two")
    ann = one.irc_client("ann")
    irc_join(ann, "#both")
    bob = two.irc_client("bob")
    assert sorted(irc_join(bob, "#both")) == ["ann", "bob"]
    bob.send("WHOIS ann")
    whois = bob.expect_msg("311")
    assert whois.params[1] == "ann"
    # Ann's node knows bob is in the room once it shows her his join (as a person would
    # wait for it before voicing him).
    ann.expect_msg("JOIN", lambda m: m.source.startswith("bob!"))
    ann.send("MODE #both +v bob")
    mode = bob.expect_msg("MODE")
    assert mode.params[1:] == ["+v", "bob"]
    bob.send("NAMES #both")
    names = bob.expect(lambda line: parse(line).command == "353")
    assert "+bob" in names and "@ann" in names
    ann.close()
    bob.close()


@contextlib.contextmanager
def own_redis() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """A Redis of the test's own on a free port, without persistence: `start()` starts it
    (again, on the same port, empty); it is killed at the end."""
    port = free_port()
    running: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        running.append(proc)
        client = redis.Redis(port=port, socket_connect_timeout=0.2)
        assert wait_until(lambda: _pings(client)), "the test's Redis did not start"
        client.close()
        return proc

    start.port = port  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for proc in running:
            if proc.poll() is None:
                proc.kill()
            proc.wait(WAIT)


def events_until(client: JsonClient, kinds: set[str], timeout: float) -> dict[str, dict]:
    """Read events until one of each kind in `kinds` came (the first of each, by kind)."""
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while set(found) != kinds:
        event = client.read_event(max(0.0, deadline - time.monotonic()))
        if event["type"] in kinds:
            found.setdefault(event["type"], event)
    return found


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_redis_restarted_under_traffic(cluster: Cluster) -> None:
    with own_redis() as start_redis:
        redis_server = start_redis()
        url = f"redis://127.0.0.1:{start_redis.port}/0"  # type: ignore[attr-defined]
        one = cluster.start("one", THREADCHAT_REDIS_URL=url)
        two = cluster.start("two", THREADCHAT_REDIS_URL=url)
        one.wait_ready()
        two.wait_ready()
        ann, bob = one.json("ann"), two.json("bob")
        for client in (ann, bob):
            client.send_json(type="join", room="r")
            client.expect_event("who", room="r")
        ann.expect_event("join", room="r", name="bob")
        ann.send_json(type="say", room="r", text="before")
        bob.expect_event("message", room="r", text="before")

        redis_server.kill()
        redis_server.wait(WAIT)
        for client in (ann, bob):
            assert "lost its link" in client.expect_event("notice", timeout=3 * WAIT)["text"]
        # Each node goes on serving its own users: stored (PostgreSQL) and acknowledged.
        ann.send_json(type="say", room="r", text="during", ref="d")
        ann.expect_event("ok", ref="d")

        start_redis()
        back = ann.expect_event("notice", timeout=3 * WAIT)["text"]
        assert "linked to the other servers again" in back and "Redis restarted" in back
        # Bob's node says so too, and what ann's node could not publish meanwhile it held and
        # sends now: in either order (each node finds Redis back on its own).
        seen = events_until(bob, {"notice", "message"}, 3 * WAIT)
        assert "Redis restarted" in seen["notice"]["text"]
        assert seen["message"]["text"] == "during" and seen["message"]["room"] == "r"
        bob.send_json(type="say", room="r", text="after")
        ann.expect_event("message", room="r", text="after")
        ann.send_json(type="say", room="r", text="after too")
        bob.expect_event("message", room="r", text="after too")
        assert one.proc.poll() is None and two.proc.poll() is None
        ann.close()
        bob.close()
    for node in (one, two):
        node.stop()
        assert not any("Traceback" in line for line in node.log), "".join(node.log)
        assert any("Redis is back" in line for line in node.log)


def test_a_user_whose_quit_never_came_is_dropped_as_gone(
    make_server: Callable[..., Server],
) -> None:
    # Another node, played by the test at the level of Redis: alive (its heartbeat is set),
    # it announces a user but never claimed the nick (as if the quit had been overtaken).
    prefix = f"threadchat-test-{os.getpid()}-{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        server = make_server(redis_url=REDIS_URL, redis_prefix=prefix, node_name="real",
                             node_expiry=EXPIRY, history=False)  # fmt: skip
        bob = JsonClient(server.listener("line").port)
        bob.send_json(type="hello", name="bob")
        bob.expect_event("who", room="lobby")
        client.set(f"{prefix}:node:{{phantom}}", "1", ex=30)
        record = {"nick": "ghosty", "rooms": [["lobby", False, None]]}
        stream = f"{prefix}:events:{{s{shard_of(node_shard('phantom'))}}}"
        client.xadd(stream, {"e": json.dumps(["phantom", "user", record])})
        bob.expect_event("join", room="lobby", name="ghosty")
        left_at = time.monotonic()
        quit_event = bob.expect_event("quit", name="ghosty", timeout=EXPIRY * 2 + WAIT)
        assert quit_event["reason"] == "gone"
        # Two checks a third of the expiry apart, not sooner: a rename is not a quit.
        assert time.monotonic() - left_at >= EXPIRY / 3
        bob.close()
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def test_always_on_and_read_markers_live_in_the_shared_database(cluster: Cluster) -> None:
    # As a previous run left them: alice's account, always-on in dev, with a read marker.
    marker = "2026-01-02T03:04:05.678Z"
    marker_ms = int(datetime.fromisoformat(marker).timestamp() * 1000)
    with PostgresStore(cluster.database_url) as store:
        store.create_account("alice", PASSWORD)
        wait_for(store.save_always_on("alice", "alice", ["dev"]), WAIT)
        assert store.set_read_marker("alice", "dev", marker_ms) == marker_ms
    nodes = cluster.start_all("one", "two")
    # One node restores her (the one that claimed her nick first); every node has her in dev.
    [home] = [n for n in nodes if any("1 always-on accounts" in line for line in n.log)]
    [other] = [n for n in nodes if n is not home]
    bob = other.json("bob")
    bob.send_json(type="join", room="dev")
    members = bob.expect_event("who", room="dev")["members"]
    deadline = time.monotonic() + WAIT
    while "alice" not in members and time.monotonic() < deadline:
        bob.send_json(type="who", room="dev")  # she is learnt from the bus: eventually
        members = bob.expect_event("who", room="dev")["members"]
    assert "alice" in members
    # Her devices attach on the node that holds her; on another the nick is taken.
    intruder = JsonClient(other.line)
    intruder.send_json(type="hello", name="alice", password=PASSWORD)
    assert intruder.expect_event("error")["code"] == "name_in_use"
    intruder.close()
    device = JsonClient(home.line)
    device.send_json(type="hello", name="alice", password=PASSWORD)
    assert device.expect_event("read", target="dev")["read"] == marker
    device.close()
    bob.close()


def test_replies_reactions_edits_deletions_and_typing_cross_nodes(cluster: Cluster) -> None:
    one, two = cluster.start_all("one", "two")
    alice, bob = one.json("alice"), two.json("bob")
    alice.send_json(type="join", room="dev")
    alice.expect_event("who", room="dev")
    bob.send_json(type="join", room="dev")
    bob.expect_event("who", room="dev")
    alice.expect_event("join", room="dev", name="bob")

    alice.send_json(type="say", room="dev", text="a question\nin two lines", ref="q")
    alice.expect_event("ok", ref="q")
    question = bob.expect_event("message", room="dev", text="a question\nin two lines")["msgid"]
    # Node two answers from what node one published: the reply names the question.
    bob.send_json(type="say", room="dev", text="an answer", reply_to=question, ref="a")
    bob.expect_event("ok", ref="a")
    answer = alice.expect_event("message", room="dev", text="an answer")
    assert answer["reply_to"] == question and answer["reply"]["from"] == "alice"

    bob.send_json(type="react", msgid=question, reaction="👍", ref="r")
    bob.expect_event("ok", ref="r")
    reacted = alice.expect_event("react", room="dev", msgid=question)
    assert (reacted["from"], reacted["reaction"], reacted["on"]) == ("bob", "👍", True)
    alice.send_json(type="edit", msgid=question, text="a better question", ref="e")
    alice.expect_event("ok", ref="e")
    assert bob.expect_event("edit", msgid=question)["text"] == "a better question"
    bob.send_json(type="typing", room="dev", state="active", ref="t")
    bob.expect_event("ok", ref="t")
    assert alice.expect_event("typing", room="dev")["from"] == "bob"
    alice.send_json(type="delete", msgid=question, ref="d")
    alice.expect_event("ok", ref="d")
    assert bob.expect_event("delete", msgid=question)["by"] == "alice"
    # Deleted on every node: node two refuses a reaction to it, and its history (the
    # shared database) holds the tombstone beside the reply.
    bob.send_json(type="react", msgid=question, reaction="🎉", ref="late")
    assert bob.expect_event("error", ref="late")["code"] == "unknown_message"
    bob.send_json(type="history", room="dev", ref="h")
    page = {m["msgid"]: m for m in bob.expect_event("history", ref="h")["messages"]}
    assert page[question]["deleted"] is True and page[question]["text"] == ""
    assert page[answer["msgid"]]["reply_to"] == question
    alice.close()
    bob.close()


def test_a_node_started_later_gets_the_rooms_state(cluster: Cluster) -> None:
    """Topic, modes, bans and statuses set before a node started reach it (from the state
    the nodes with members keep in Redis), not only at the next change."""
    [one] = cluster.start_all("one")
    alice = one.irc_client("alice")
    irc_join(alice, "#state")
    carl = one.irc_client("carl")
    irc_join(carl, "#state")
    alice.expect_msg("JOIN", lambda m: m.source.startswith("carl!"))
    alice.send("TOPIC #state :set before two started")
    alice.expect_msg("TOPIC")
    alice.send("MODE #state +ml 10", "MODE #state +b troll!*@*", "MODE #state +v carl")
    alice.expect_msg("MODE", lambda m: m.params[1:] == ["+v", "carl"])

    [two] = cluster.start_all("two")
    bob = two.irc_client("bob")
    bob.send("JOIN #state")
    topic = bob.expect_msg("332")
    assert topic.params[-1] == "set before two started"
    names = bob.expect(lambda line: parse(line).command == "353")
    assert "@alice" in names and "+carl" in names
    bob.expect_msg("366")
    bob.send("MODE #state")
    modes = bob.expect_msg("324")
    assert "m" in modes.params[2] and "l" in modes.params[2] and modes.params[3:] == ["10"]
    bob.send("MODE #state +b")
    assert bob.expect_msg("367").params[2] == "troll!*@*"
    # Checks on node two use that state: the ban keeps troll out, the room is moderated.
    troll = two.irc_client("troll")
    troll.send("JOIN #state")
    troll.expect_msg("474")
    bob.send("PRIVMSG #state :may I?")
    bob.expect_msg("404")
    # And later changes arrive as events, as ever.
    alice.send("TOPIC #state :changed later")
    assert bob.expect_msg("TOPIC").params[-1] == "changed later"
    for client in (alice, carl, bob, troll):
        client.close()


def test_oper_flags_tag_messages_and_wallops_cross_nodes(cluster: Cluster) -> None:
    one = cluster.start("one", THREADCHAT_OPER="root:secret")
    two = cluster.start("two", THREADCHAT_OPER="root:secret")
    one.wait_ready()
    two.wait_ready()
    alice = IrcClient(one.irc)
    alice.register("alice", ("message-tags",))
    bob = IrcClient(two.irc)
    bob.register("bob", ("message-tags",))
    bob.send("MODE bob +w")
    bob.expect_msg("MODE")
    alice.send("OPER root secret")
    alice.expect_msg("381")

    # Node two learns that alice is a server operator: its WHOIS says so.
    def whois_says_oper() -> bool:
        bob.send("WHOIS alice")
        lines = []
        while not lines or parse(lines[-1]).command != "318":
            lines.append(bob.expect(lambda line: parse(line).command in {"313", "318"}))
        return any(parse(line).command == "313" for line in lines)

    assert wait_until(whois_says_oper)

    # Wallops go to wallops readers on every node (bob's +w known to node one eventually).
    def wallops_reach_bob() -> bool:
        alice.send("WALLOPS :are you there")
        try:
            bob.expect_msg("WALLOPS", lambda m: m.params == ["are you there"], timeout=0.3)
        except AssertionError:
            return False
        return True

    assert wait_until(wallops_reach_bob)

    irc_join(alice, "#t")
    irc_join(bob, "#t")
    alice.expect_msg("JOIN", lambda m: m.source.startswith("bob!"))
    alice.send("@+typing=active TAGMSG #t")
    typing = bob.expect_msg("TAGMSG")
    assert typing.params == ["#t"] and typing.tags["+typing"] == "active"
    assert typing.source.startswith("alice!")
    # Any other client-only tag is relayed as it is (Hub.send_tags), to the room...
    alice.send("@+example.org/mood=sunny TAGMSG #t")
    tagged = bob.expect_msg("TAGMSG", lambda m: "+example.org/mood" in m.tags)
    assert tagged.params == ["#t"] and tagged.tags["+example.org/mood"] == "sunny"
    bob.send("@+example.org/mood=rainy TAGMSG alice")
    # ... and to a person (reactions and typing to a person are the hub's own live events,
    # tested across nodes in test_private_replies_reactions_edits_deletions_and_typing...).
    private = alice.expect_msg("TAGMSG")
    assert private.params == ["alice"] and private.tags["+example.org/mood"] == "rainy"
    alice.close()
    bob.close()


def test_a_room_rename_crosses_nodes(cluster: Cluster) -> None:
    one, two = cluster.start_all("one", "two")
    alice = IrcClient(one.irc)
    alice.register("alice", ("draft/channel-rename",))
    irc_join(alice, "#old")
    bob = two.json("bob")
    bob.send_json(type="join", room="old")
    bob.expect_event("who", room="old")
    legacy = two.irc_client("legacy")
    irc_join(legacy, "#old")
    alice.expect_msg("JOIN", lambda m: m.source.startswith("legacy!"))
    alice.send("TOPIC #old :kept across the rename", "PRIVMSG #old :said before")
    bob.expect_event("message", room="old", text="said before")
    legacy.expect_msg("PRIVMSG", lambda m: m.params == ["#old", "said before"])

    alice.send("RENAME #old #new :a tidier name")
    alice.expect_msg("RENAME")
    renamed = bob.expect_event("rename", room="old")
    assert (renamed["new"], renamed["by"]) == ("new", "alice")
    # IRC without the capability: a PART and a JOIN of its own, then what a join shows.
    legacy.expect_msg("PART", lambda m: m.params[0] == "#old")
    legacy.expect_msg("JOIN", lambda m: m.params[0] == "#new")
    assert legacy.expect_msg("332").params[-1] == "kept across the rename"

    # The room lives on under its new name on both nodes, with its history.
    bob.send_json(type="say", room="new", text="said after", ref="a")
    bob.expect_event("ok", ref="a")
    alice.expect_msg("PRIVMSG", lambda m: m.params == ["#new", "said after"])
    bob.send_json(type="history", room="new", ref="h")
    texts = [m["text"] for m in bob.expect_event("history", ref="h")["messages"]]
    assert texts == ["said before", "said after"]
    # A node started after the rename finds the room, its topic and members under the
    # new name, and no room of the old one.
    [three] = cluster.start_all("three")
    carol = three.irc_client("carol")
    carol.send("JOIN #new")
    assert carol.expect_msg("332").params[-1] == "kept across the rename"
    names = carol.expect(lambda line: parse(line).command == "353")
    assert all(name in names for name in ("@alice", "bob", "legacy", "carol"))
    carol.send("LIST")
    listed = []
    while True:
        line = parse(carol.expect(lambda line: parse(line).command in {"322", "323"}))
        if line.command == "323":
            break
        listed.append(line.params[1])
    assert "#new" in listed and "#old" not in listed
    # Node three's start deleted no history of the rooms the other nodes hold.
    bob.send_json(type="history", room="new", ref="h2")
    texts = [m["text"] for m in bob.expect_event("history", ref="h2")["messages"]]
    assert texts == ["said before", "said after"]
    for client in (alice, bob, legacy, carol):
        client.close()


def test_a_second_device_on_another_node_is_told_which_node(cluster: Cluster) -> None:
    """A person's connections share one node: a device of the same account reaching another
    node is refused the nick with the name of the node to connect to, over JSON and IRC;
    on the person's node it is attached as on one server."""
    with PostgresStore(cluster.database_url) as store:
        store.create_account("alice", PASSWORD)
    one, two = cluster.start_all("one", "two")
    phone = JsonClient(one.line)
    phone.send_json(type="hello", name="alice", password=PASSWORD)
    phone.expect_event("welcome")
    observer = two.json("observer")
    assert wait_until(lambda: _whois_known(observer, "alice"))

    laptop = JsonClient(two.line)
    laptop.send_json(type="hello", name="alice", password=PASSWORD)
    refused = laptop.expect_event("error")
    assert refused["code"] == "name_in_use" and "server one" in refused["message"]
    laptop.close()
    irc = IrcClient(two.irc)
    irc.send("CAP LS 302", "CAP REQ :sasl")
    irc.expect_msg("CAP", lambda m: m.params[1] == "ACK")
    irc.send("AUTHENTICATE PLAIN")
    irc.expect_msg("AUTHENTICATE")
    irc.send(f"AUTHENTICATE {sasl_plain('alice', PASSWORD)}")
    irc.expect_msg("903")
    irc.send("NICK alice", "USER alice 0 * :Alice", "CAP END")
    notice = irc.expect_msg("NOTICE", lambda m: "server one" in m.params[-1])
    assert "connect this one to one" in notice.params[-1]
    irc.expect_msg("433")
    irc.close()

    # On node one, the same device is attached to her: one person, two connections.
    tablet = JsonClient(one.line)
    tablet.send_json(type="hello", name="alice", password=PASSWORD)
    assert tablet.expect_event("welcome")["name"] == "alice"
    for client in (phone, observer, tablet):
        client.close()


def _whois_known(client: JsonClient, nick: str) -> bool:
    client.send_json(type="whois", name=nick, ref="w")
    answer = client.read_event()
    while answer.get("ref") != "w":
        answer = client.read_event()
    return answer["type"] != "error"


def test_private_replies_reactions_edits_deletions_and_typing_cross_nodes(
    cluster: Cluster,
) -> None:
    one, two = cluster.start_all("one", "two")
    alice, bob = one.json("alice"), two.json("bob")
    # Node one knows bob once his arrival has come over the bus.
    alice.expect_event("join", room="lobby", name="bob")
    alice.send_json(type="msg", to="bob", text="psst", ref="m")
    alice.expect_event("ok", ref="m")
    question = bob.expect_event("private", text="psst")["msgid"]
    # Node two knows the message from the bus: bob answers it, reacts to it.
    bob.send_json(type="msg", to="alice", text="yes?", reply_to=question, ref="a")
    bob.expect_event("ok", ref="a")
    answer = alice.expect_event("private", text="yes?")
    assert answer["reply_to"] == question and answer["reply"]["from"] == "alice"
    bob.send_json(type="react", msgid=question, reaction="👍", ref="r")
    bob.expect_event("ok", ref="r")
    reacted = alice.expect_event("react", msgid=question)
    assert (reacted["from"], reacted["to"], reacted["reaction"]) == ("bob", "alice", "👍")
    alice.send_json(type="edit", msgid=question, text="psst, lunch?", ref="e")
    alice.expect_event("ok", ref="e")
    edited = bob.expect_event("edit", msgid=question)
    assert (edited["text"], edited["to"]) == ("psst, lunch?", "bob")
    bob.send_json(type="typing", to="alice", ref="t")
    bob.expect_event("ok", ref="t")
    assert alice.expect_event("typing")["from"] == "bob"
    # Only the author deletes, on either node; then it is gone for both.
    bob.send_json(type="delete", msgid=question, ref="no")
    assert bob.expect_event("error", ref="no")["code"] == "not_yours"
    alice.send_json(type="delete", msgid=question, ref="d")
    alice.expect_event("ok", ref="d")
    assert bob.expect_event("delete", msgid=question)["by"] == "alice"
    bob.send_json(type="react", msgid=question, reaction="🎉", ref="late")
    assert bob.expect_event("error", ref="late")["code"] == "unknown_message"
    alice.close()
    bob.close()


def test_a_message_in_the_stream_twice_is_shown_once(cluster: Cluster) -> None:
    # The publisher sends a batch again when its pipeline failed, and a batch that failed
    # part way had reached Redis in part, so a stream may hold a message twice (seen once in
    # test_redis_restarted_under_traffic under load). Here a node "elsewhere" wrote one twice.
    one = cluster.start("one")
    one.wait_ready()
    ann = one.json("ann")
    ann.send_json(type="join", room="r")
    ann.expect_event("who", room="r")
    stream = f"{cluster.prefix}:events:{{s{shard_of('r')}}}"
    writer = redis.Redis.from_url(REDIS_URL)

    def add(text: str, message_id: int) -> None:
        record = {"sender": "ghost", "text": text, "kind": "text", "account": None,
                  "id": message_id, "ts": time.time(), "room": "r"}  # fmt: skip
        writer.xadd(stream, {"e": json.dumps(["elsewhere", "msg", record])})

    try:
        add("twice", 10**12)
        add("twice", 10**12)
        add("after", 10**12 + 1)  # the same stream: applied after both copies
        texts = []
        while "after" not in texts:
            event = ann.read_event()
            if event["type"] == "message":
                texts.append(event["text"])
        assert texts == ["twice", "after"]
    finally:
        writer.close()
