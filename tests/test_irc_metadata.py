"""Metadata (IRCv3 draft/metadata-3, and the JSON `metadata` request) and STATUSMSG, over
real sockets: the exact lines the specification gives, each capability negotiated and not,
and the same rule reached from the native JSON protocol."""

from collections.abc import Callable

from conftest import JsonClient
from test_irc import IrcClient
from test_irc_ircv3 import isupport, joined, offered_caps, read_batch

from threadchat.core import metadata
from threadchat.protocols.irc.wire import parse

SERVER = "threadchat"
META = "draft/metadata-3"


def registered(irc: Callable[..., IrcClient], nick: str, *caps: str) -> IrcClient:
    """A client registered with `caps`; with metadata and batch, past the (empty) batch of
    its own metadata that follows the welcome."""
    client = irc(nick, caps)
    if META in caps and "batch" in caps:
        assert read_batch(client)[1] == []
    return client


def test_the_capability_says_its_limits(irc: Callable[..., IrcClient]) -> None:
    client = irc()
    caps = offered_caps(client)
    assert caps[META] == "before-connect,max-subs=50,max-keys=20,max-value-bytes=300"


def test_set_get_list_and_clear_ones_own(irc: Callable[..., IrcClient]) -> None:
    alice = registered(irc, "alice", META, "batch")
    alice.send("METADATA * SET display-name :Alice Liddell")
    assert alice.read_line() == f":{SERVER} 761 alice alice display-name * :Alice Liddell"
    alice.send("METADATA * GET display-name avatar BAD!")
    start, lines = read_batch(alice)
    assert start.params[1:] == ["metadata", "alice"]
    assert [line.command for line in lines] == ["761", "766", "FAIL"]
    assert lines[0].params == ["alice", "alice", "display-name", "*", "Alice Liddell"]
    assert lines[1].params[:3] == ["alice", "alice", "avatar"]
    assert lines[2].params[:3] == ["METADATA", "INVALID_KEY", "BAD!"]
    alice.send("METADATA alice SET Avatar :https://example.com/a.png")
    # Keys are case-insensitive: kept in lower case.
    assert parse(alice.read_line()).params[2] == "avatar"
    alice.send("METADATA * LIST")
    _, lines = read_batch(alice)
    assert {m.params[2]: m.params[4] for m in lines} == {
        "display-name": "Alice Liddell",
        "avatar": "https://example.com/a.png",
    }
    alice.send("METADATA * SET avatar")
    assert alice.read_line() == f":{SERVER} 766 alice alice avatar :Key deleted"
    alice.send("METADATA * CLEAR")
    _, lines = read_batch(alice)
    assert [(m.command, m.params[2]) for m in lines] == [("766", "display-name")]
    alice.send("METADATA * LIST")
    assert read_batch(alice)[1] == []


