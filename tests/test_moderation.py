"""Moderation: room owners and operators, kick, ban, mute, topic lock, rooms that persist."""

from collections.abc import Callable
from pathlib import Path

from conftest import JsonClient, LineClient

from threadchat.app.server import Server

PASSWORD = "correct-horse"


def client(server: Server, name: str, password: str | None = None) -> JsonClient:
    c = JsonClient(server.listener("line").port)
    if password is None:
        c.send_json(type="hello", name=name)
    else:
        c.send_json(type="hello", name=name, password=password)
    c.expect_event("who", room="lobby")
    return c


def registered(server: Server, name: str) -> JsonClient:
    c = client(server, name)
    c.send_json(type="register", password=PASSWORD, ref="reg")
    c.expect_event("logged_in", ref="reg")
    return c


def join(c: JsonClient, room: str) -> None:
    c.send_json(type="join", room=room)
    c.expect_event("who", room=room)


def act(c: JsonClient, kind: str, ref: object, **fields: object) -> dict:
    c.send_json(type=kind, ref=ref, **fields)
    while True:
        event = c.read_event()
        if event.get("ref") == ref and event["type"] in ("ok", "error"):
            return event


def test_rooms_of_accounts_persist_with_their_moderation(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    first = make_server(data_dir=str(tmp_path))
    alice, bob = registered(first, "alice"), registered(first, "bob")
    guest = client(first, "mallory")
    carol = registered(first, "carol")
    join(alice, "club")
    for c in (bob, carol):
        join(c, "club")
    assert act(alice, "topic", 1, room="club", topic="members only")["type"] == "ok"
    assert act(alice, "op", 2, room="club", name="bob")["type"] == "ok"
    assert act(alice, "ban", 3, room="club", name="mallory")["type"] == "ok"
    assert act(alice, "mute", 4, room="club", name="carol")["type"] == "ok"
    event = bob.expect_event("moderation", action="mute")
    assert event["target"] == "~a:carol" and event["by"] == "alice"
    for c in (alice, bob, carol, guest):
        c.send_json(type="quit")
        c.read_until_closed()
    first.stop()

    second = make_server(data_dir=str(tmp_path))
    watcher = client(second, "watcher")
    watcher.send_json(type="rooms")
    rooms = {r["name"]: r for r in watcher.expect_event("rooms")["rooms"]}
    assert rooms["club"]["topic"] == "members only" and rooms["club"]["members"] == 0
    bob = client(second, "bob", PASSWORD)
    join(bob, "club")  # bob's operator status belongs to his account: back on joining
    carol = client(second, "carol", PASSWORD)
    join(carol, "club")
    error = act(carol, "say", 5, room="club", text="can I speak?")
    assert error["type"] == "error" and error["code"] == "muted"
    mallory = client(second, "mallory")
    assert act(mallory, "join", 6, room="club")["code"] == "banned"
    assert act(bob, "unmute", 7, room="club", name="carol")["type"] == "ok"
    assert act(carol, "say", 8, room="club", text="thanks")["type"] == "ok"
    assert act(bob, "kick", 9, room="club", name="carol", reason="enough")["type"] == "ok"
    kicked = carol.expect_event("leave", room="club", name="carol")
    assert "kicked by bob: enough" in kicked["reason"]


def test_guest_rooms_vanish_when_empty(make_server: Callable[..., Server]) -> None:
    server = make_server()
    guest = client(server, "guest")
    join(guest, "tmp")
    assert act(guest, "leave", 1, room="tmp")["type"] == "ok"
    guest.send_json(type="rooms")
    assert "tmp" not in {r["name"] for r in guest.expect_event("rooms")["rooms"]}


def test_only_operators_moderate(make_server: Callable[..., Server]) -> None:
    server = make_server()
    alice, bob = registered(server, "alice"), client(server, "bob")
    join(alice, "den")
    join(bob, "den")
    for kind in ("op", "deop", "kick", "ban", "unban", "mute", "unmute"):
        assert act(bob, kind, kind, room="den", name="alice")["code"] == "not_operator"
    assert act(bob, "topiclock", "t", room="den", on=False)["code"] == "not_operator"
    assert act(bob, "kick", "x", room="nowhere", name="alice")["code"] == "no_such_room"
    assert act(alice, "kick", "y", room="den", name="nobody")["code"] == "no_such_nick"
    assert act(alice, "op", "z", room="den", name="bob")["type"] == "ok"
    assert act(bob, "deop", "w", room="den", name="alice")["type"] == "ok"
    # The owner's account keeps its rights without operator status.
    assert act(alice, "kick", "v", room="den", name="bob")["type"] == "ok"


def test_account_bans_follow_the_account_not_the_nick(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    alice, bob = registered(server, "alice"), registered(server, "bob")
    join(alice, "den")
    watcher = client(server, "watcher")
    join(watcher, "den")
    assert act(alice, "ban", 1, room="den", name="bob")["type"] == "ok"
    mode = watcher.expect_event("mode", room="den")
    assert (mode["changes"], mode["args"]) == ("+b", ["~a:bob"])
    assert act(bob, "nick", 2, name="robert")["type"] == "ok"
    assert act(bob, "join", 3, room="den")["code"] == "banned"
    assert act(alice, "unban", 4, room="den", name="~a:bob")["type"] == "ok"
    assert act(bob, "join", 5, room="den")["type"] == "ok"
    assert act(alice, "unban", 6, room="den", name="bob")["code"] == "no_such_ban"
    assert act(alice, "ban", 7, room="den", name="*!*@10.*")["type"] == "ok"


def test_topic_lock(make_server: Callable[..., Server]) -> None:
    server = make_server()
    alice, bob = registered(server, "alice"), client(server, "bob")
    join(alice, "den")
    join(bob, "den")
    assert act(bob, "topic", 1, room="den", topic="mine")["code"] == "not_operator"
    assert act(alice, "topiclock", 2, room="den", on=False)["type"] == "ok"
    assert bob.expect_event("mode", room="den")["changes"] == "-t"
    assert act(bob, "topic", 3, room="den", topic="mine")["type"] == "ok"
    assert act(alice, "topiclock", 4, room="den", on=True)["type"] == "ok"
    assert act(bob, "topic", 5, room="den", topic="again")["code"] == "not_operator"
    assert act(alice, "topiclock", 6, room="den", on="yes")["code"] == "bad_request"


def test_text_mode_moderation_commands(make_server: Callable[..., Server]) -> None:
    server = make_server()
    alice = LineClient(server.listener("line").port)
    alice.send("alice")
    alice.expect("--- in lobby:")
    alice.send(f"/register {PASSWORD}", "/join den")
    alice.expect("--- in den:")
    bob = LineClient(server.listener("line").port)
    bob.send("bob", "/join den")
    bob.expect("--- in den:")
    alice.send("/mute bob")
    bob.expect("--- alice muted bob!*@* in den")
    bob.send("hello?")
    bob.expect("!!! you are muted in den")
    alice.send("/unmute bob", "/op #den bob")
    bob.expect("--- alice made bob an operator in den")
    bob.send("/topiclock off")
    bob.expect("--- bob unlocked the topic in den")
    bob.send("/kick alice bye now")
    alice.expect("<-- alice was kicked from den by bob (bye now)")
    alice.send("/kick")
    alice.expect("usage: /kick")


def test_irc_style_mode_changes_persist_too(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    from threadchat.core.modes import MemberStatus, ModeChange, RoomFlag, RoomList

    first = make_server(data_dir=str(tmp_path))
    alice, bob = registered(first, "alice"), registered(first, "bob")
    join(alice, "club")
    join(bob, "club")
    owner = first.hub.find_user("alice")
    assert owner is not None
    changes = [
        ModeChange(True, MemberStatus.OPERATOR, "bob"),
        ModeChange(True, RoomFlag.MODERATED),
        ModeChange(True, RoomList.BAN, "x!*@*"),
    ]
    assert len(first.hub.set_room_modes(owner, "club", changes)) == 3
    first.stop()
    second = make_server(data_dir=str(tmp_path))
    assert second.store is not None
    record = next(r for r in second.store.load_rooms() if r.name == "club")
    assert record.operators == {"bob"} and "m" in record.modes and record.bans == {"x!*@*"}
    assert record.owner == "alice"


def test_stored_mode_letters_load_as_room_flags(tmp_path: Path) -> None:
    """The store keeps room flags as letters (databases written before flags were data);
    the keeper alone translates, and letters it does not know are dropped on loading."""
    from threadchat.core.hub import Hub
    from threadchat.core.modes import RoomFlag
    from threadchat.services.moderation import RoomKeeper
    from threadchat.store.base import RoomRecord
    from threadchat.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "data")
    try:
        record = RoomRecord(name="Old", created_ts=1000, owner="alice", modes=frozenset("tnmikl"))
        store.save_room(record)
        hub = Hub()
        keeper = RoomKeeper(hub, store)
        assert keeper.load() == 1
        room = hub.get_room("old")
        hidden = {RoomFlag.SECRET, RoomFlag.PRIVATE, RoomFlag.NO_CTCP}
        assert room is not None and room.flags == set(RoomFlag) - hidden
        room.flags.discard(RoomFlag.MODERATED)
        room.flags.add(RoomFlag.SECRET)
        keeper.save(room)
        saved = next(r for r in store.load_rooms() if r.name == "Old")
        assert saved.modes == frozenset("tnis")
    finally:
        store.close()
