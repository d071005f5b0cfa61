"""A data directory that fills up while the server runs: an `ok` still means stored, the room
still hears what could not be stored, and saving resumes when space returns."""

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import JsonClient

from threadchat.app.server import Server
from threadchat.core.history import HistoryQuery, Ref

# Big enough for the schema and a few thousand messages, small enough to fill in seconds.
DISK_SIZE = "2m"
# Lines per write: a burst the server pipelines into one commit, as a busy client's would be.
BURST = 50
# Give up (and fail) if the disk has not filled after this many messages.
MAX_MESSAGES = 60_000
# Keep sending for this many bursts after the first failure: storage failing is the case
# under test, not its first instant.
BURSTS_AFTER_FULL = 10


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a tmpfs of DISK_SIZE, mounted for the test (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mount_point
    finally:
        # Lazy: a file the server left open must not keep the mount (or the test) hanging.
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


def _all_texts(server: Server, room: str) -> set[str]:
    assert server.store is not None
    texts: set[str] = set()
    before = None
    while True:
        query = HistoryQuery.latest(500) if before is None else HistoryQuery.before(before, 500)
        page = server.store.room_history(room, query)
        if not page:
            return texts
        texts.update(m.text for m in page)
        before = Ref.msgid(page[0].id)


def test_a_full_disk_gets_errors_with_their_refs_and_never_an_ok(
    small_disk: Path, make_server: Callable[..., Server]
) -> None:
    server = make_server(data_dir=str(small_disk), history_on_join=0)
    try:
        sender = JsonClient(server.listener("line").port)
        sender.send_json(type="hello", name="sender")
        sender.expect_event("who", room="lobby")
        answers: dict[int, list[dict]] = {}
        sent = 0
        bursts_after_full = None
        while sent < MAX_MESSAGES and bursts_after_full != 0:
            refs = range(sent, sent + BURST)
            sender.send(
                *(
                    json.dumps({"type": "say", "text": f"m{ref} " + "x" * 200, "ref": ref})
                    for ref in refs
                )
            )
            sent += BURST
            while not all(ref in answers for ref in refs):
                event = sender.read_event()
                if event["type"] in ("ok", "error"):
                    answers.setdefault(event.get("ref"), []).append(event)
            if bursts_after_full is not None:
                bursts_after_full -= 1
            elif None in answers or any(answers[ref][0]["type"] == "error" for ref in refs):
                bursts_after_full = BURSTS_AFTER_FULL
        # A later request is answered after every earlier one: a late `ok` would show here.
        sender.send_json(type="ping", token="fence", ref="fence")
        while (event := sender.read_event()).get("ref") != "fence":
            if event["type"] in ("ok", "error"):
                answers.setdefault(event.get("ref"), []).append(event)
        stored = {int(text.split()[0][1:]) for text in _all_texts(server, "lobby")}
    finally:
        server.stop()

    assert bursts_after_full == 0, f"the disk never filled in {sent} messages"
    assert None not in answers, f"{len(answers.get(None, []))} errors without a ref"
    assert answers.keys() == set(range(sent))
    oks = {ref for ref, got in answers.items() if [e["type"] for e in got] == ["ok"]}
    errors = {ref for ref, got in answers.items() if [e["type"] for e in got] == ["error"]}
    assert oks | errors == set(range(sent)), "a message got both an ok and an error, or two"
    assert oks and errors
    assert {answers[ref][0]["code"] for ref in errors} == {"not_saved"}
    assert not oks - stored, f"{len(oks - stored)} messages acknowledged but not stored"
    assert not errors & stored, f"{len(errors & stored)} stored messages said not saved"


def _fill(sender: JsonClient) -> int:
    """Send bursts until the store refuses one message; how many were sent."""
    sent = 0
    while sent < MAX_MESSAGES:
        refs = range(sent, sent + BURST)
        sender.send(*(json.dumps({"type": "say", "text": f"m{ref} " + "x" * 200, "ref": ref})
                      for ref in refs))  # fmt: skip
        sent += BURST
        answers = []
        while len(answers) < BURST:
            event = sender.read_event()
            if event["type"] in ("ok", "error"):
                answers.append(event["type"])
        if "error" in answers:
            return sent
    raise AssertionError(f"the disk never filled in {sent} messages")


def _answer_to(sender: JsonClient, ref: str) -> dict[str, Any]:
    """The `ok` or `error` that answers the request with `ref`."""
    while True:
        event = sender.read_event()
        if event["type"] in ("ok", "error") and event.get("ref") == ref:
            return event


def test_relaying_goes_on_while_the_disk_is_full_and_saving_resumes_when_space_returns(
    small_disk: Path, make_server: Callable[..., Server]
) -> None:
    server = make_server(data_dir=str(small_disk), history_on_join=0)
    sender = JsonClient(server.listener("line").port)
    observer = JsonClient(server.listener("line").port)
    try:
        for client, name in ((sender, "sender"), (observer, "observer")):
            client.send_json(type="hello", name=name)
            client.expect_event("who", room="lobby")
        _fill(sender)
        # Full: the sender is told, and the room still hears it. A failed burst may leave
        # room for one small message (SQLite gives back what the failed transaction took),
        # so the sender tries until one is refused.
        refused = ""
        for attempt in range(20):
            text = f"while full {attempt}"
            sender.send_json(type="say", text=text, ref=text)
            answer = _answer_to(sender, text)
            if answer["type"] == "error":
                assert answer["code"] == "not_saved", answer
                refused = text
                break
        assert refused, "every message after the disk filled was stored"
        observer.expect_event("message", text=refused)
        # Space returns (the tmpfs grows): the next message is saved again.
        grown = subprocess.run(
            ["mount", "-o", "remount,size=16m", str(small_disk)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert grown.returncode == 0, grown.stderr
        sender.send_json(type="say", text="space again", ref="again")
        answer = sender.expect_event("ok", ref="again")
        observer.expect_event("message", text="space again")
        stored = _all_texts(server, "lobby")
    finally:
        sender.close()
        observer.close()
        server.stop()
    assert answer["type"] == "ok"
    assert "space again" in stored and refused not in stored
