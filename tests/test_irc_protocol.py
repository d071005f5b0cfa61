"""Tests for the sans-I/O IRC protocol module (all in memory)."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta, timezone

import pytest

from threadchat.protocols.irc import wire as irc
from threadchat.protocols.irc.wire import (
    BufferOverflow,
    Formatter,
    IrcLineReader,
    IrcParseError,
    LineTooLong,
    MalformedLine,
    Message,
    MessageReceived,
    Numeric,
    Registration,
    casefold,
    channel_to_room,
    format_server_time,
    is_valid_channel,
    is_valid_nick,
    isupport,
    parse,
    reply_with_text,
    room_to_channel,
    serialize,
    split_targets,
)

SERVER = "irc.test"


def test_doctests() -> None:
    result = doctest.testmod(irc)
    assert result.attempted > 0
    assert result.failed == 0


# --- serialisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (Message.make("PING", "x"), b"PING x\r\n"),
        (Message.make("quit"), b"QUIT\r\n"),
        (Message.make("PRIVMSG", "#dev", "hi"), b"PRIVMSG #dev hi\r\n"),
        (Message.make("PRIVMSG", "#dev", "hi there"), b"PRIVMSG #dev :hi there\r\n"),
        (Message.make("PRIVMSG", "#dev", ""), b"PRIVMSG #dev :\r\n"),
        (Message.make("PRIVMSG", "#dev", ":-)"), b"PRIVMSG #dev ::-)\r\n"),
        (Message.make("PRIVMSG", "#dev", "a:b"), b"PRIVMSG #dev a:b\r\n"),
        (
            Message.make("JOIN", "#dev", source="alice!a@host"),
            b":alice!a@host JOIN #dev\r\n",
        ),
        (
            Message.make(Numeric.RPL_WELCOME, "alice", "Welcome to IRC", source=SERVER),
            b":irc.test 001 alice :Welcome to IRC\r\n",
        ),
        (
            Message.make("TAGMSG", "#dev", tags={"+typing": "active", "msgid": None}),
            b"@+typing=active;msgid TAGMSG #dev\r\n",
        ),
        (
            Message.make("PING", "x", tags={"a": ""}),
            b"@a PING x\r\n",
        ),
        (
            Message.make("PRIVMSG", "#d", "é", tags={"k": "a; b\\c\r\n"}),
            b"@k=a\\:\\sb\\\\c\\r\\n PRIVMSG #d \xc3\xa9\r\n",
        ),
    ],
)
def test_serialize_exact_bytes(message: Message, wire: bytes) -> None:
    assert serialize(message) == wire
    assert message.to_bytes() == wire


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b", "\n", "x\r\nQUIT :pwned"])
@pytest.mark.parametrize("position", ["middle", "final"])
def test_serialize_refuses_line_injection_in_params(bad: str, position: str) -> None:
    params = [bad, "text"] if position == "middle" else ["#dev", bad]
    with pytest.raises(ValueError):
        serialize(Message("PRIVMSG", params))


@pytest.mark.parametrize(
    "message",
    [
        Message.make("PRIVMSG", "#dev", "hi", source="evil\r\nQUIT"),
        Message.make("PRIVMSG", "#dev", "hi", source="a b"),
        Message.make("PRIVMSG", "#dev", "hi", source=""),
        Message.make("PRIVMSG", "#dev", "hi", tags={"k": "nul\0"}),
        Message.make("PRIVMSG", "#dev", "hi", tags={"bad key": "v"}),
        Message.make("PRIVMSG", "#dev", "hi", tags={"": "v"}),
        Message.make("PRIVMSG", "#dev", "hi", tags={"a\n": "v"}),
        Message.make("KICK", "#dev bob", "bye"),
        Message.make("KICK", "", "bye"),
        Message.make("KICK", ":x", "bye"),
        Message.make("PRIV MSG", "x"),
        Message.make("1234", "x"),
        Message.make("", "x"),
    ],
)
def test_serialize_refuses_malformed(message: Message) -> None:
    with pytest.raises(ValueError):
        serialize(message)


def test_tag_values_with_cr_lf_are_escaped_not_injected() -> None:
    wire = serialize(Message.make("PING", "x", tags={"k": "a\r\nQUIT"}))
    assert wire.count(b"\n") == 1 and wire.endswith(b"\r\n")
    assert parse(wire).tags == {"k": "a\r\nQUIT"}


def test_numeric_command_and_lowercase_are_normalised() -> None:
    assert Message(Numeric.ERR_NICKNAMEINUSE).command == "433"
    assert type(Message(Numeric.ERR_NICKNAMEINUSE).command) is str
    assert Message("privmsg").command == "PRIVMSG"


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"PING x\r\n", Message("PING", ["x"])),
        (b"PING x\n", Message("PING", ["x"])),
        ("PING x", Message("PING", ["x"])),
        ("nick alice", Message("NICK", ["alice"])),
        ("PRIVMSG #dev :hello world", Message("PRIVMSG", ["#dev", "hello world"])),
        ("PRIVMSG #dev :", Message("PRIVMSG", ["#dev", ""])),
        ("PRIVMSG #dev ::)", Message("PRIVMSG", ["#dev", ":)"])),
        ("PRIVMSG   #dev    hi  ", Message("PRIVMSG", ["#dev", "hi"])),
        ("PRIVMSG #dev :trailing  spaces  ", Message("PRIVMSG", ["#dev", "trailing  spaces  "])),
        ("USER u 0 * :Real Name", Message("USER", ["u", "0", "*", "Real Name"])),
        (":srv 001 alice :Welcome", Message("001", ["alice", "Welcome"], "srv")),
        ("@a=1;b;c= PING x", Message("PING", ["x"], None, {"a": "1", "b": None, "c": None})),
        ("@a=1;a=2 PING x", Message("PING", ["x"], None, {"a": "2"})),
        ("@+draft/react=\\s PING", Message("PING", [], None, {"+draft/react": " "})),
        (
            "@example.com/key=v :n!u@h TAGMSG #dev",
            Message("TAGMSG", ["#dev"], "n!u@h", {"example.com/key": "v"}),
        ),
        (b"PRIVMSG #a :caf\xc3\xa9", Message("PRIVMSG", ["#a", "café"])),
        (b"PRIVMSG #a :caf\xe9", Message("PRIVMSG", ["#a", "café"])),  # latin-1 fallback
    ],
)
def test_parse(line: bytes | str, expected: Message) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\r\n",
        "   ",
        "@a=b",
        "@a=b ",
        "@ PING x",
        "@=v PING x",
        "@bad key=v PING",
        "@k=v :src",
        ":src",
        ": PING",
        "PRIV*MSG x",
        "12 x",
        "1234 x",
        "PRIVMSG #a :x\ry",
        "PRIVMSG #a :x\0y",
        "PRIVMSG #a :x\ny",
    ],
)
def test_parse_rejects_malformed(line: str) -> None:
    with pytest.raises(IrcParseError):
        parse(line)


@pytest.mark.parametrize(
    "line",
    [
        b"PING x\r\n",
        b":n!u@h PRIVMSG #dev :hello world\r\n",
        b":n!u@h PRIVMSG #dev ::)\r\n",
        b"TOPIC #dev :\r\n",
        b"@time=2026-01-01T00:00:00.000Z;+typing=active :n TAGMSG #dev\r\n",
        b"@k=a\\:b\\sc\\\\d\\r\\n PING x\r\n",
        b":irc.test 353 alice = #dev :alice @bob carol\r\n",
    ],
)
def test_canonical_lines_round_trip(line: bytes) -> None:
    assert serialize(parse(line)) == line


@pytest.mark.parametrize(
    "message",
    [
        Message.make("PRIVMSG", "#dev", "  spaced  out  "),
        Message.make("PRIVMSG", "#dev", ":::"),
        Message.make("PRIVMSG", "#dev", ""),
        Message.make("NOTICE", "*", "ünïcödé ✓", source="srv"),
        Message.make("PING", tags={"k": "; \\\r\n=x", "+c/d": None}),
    ],
)
def test_message_round_trip(message: Message) -> None:
    assert parse(serialize(message)) == message


def test_tag_unescaping_edge_cases() -> None:
    assert parse("@k=a\\b\\ PING").tags == {"k": "ab"}
    assert parse("@k=\\\\\\: PING").tags == {"k": "\\;"}


# --- line reader -----------------------------------------------------------------------------


def received(events: list[irc.LineEvent]) -> list[Message]:
    return [e.message for e in events if isinstance(e, MessageReceived)]


def test_reader_splits_lines_across_chunks() -> None:
    reader = IrcLineReader()
    assert reader.receive_data(b"NICK al") == []
    events = reader.receive_data(b"ice\r\nUSER a 0 * :A\nPI")
    assert received(events) == [Message("NICK", ["alice"]), Message("USER", ["a", "0", "*", "A"])]
    assert received(reader.receive_data(b"NG x\r\n")) == [Message("PING", ["x"])]


def test_reader_ignores_empty_lines() -> None:
    assert IrcLineReader().receive_data(b"\r\n\n   \r\nPING x\r\n") == [
        MessageReceived(Message("PING", ["x"]))
    ]


def test_reader_reports_malformed_and_continues() -> None:
    events = IrcLineReader().receive_data(b"@a=b\r\nPRIVMSG #a :x\0y\r\nPING x\r\n")
    assert [type(e) for e in events] == [MalformedLine, MalformedLine, MessageReceived]


def test_reader_ends_lines_at_a_lone_cr() -> None:
    reader = IrcLineReader()
    events = reader.receive_data(b"NICK alice\rUSER a 0 * :A\r")
    assert received(events) == [Message("NICK", ["alice"]), Message("USER", ["a", "0", "*", "A"])]
    # CR LF split across two reads is one line end: the LF starts no (empty) line of its own,
    # and a lone LF after it is an empty line, ignored.
    assert reader.receive_data(b"\n") == []
    assert received(reader.receive_data(b"PING x\r")) == [Message("PING", ["x"])]
    assert received(reader.receive_data(b"\nPING y\n\rPING z\r\r\n")) == [
        Message("PING", ["y"]),
        Message("PING", ["z"]),
    ]
    assert reader.pending == 0


def test_reader_latin1_fallback_is_flagged() -> None:
    reader = IrcLineReader()
    events = reader.receive_data(b"PRIVMSG #a :caf\xe9\r\nPRIVMSG #a :caf\xc3\xa9\r\n")
    assert events == [
        MessageReceived(Message("PRIVMSG", ["#a", "café"]), latin1=True),
        MessageReceived(Message("PRIVMSG", ["#a", "café"]), latin1=False),
    ]


def line_of(total: int) -> bytes:
    """A PRIVMSG line of exactly ``total`` bytes including CRLF."""
    head = b"PRIVMSG #a :"
    return head + b"x" * (total - len(head) - 2) + b"\r\n"


def test_reader_accepts_exactly_512_bytes() -> None:
    line = line_of(512)
    assert len(line) == 512
    events = IrcLineReader().receive_data(line)
    assert [type(e) for e in events] == [MessageReceived]


def test_reader_rejects_513_bytes_and_continues() -> None:
    reader = IrcLineReader()
    events = reader.receive_data(line_of(513) + b"PING x\r\n")
    assert events == [LineTooLong(513), MessageReceived(Message("PING", ["x"]))]
    assert not reader.closed


def test_reader_counts_tags_separately() -> None:
    # IRCv3 message-tags: a client sends at most 4094 bytes of tag data ('@' and the space
    # not counted); the 512 bytes of the rest are counted apart.
    tag_section = b"@k=" + b"v" * (4094 - 2) + b" "
    assert len(tag_section) == 4094 + 2
    reader = IrcLineReader()
    events = reader.receive_data(tag_section + line_of(512))
    assert [type(e) for e in events] == [MessageReceived]
    too_many_tags = b"@k=" + b"v" * (4094 - 1) + b" "
    events = reader.receive_data(too_many_tags + b"PING x\r\n")
    assert [type(e) for e in events] == [LineTooLong]


def test_over_long_line_becomes_417() -> None:
    reader = IrcLineReader()
    # Sent in pieces so the reader has to discard before the newline arrives.
    events: list[irc.LineEvent] = []
    for _ in range(20):
        events += reader.receive_data(b"y" * 1000)
    events += reader.receive_data(b"\r\nPING after\r\n")
    assert events == [LineTooLong(20002), MessageReceived(Message("PING", ["after"]))]
    assert reader.pending == 0
    assert reply_with_text(SERVER, Numeric.ERR_INPUTTOOLONG, "*").to_bytes() == (
        b":irc.test 417 * :Input line was too long\r\n"
    )


def test_64k_without_newline_is_fatal() -> None:
    reader = IrcLineReader()
    assert reader.receive_data(b"z" * (64 * 1024)) == []
    assert not reader.closed
    events = reader.receive_data(b"z")
    assert events == [BufferOverflow(64 * 1024 + 1)]
    assert reader.closed
    assert reader.receive_data(b"\r\nPING x\r\n") == []


def test_64k_limit_counts_only_since_last_newline() -> None:
    reader = IrcLineReader()
    events = reader.receive_data((line_of(512) * 200)[:-2])  # ~100 KiB, last CR LF missing
    assert not reader.closed
    assert len(events) == 199
    assert [type(e) for e in reader.receive_data(b"\r\n")] == [MessageReceived]


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nick", "valid"),
    [
        ("alice", True),
        ("Alice_", True),
        ("[bot]", True),
        ("\\o/", False),
        ("`^{|}", True),
        ("a-1", True),
        ("a" * 30, True),
        ("a" * 31, False),
        ("", False),
        ("1abc", False),
        ("-abc", False),
        ("a b", False),
        ("a,b", False),
        ("#chan", False),
        ("a!b", False),
        ("a@b", False),
        ("a:b", False),
        ("a.b", False),
        ("é", False),
        ("alice\n", False),
        ("*", False),
    ],
)
def test_is_valid_nick(nick: str, valid: bool) -> None:
    assert is_valid_nick(nick) is valid


@pytest.mark.parametrize(
    ("channel", "valid"),
    [
        ("#dev", True),
        ("#a", True),
        ("#" + "a" * 49, True),
        ("#" + "a" * 50, False),
        ("#", False),
        ("dev", False),
        ("&dev", False),
        ("#a b", False),
        ("#a,b", False),
        ("#a\x07b", False),
        ("#a:b", False),
        ("#a\0b", False),
        ("#a\tb", False),
        ("#a\x7fb", False),
        ("#café", True),
        ("##", True),
    ],
)
def test_is_valid_channel(channel: str, valid: bool) -> None:
    assert is_valid_channel(channel) is valid


@pytest.mark.parametrize(
    ("channel", "room"),
    [
        ("#dev", "dev"),
        ("#Dev.Team_1-x", "Dev.Team_1-x"),
        ("#" + "a" * 49, "a" * 49),
        ("#café", None),
        ("##", None),
        ("#a+b", None),
        ("dev", None),
        ("#", None),
    ],
)
def test_channel_to_room(channel: str, room: str | None) -> None:
    assert channel_to_room(channel) == room


def test_room_to_channel() -> None:
    assert room_to_channel("dev") == "#dev"
    for bad in ("", "#dev", "a b", "é", "a" * 50):
        with pytest.raises(ValueError):
            room_to_channel(bad)


def test_casefold_is_ascii_only() -> None:
    assert casefold("AliCE[]\\~") == "alice[]\\~"
    assert casefold("ÉA") == "Éa"


def test_split_targets() -> None:
    assert split_targets("a,#b") == ["a", "#b"]
    assert split_targets(",a,,") == ["a"]
    assert split_targets("") == []


# --- numerics --------------------------------------------------------------------------------


def test_numeric_values_are_three_digits_and_unique() -> None:
    values = [n.value for n in Numeric]
    assert all(len(v) == 3 and v.isdigit() for v in values)
    assert len(set(values)) == len(values)
    assert Numeric.ERR_INPUTTOOLONG == "417"


def test_isupport_splits_into_lines_of_13_tokens() -> None:
    tokens = [f"TOKEN{i}=v" for i in range(30)]
    lines = isupport(SERVER, "alice", tokens)
    assert [len(m.params) - 2 for m in lines] == [13, 13, 4]
    for m in lines:
        assert m.command == "005"
        assert m.params[0] == "alice"
        assert m.params[-1] == "are supported by this server"
        assert irc.fits_line(m)
    assert [t for m in lines for t in m.params[1:-1]] == tokens


def test_isupport_escapes_values_and_respects_line_length() -> None:
    (line,) = isupport(SERVER, "a", {"NETWORK": "My Net=x\\"})
    assert line.to_bytes() == (
        b":irc.test 005 a NETWORK=My\\x20Net\\x3Dx\\x5C :are supported by this server\r\n"
    )
    long_tokens = [f"T{i}=" + "v" * 100 for i in range(13)]
    lines = isupport(SERVER, "a", long_tokens)
    assert len(lines) > 1 and all(irc.fits_line(m) for m in lines)


# --- registration and CAP --------------------------------------------------------------------

OFFERED: dict[str, str | None] = {
    "server-time": None,
    "message-tags": None,
    "account-tag": None,
    "sasl": "PLAIN",
    "draft/chathistory": None,
}


def wire(messages: list[Message]) -> list[bytes]:
    return [m.to_bytes() for m in messages]


def send(reg: Registration, line: str) -> irc.RegistrationStep:
    return reg.handle(parse(line))


def test_registration_without_cap() -> None:
    reg = Registration(SERVER, OFFERED)
    step = send(reg, "NICK alice")
    assert step.handled and step.nick_to_check == "alice" and not step.ready
    step = send(reg, "USER al 0 * :Alice A")
    assert step.ready and step.replies == []
    assert (reg.nick, reg.username, reg.realname) == ("alice", "al", "Alice A")
    reg.complete()
    assert reg.registered and reg.target == "alice"


def test_registration_user_before_nick() -> None:
    reg = Registration(SERVER, OFFERED)
    assert not send(reg, "USER al 0 * :Alice").ready
    step = send(reg, "NICK alice")
    assert step.ready and step.nick_to_check == "alice"


def test_registration_waits_for_cap_end() -> None:
    reg = Registration(SERVER, OFFERED)
    assert not send(reg, "CAP LS 302").ready
    assert not send(reg, "NICK alice").ready
    assert not send(reg, "USER al 0 * :Alice").ready
    step = send(reg, "CAP REQ :server-time")
    assert not step.ready
    step = send(reg, "CAP END")
    assert step.ready and step.replies == []
    assert reg.enabled == {"server-time", "cap-notify"}


def test_cap_req_alone_also_suspends_registration() -> None:
    reg = Registration(SERVER, OFFERED)
    send(reg, "NICK alice")
    assert not send(reg, "CAP REQ :message-tags").ready
    assert not send(reg, "USER al 0 * :Alice").ready
    assert send(reg, "CAP END").ready


def test_cap_ls_302_single_line_with_values() -> None:
    reg = Registration(SERVER, OFFERED)
    step = send(reg, "CAP LS 302")
    assert wire(step.replies) == [
        b":irc.test CAP * LS :server-time message-tags account-tag sasl=PLAIN draft/chathistory\r\n"
    ]


def test_cap_ls_without_302_has_no_values() -> None:
    reg = Registration(SERVER, {"sasl": "PLAIN", "server-time": None})
    assert wire(send(reg, "CAP LS").replies) == [b":irc.test CAP * LS :sasl server-time\r\n"]
    assert "cap-notify" not in reg.enabled


def test_cap_ls_302_multiline() -> None:
    offered = {f"vendor.example/capability-{i:03d}": None for i in range(60)}
    offered["sasl"] = "PLAIN,EXTERNAL"
    reg = Registration(SERVER, offered)
    lines = send(reg, "CAP LS 302").replies
    assert len(lines) > 1
    for m in lines[:-1]:
        assert m.params[:3] == ["*", "LS", "*"]
        assert len(m.to_bytes()) <= 512
    assert lines[-1].params[:2] == ["*", "LS"] and lines[-1].params[2] != "*"
    assert len(lines[-1].params) == 3
    caps = " ".join(m.params[-1] for m in lines).split()
    assert caps == [*list(offered)[:-1], "sasl=PLAIN,EXTERNAL"]
    assert wire(lines)[0].startswith(b":irc.test CAP * LS * :vendor.example/capability-000 ")


def test_cap_req_ack_and_nak_are_atomic() -> None:
    reg = Registration(SERVER, OFFERED)
    send(reg, "CAP LS 302")
    step = send(reg, "CAP REQ :server-time  message-tags")
    assert wire(step.replies) == [b":irc.test CAP * ACK :server-time message-tags\r\n"]
    assert step.cap_changes == ["server-time", "message-tags"]
    step = send(reg, "CAP REQ :account-tag unknown-cap -server-time")
    assert wire(step.replies) == [b":irc.test CAP * NAK :account-tag unknown-cap -server-time\r\n"]
    assert step.cap_changes == []
    assert reg.enabled == {"server-time", "message-tags", "cap-notify"}
    step = send(reg, "CAP REQ :-server-time account-tag")
    assert wire(step.replies) == [b":irc.test CAP * ACK :-server-time account-tag\r\n"]
    assert reg.enabled == {"message-tags", "account-tag", "cap-notify"}


def test_cap_req_single_word_and_values_rejected() -> None:
    reg = Registration(SERVER, OFFERED)
    assert wire(send(reg, "CAP REQ sasl").replies) == [b":irc.test CAP * ACK sasl\r\n"]
    assert wire(send(reg, "CAP REQ :sasl=PLAIN").replies) == [b":irc.test CAP * NAK sasl=PLAIN\r\n"]


def test_cap_notify_cannot_be_disabled_with_302() -> None:
    reg = Registration(SERVER, OFFERED)
    send(reg, "CAP LS 302")
    assert send(reg, "CAP REQ -cap-notify").replies[0].params[1] == "NAK"
    assert "cap-notify" in reg.enabled


def test_cap_list_and_after_registration() -> None:
    reg = Registration(SERVER, OFFERED)
    send(reg, "CAP LS 302")
    send(reg, "CAP REQ :server-time message-tags")
    assert wire(send(reg, "CAP LIST").replies) == [
        b":irc.test CAP * LIST :cap-notify message-tags server-time\r\n"
    ]
    send(reg, "NICK alice")
    send(reg, "USER a 0 * :A")
    assert send(reg, "CAP END").ready
    reg.complete("alice")
    step = send(reg, "CAP REQ account-tag")
    assert wire(step.replies) == [b":irc.test CAP alice ACK account-tag\r\n"]
    assert not step.ready
    assert send(reg, "CAP END").replies == []
    assert reg.registered


def test_cap_errors() -> None:
    reg = Registration(SERVER, OFFERED)
    assert wire(send(reg, "CAP").replies) == [b":irc.test 461 * CAP :Not enough parameters\r\n"]
    assert wire(send(reg, "CAP FOO").replies) == [b":irc.test 410 * FOO :Invalid CAP command\r\n"]


def test_nick_errors_and_rejection() -> None:
    reg = Registration(SERVER, OFFERED)
    assert wire(send(reg, "NICK").replies) == [b":irc.test 431 * :No nickname given\r\n"]
    assert wire(send(reg, "NICK 1bad").replies) == [b":irc.test 432 * 1bad :Erroneous nickname\r\n"]
    assert reg.nick is None
    send(reg, "USER a 0 * :A")
    step = send(reg, "NICK alice")
    assert step.ready
    # The hub says the nick is taken.
    assert wire(reg.reject_nick("alice")) == [
        b":irc.test 433 * alice :Nickname is already in use\r\n"
    ]
    assert reg.nick is None and not reg.registered
    step = send(reg, "NICK alice2")
    assert step.ready and step.nick_to_check == "alice2"
    reg.complete()
    assert reg.nick == "alice2"


def test_user_and_pass_rules() -> None:
    reg = Registration(SERVER, OFFERED)
    assert wire(send(reg, "USER a 0 *").replies) == [
        b":irc.test 461 * USER :Not enough parameters\r\n"
    ]
    assert wire(send(reg, "PASS").replies) == [b":irc.test 461 * PASS :Not enough parameters\r\n"]
    send(reg, "NICK alice")
    # An empty realname is refused (Modern IRC) and leaves registration waiting.
    step = send(reg, "USER a 0 * :")
    assert wire(step.replies) == [b":irc.test 461 * USER :Not enough parameters\r\n"]
    assert not step.ready and reg.username is None
    assert send(reg, "PASS s3cret").replies == []
    assert reg.password == "s3cret"
    send(reg, "NICK alice")
    send(reg, "USER a 0 * :A")
    reg.complete()
    assert wire(send(reg, "USER a 0 * :A").replies) == [
        b":irc.test 462 alice :You may not reregister\r\n"
    ]
    assert send(reg, "PASS x").replies[0].command == "462"


def test_commands_not_for_registration_are_passed_through() -> None:
    reg = Registration(SERVER, OFFERED)
    assert not send(reg, "PRIVMSG #a hi").handled
    send(reg, "NICK alice")
    send(reg, "USER a 0 * :A")
    reg.complete()
    assert not send(reg, "NICK bob").handled
    assert "PRIVMSG" not in irc.PRE_REGISTRATION_COMMANDS


def test_set_offered_sends_new_and_del_to_cap_notify_clients() -> None:
    reg = Registration(SERVER, {"server-time": None, "sasl": "PLAIN"})
    send(reg, "CAP LS 302")
    send(reg, "CAP REQ sasl")
    out = reg.set_offered({"server-time": None, "draft/chathistory": None})
    assert wire(out) == [
        b":irc.test CAP * DEL sasl\r\n",
        b":irc.test CAP * NEW draft/chathistory\r\n",
    ]
    assert "sasl" not in reg.enabled
    plain = Registration(SERVER, {"sasl": None})
    send(plain, "CAP LS")
    assert plain.set_offered({}) == []


# --- formatter -------------------------------------------------------------------------------

WHEN = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)


def test_format_server_time() -> None:
    assert format_server_time(WHEN) == "2026-11-25T12:00:00.123Z"
    assert format_server_time(WHEN.replace(tzinfo=None)) == "2026-11-25T12:00:00.123Z"
    plus2 = timezone(timedelta(hours=2))
    assert format_server_time(WHEN.astimezone(plus2)) == "2026-11-25T12:00:00.123Z"
    assert format_server_time(WHEN.timestamp()) == "2026-11-25T12:00:00.123Z"


def test_formatter_variants() -> None:
    base = Message.make(
        "PRIVMSG",
        "#dev",
        "hi all",
        source="alice!a@h",
        tags={"account": "alice", "msgid": "42", "+draft/reply": "41"},
    )
    fmt = Formatter(base, time=WHEN)
    plain = b":alice!a@h PRIVMSG #dev :hi all\r\n"
    assert fmt.encode(set()) == plain
    assert fmt.encode({"sasl", "cap-notify"}) == plain
    assert fmt.encode({"server-time"}) == b"@time=2026-11-25T12:00:00.123Z " + plain
    assert fmt.encode({"account-tag"}) == b"@account=alice " + plain
    assert fmt.encode({"message-tags"}) == b"@msgid=42;+draft/reply=41 " + plain
    assert fmt.encode({"message-tags", "server-time", "account-tag"}) == (
        b"@account=alice;msgid=42;+draft/reply=41;time=2026-11-25T12:00:00.123Z " + plain
    )


def test_formatter_caches_per_variant() -> None:
    fmt = Formatter(Message.make("PRIVMSG", "#dev", "x", source="a"), time=WHEN)
    first = fmt.encode({"server-time", "sasl"})
    assert fmt.encode({"server-time", "batch-less-cap"}) is first
    assert Formatter.variant({"server-time", "sasl", "message-tags"}) == {
        "server-time",
        "message-tags",
    }


def test_formatter_rejects_bad_message_up_front() -> None:
    with pytest.raises(ValueError):
        Formatter(Message.make("PRIVMSG", "#dev", "a\nb"))


def test_cap_new_del_never_use_continuation_marker() -> None:
    many = {f"vendor.example/capability-{i:03d}": None for i in range(40)}
    reg = Registration(SERVER, {})
    send(reg, "CAP LS 302")
    lines = reg.set_offered(many)
    assert len(lines) > 1
    assert all(m.params[1] == "NEW" and m.params[2] != "*" for m in lines)
    assert all(len(m.to_bytes()) <= 512 for m in lines)


def test_registrations_share_the_offered_capabilities_without_changing_them() -> None:
    # One dict of offered capabilities per kind of connection (issue 19: not a copy each);
    # a change of what one connection is offered must not reach the others.
    from threadchat.core.hub import Hub
    from threadchat.protocols.irc.registration import new_registration

    hub = Hub()
    first, second = new_registration(hub, "s"), new_registration(hub, "s")
    before = second.offered
    assert first.offered == before and "server-time" in before
    first.set_offered({"server-time": None})
    assert first.offered == {"server-time": None}
    assert second.offered == before
    assert new_registration(hub, "s").offered == before