def test_without_batch_the_replies_come_bare(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice", (META,))
    alice.send("METADATA * SET color :red", "METADATA * LIST", "PING :end")
    assert alice.read_line() == f":{SERVER} 761 alice alice color * red"
    assert alice.read_line() == f":{SERVER} 761 alice alice color * red"
    assert parse(alice.read_line()).command == "PONG"


def test_refusals_are_standard_replies(irc: Callable[..., IrcClient]) -> None:
    alice = registered(irc, "alice", META, "batch")
    bob = registered(irc, "bob", META, "batch")
    joined(alice, "#m")
    joined(bob, "#m")
    alice.quiet()
    bob.send("METADATA alice SET display-name :Not Alice")
    assert bob.read_line() == (
        f":{SERVER} FAIL METADATA KEY_NO_PERMISSION alice display-name "
        ":you may not change the metadata of alice"
    )
    bob.send("METADATA alice CLEAR")
    assert parse(bob.read_line()).params[:4] == ["METADATA", "KEY_NO_PERMISSION", "alice", "*"]
    bob.send("METADATA #m SET topic-url :x")  # not an operator of #m
    assert parse(bob.read_line()).params[:4] == [
        "METADATA",
        "KEY_NO_PERMISSION",
        "#m",
        "topic-url",
    ]
    bob.send("METADATA nobody LIST")
    assert bob.read_line() == (
        f":{SERVER} FAIL METADATA INVALID_TARGET nobody :Invalid metadata target"
    )
    bob.send("METADATA * SET :bad :x")
    assert parse(bob.read_line()).params[:2] == ["METADATA", "INVALID_KEY"]
    bob.send("METADATA * SET note :" + "x" * (metadata.MAX_VALUE_BYTES + 1))
    assert parse(bob.read_line()).params[:3] == ["METADATA", "INVALID_VALUE", "note"]
    bob.send("METADATA * FROB")
    assert parse(bob.read_line()).params[:3] == ["METADATA", "SUBCOMMAND_INVALID", "FROB"]
    for n in range(metadata.MAX_KEYS):
        bob.send(f"METADATA * SET k{n} :v")
        assert parse(bob.read_line()).command == "761"
    bob.send("METADATA * SET one-more :v")
    assert parse(bob.read_line()).params[:3] == ["METADATA", "LIMIT_REACHED", "*"]
    assert alice.quiet() == []


def test_channel_metadata_is_for_its_operators_to_set_and_members_to_read(
    irc: Callable[..., IrcClient],
) -> None:
    op = registered(irc, "op", META, "batch")
    member = registered(irc, "member", META, "batch")
    outsider = registered(irc, "outsider", META, "batch")
    joined(op, "#c")
    joined(member, "#c")
    op.send("METADATA #c SET url :https://example.com")
    assert op.expect_msg("761").params == ["op", "#c", "url", "*", "https://example.com"]
    member.send("METADATA #C GET url")
    _, lines = read_batch(member)
    assert lines[0].params == ["member", "#c", "url", "*", "https://example.com"]
    outsider.send("METADATA #c GET url")
    refusal = outsider.expect_msg("FAIL")
    assert refusal.params[:4] == ["METADATA", "KEY_NO_PERMISSION", "#c", "*"]
    assert "https://example.com" not in outsider.quiet()


def test_subscribers_sharing_a_channel_are_told(irc: Callable[..., IrcClient]) -> None:
    alice = registered(irc, "alice", META, "batch")
    subscriber = registered(irc, "sub", META, "batch")
    unsubscribed = registered(irc, "unsub", META, "batch")
    plain = irc("plain")
    elsewhere = registered(irc, "elsewhere", META, "batch")
    subscriber.send("METADATA * SUB display-name avatar")
    assert subscriber.read_line() == f":{SERVER} 770 sub display-name avatar"
    elsewhere.send("METADATA * SUB display-name")
    plain.send("METADATA * SUB display-name")  # works, but plain cannot be told
    for client in (alice, subscriber, unsubscribed, plain):
        joined(client, "#s")
    for client in (alice, subscriber, unsubscribed, plain, elsewhere):
        client.quiet()
    alice.send("METADATA * SET display-name :Alice L")
    assert alice.read_line() == f":{SERVER} 761 alice alice display-name * :Alice L"
    assert subscriber.read_line() == f":{SERVER} 761 * alice display-name * :Alice L"
    alice.send("METADATA * SET display-name")
    assert subscriber.read_line() == f":{SERVER} 766 * alice display-name :Key deleted"
    alice.send("METADATA * SET pronouns :she/her")  # nobody subscribed to it
    for client in (subscriber, unsubscribed, plain, elsewhere):
        assert client.quiet() == []
    subscriber.send("METADATA * SUBS")
    assert subscriber.read_line() == f":{SERVER} 772 sub avatar display-name"
    subscriber.send("METADATA * UNSUB avatar display-name")
    assert subscriber.read_line() == f":{SERVER} 771 sub avatar display-name"
    alice.send("METADATA * SET display-name :Alice again")
    assert subscriber.quiet() == []


def test_a_subscriber_joining_gets_the_channel_and_its_members(
    irc: Callable[..., IrcClient],
) -> None:
    alice = registered(irc, "alice", META, "batch")
    joined(alice, "#j")
    alice.send("METADATA #j SET display-name :The J", "METADATA * SET display-name :Alice")
    alice.expect(lambda line: "761 alice alice" in line)
    bob = registered(irc, "bob", META, "batch")
    bob.send("METADATA * SUB display-name")
    bob.expect_msg("770")
    bob.send("JOIN #j")
    bob.expect_msg("366")
    start, lines = read_batch(bob)
    assert start.params[1:] == ["metadata", "#j"]
    assert sorted((m.params[1], m.params[4]) for m in lines) == [
        ("#j", "The J"),
        ("alice", "Alice"),
    ]
    bob.send("METADATA #j SYNC")
    assert len(read_batch(bob)[1]) == 2


def test_whois_shows_metadata_with_the_capability(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice", (META,))
    alice.send("METADATA * SET display-name :Alice")
    alice.expect_msg("761")
    asker = irc("asker", (META,))
    asker.send("WHOIS alice")
    assert asker.expect_msg("760").params == ["asker", "alice", "display-name", "*", "Alice"]
    plain = irc("plain")
    plain.send("WHOIS alice")
    lines = [plain.read_line() for _ in range(3)]
    while parse(lines[-1]).command != "318":
        lines.append(plain.read_line())
    assert not any(parse(line).command == "760" for line in lines)


def test_metadata_before_connect(irc: Callable[..., IrcClient]) -> None:
    client = irc()
    client.send("CAP LS 302", f"CAP REQ :{META} batch")
    client.expect_msg("CAP", lambda m: m.params[1] == "ACK")
    client.send("METADATA * SET display-name :Early Bird")
    assert client.read_line() == f":{SERVER} 761 * * display-name * :Early Bird"
    client.send("METADATA bob SET display-name :x")
    assert parse(client.read_line()).params[:3] == ["METADATA", "KEY_NO_PERMISSION", "bob"]
    client.send("METADATA * SUB avatar")
    assert client.read_line() == f":{SERVER} 770 * avatar"
    client.send("NICK early", "USER early 0 * :Early", "CAP END")
    client.expect_msg("001")
    start, lines = read_batch(client)
    assert start.params[1:] == ["metadata", "early"]
    assert [m.params for m in lines] == [["early", "early", "display-name", "*", "Early Bird"]]
    client.send("METADATA * SUBS")
    assert client.expect_msg("772").params == ["early", "avatar"]


def test_json_users_share_the_rule(
    irc: Callable[..., IrcClient], connect_json: Callable[..., JsonClient]
) -> None:
    ircer = irc("ircer", (META,))
    ircer.send("METADATA * SUB display-name")
    ircer.expect_msg("770")
    joined(ircer, "#lobby")
    web = connect_json("web")
    web.send_json(type="metadata", op="sub", keys=["display-name"], ref=1)
    reply = web.expect_event("metadata", ref=1)
    assert reply["name"] == "web" and reply["subscriptions"] == ["display-name"]
    web.send_json(type="metadata", op="set", key="display-name", value="Web User", ref=2)
    assert web.expect_event("metadata", ref=2)["values"] == {"display-name": "Web User"}
    assert ircer.expect_msg("761").params == ["*", "web", "display-name", "*", "Web User"]
    ircer.send("METADATA * SET display-name :IRC User")
    event = web.expect_event("metadata_changed", name="ircer")
    assert (event["key"], event["value"]) == ("display-name", "IRC User")
    web.send_json(type="metadata", op="set", name="ircer", key="display-name", value="x", ref=3)
    assert web.expect_event("error", ref=3)["code"] == "not_privileged"
    web.send_json(type="metadata", name="ircer", ref=4)
    assert web.expect_event("metadata", ref=4)["values"] == {"display-name": "IRC User"}


# -- STATUSMSG ---------------------------------------------------------------------------------


def test_statusmsg_reaches_only_the_status(
    irc: Callable[..., IrcClient], connect_json: Callable[..., JsonClient]
) -> None:
    op = irc()
    op.send("NICK op", "USER op 0 * :Op")
    assert isupport(op)["STATUSMSG"] == "@+"
    joined(op, "#st")
    voiced = irc("voiced")
    member = irc("member", ("echo-message",))
    joined(voiced, "#st")
    joined(member, "#st")
    op.send("MODE #st +v voiced")
    voiced.expect_msg("MODE")
    web = connect_json("web")
    web.send_json(type="join", room="st")
    web.expect_event("who", room="st")
    for client in (op, voiced, member):
        client.quiet()
    member.send("PRIVMSG @#st :for the operators")
    line = ":member!~member@127.0.0.1 PRIVMSG @#st :for the operators"
    assert op.read_line() == line
    assert member.read_line() == line  # echo-message
    member.send("NOTICE +#st :for voiced and operators")
    notice = ":member!~member@127.0.0.1 NOTICE +#st :for voiced and operators"
    assert voiced.read_line() == notice
    assert op.read_line() == notice
    assert member.read_line() == notice  # echo-message
    assert voiced.quiet() == []
    web.send_json(type="say", room="st", text="to ops from the web", status="operator", ref=9)
    web.expect_event("ok", ref=9)
    assert op.read_line() == ":web!web@127.0.0.1 PRIVMSG @#st :to ops from the web"
    assert voiced.quiet() == []
    op.send("PRIVMSG @#st :ops only")
    assert member.quiet() == []
    # The JSON member, no operator and not voiced, got none of them.
    web_events = []
    try:
        while True:
            web_events.append(web.read_event(0.3))
    except TimeoutError:
        pass
    assert not any(e.get("type") == "message" for e in web_events)
    # Not stored: the room's history, read by every member, holds none of them.
    member.send("PRIVMSG #st :for everyone")
    web.expect_event("message", room="st", text="for everyone")
    web.send_json(type="history", room="st", ref=5)
    texts = [m["text"] for m in web.expect_event("history", ref=5)["messages"]]
    assert texts == ["for everyone"]


def test_statusmsg_to_a_json_operator_says_so(
    irc: Callable[..., IrcClient], connect_json: Callable[..., JsonClient]
) -> None:
    web = connect_json("web")
    web.send_json(type="join", room="ops")
    web.expect_event("who", room="ops")
    member = irc("member")
    joined(member, "#ops")
    member.send("PRIVMSG @#ops :psst")
    event = web.expect_event("message", room="ops")
    assert (event["text"], event["status"]) == ("psst", "operator")
