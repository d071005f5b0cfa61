"""The chat page and issue 14, messages that live on: replies, reactions, edits, deletions,
typing notices and multiline messages, with the other participant a JSON or IRC client on
real sockets, and history (a fresh page) showing the same as live.

Real server, Debian's chromium through Playwright (the fixtures of test_page.py); every wait
is bounded (WAIT).
"""

import re
from collections.abc import Callable

import test_page
from conftest import WAIT, IrcClient, JsonClient
from playwright.sync_api import Dialog, Page, expect
from test_page import MS, Browsing, chat_page, sidebar_button, type_line

from threadchat.app.server import Server

# test_page.py's browser fixtures, for this module's tests too.
playwright = test_page.playwright
browser = test_page.browser
browsing = test_page.browsing

ConnectJson = Callable[..., JsonClient]
Irc = Callable[..., IrcClient]
TAGS = ("message-tags",)


def message(page: Page, text: str, *, exact: bool = False):  # type: ignore[no-untyped-def]
    """The message shown whose text contains `text` (is `text`, when exact)."""
    wanted: str | re.Pattern[str] = re.compile(f"^{re.escape(text)}$") if exact else text
    return page.locator("#messages li.message", has=page.locator(".text", has_text=wanted))


def join_lobby(client: IrcClient) -> None:
    client.send("JOIN #lobby")
    client.expect_msg("366")


def said_by(client: JsonClient, text: str) -> int:
    """`client` says `text` in the lobby; its msgid."""
    client.send_json(type="say", room="lobby", text=text, ref=text)
    ok = client.expect_event("ok", ref=text)
    return int(ok["msgid"])


def accept_dialogs(page: Page) -> list[str]:
    asked: list[str] = []

    def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    return asked


def test_reply_from_the_page_and_a_quote_that_jumps_to_an_original_not_loaded(
    server: Server, browsing: Browsing, connect_json: ConnectJson
) -> None:
    bob = connect_json("bob")
    original = said_by(bob, "what shall we build next week?")
    for number in range(70):  # more than the page loads at first
        bob.send_json(type="say", room="lobby", text=f"filler {number}")
    said_by(bob, "the last filler")
    alice = chat_page(browsing, server, "alice")
    expect(message(alice, "the last filler")).to_be_visible()
    expect(message(alice, "what shall we build")).to_have_count(0)

    # A reply from JSON quotes its original; a click loads the history around it.
    bob.send_json(type="say", room="lobby", text="a chat server, I think", reply_to=original)
    reply = message(alice, "a chat server, I think")
    quote = reply.locator(".reply-quote")
    expect(quote).to_have_text("↪ bob what shall we build next week?")
    quote.click()
    found = alice.locator("#messages li.message.found")
    expect(found).to_contain_text("what shall we build next week?")
    expect(found).to_be_focused()
    expect(found).to_be_in_viewport()

    # The page replies, by keyboard: the message's Reply button, then Enter.
    filler = message(alice, "filler 3", exact=True)
    filler.locator("button", has_text="Reply").focus()
    alice.keyboard.press("Enter")
    expect(alice.locator("#composing")).to_contain_text("Replying to bob: filler 3")
    expect(alice.locator("#text")).to_be_focused()
    type_line(alice, "that one, yes")
    got = bob.expect_event("message", text="that one, yes")
    filler_id = int(filler.get_attribute("data-id") or 0)
    assert got["reply_to"] == filler_id and got["reply"] == {"from": "bob", "text": "filler 3"}
    expect(alice.locator("#composing")).to_be_hidden()
    own = message(alice, "that one, yes")
    expect(own.locator(".reply-quote")).to_have_text("↪ bob filler 3")
    # Escape gives up a reply.
    message(alice, "filler 4", exact=True).hover()
    message(alice, "filler 4", exact=True).locator("button", has_text="Reply").click()
    expect(alice.locator("#composing")).to_be_visible()
    alice.press("#text", "Escape")
    expect(alice.locator("#composing")).to_be_hidden()
    type_line(alice, "not a reply")
    assert "reply_to" not in bob.expect_event("message", text="not a reply")

    # A fresh page shows the same quotes from history.
    carol = chat_page(browsing, server, "carol")
    expect(message(carol, "that one, yes").locator(".reply-quote")).to_have_text("↪ bob filler 3")
    expect(message(carol, "a chat server").locator(".reply-quote")).to_contain_text(
        "what shall we build"
    )


def test_reactions_from_irc_json_and_the_page_counted_and_toggled(
    server: Server, browsing: Browsing, connect_json: ConnectJson, irc: Irc
) -> None:
    bob = connect_json("bob")
    dora = irc("dora", TAGS)
    join_lobby(dora)
    alice = chat_page(browsing, server, "alice")
    msgid = said_by(bob, "lunch at noon?")
    lunch = message(alice, "lunch at noon?")
    expect(lunch).to_be_visible()

    # An IRC client's +draft/react shows as a count.
    dora.send(f"@+draft/reply={msgid};+draft/react=👍 TAGMSG #lobby")
    thumbs = lunch.locator("button.reaction", has_text="👍")
    expect(thumbs).to_have_text("👍1")
    expect(thumbs).to_have_attribute("aria-pressed", "false")
    # A click adds ours: highlighted, counted, seen by JSON and IRC.
    thumbs.click()
    expect(thumbs).to_have_text("👍2")
    expect(thumbs).to_have_attribute("aria-pressed", "true")
    got = bob.expect_event("react", msgid=msgid, reaction="👍", **{"from": "alice"})
    assert got["on"] is True
    on_irc = dora.expect_msg("TAGMSG", lambda m: m.source.startswith("alice!"))
    assert on_irc.tags["+draft/react"] == "👍" and on_irc.tags["+draft/reply"] == str(msgid)
    # The picker adds another; a click on it takes it back.
    lunch.hover()
    lunch.locator("button", has_text="React").click()
    alice.locator(".reaction-picker button", has_text="🎉").click()
    party = lunch.locator("button.reaction", has_text="🎉")
    expect(party).to_have_text("🎉1")
    assert bob.expect_event("react", msgid=msgid, reaction="🎉")["on"] is True
    party.click()
    expect(party).to_have_count(0)
    assert bob.expect_event("react", msgid=msgid, reaction="🎉")["on"] is False
    # A JSON client's reaction, and taking back the IRC one.
    bob.send_json(type="react", msgid=msgid, reaction="🙏")
    expect(lunch.locator("button.reaction", has_text="🙏")).to_have_text("🙏1")
    bob.send_json(type="react", msgid=msgid, reaction="👍", ref="b")
    bob.expect_event("ok", ref="b")
    expect(thumbs).to_have_text("👍3")

    # Reactions on the page's own message, by keyboard through the picker.
    type_line(alice, "my own news")
    mine = message(alice, "my own news")
    expect(mine).to_have_attribute("data-id", re.compile(r"^\d+$"))  # the ok named it
    mine.locator("button", has_text="React").focus()
    alice.keyboard.press("Enter")
    expect(alice.locator(".reaction-picker button").first).to_be_focused()
    alice.keyboard.press("Enter")  # the first: 👍
    expect(mine.locator("button.reaction")).to_have_text("👍1")
    assert bob.expect_event("react", reaction="👍", **{"from": "alice"})["msgid"] != msgid

    # History replays them with their messages.
    carol = chat_page(browsing, server, "carol")
    replayed = message(carol, "lunch at noon?").locator("button.reaction")
    expect(replayed).to_have_text(["👍3", "🙏1"])
    expect(replayed.first).to_have_attribute("aria-pressed", "false")
    expect(message(carol, "my own news").locator("button.reaction")).to_have_text("👍1")


def test_edit_with_the_up_arrow_and_delete_with_a_confirmation_live_and_after_reload(
    server: Server, browsing: Browsing, connect_json: ConnectJson
) -> None:
    bob = connect_json("bob")
    alice = chat_page(browsing, server, "alice")
    asked = accept_dialogs(alice)
    type_line(alice, "helo wrld")
    first = bob.expect_event("message", text="helo wrld")["msgid"]
    type_line(alice, "a mistake")
    second = bob.expect_event("message", text="a mistake")["msgid"]
    # Shown once the server's ok came, which names it.
    expect(message(alice, "a mistake")).to_have_attribute("data-id", str(second))

    # The up arrow in the empty composer edits the last message; Escape gives it up.
    alice.press("#text", "ArrowUp")
    expect(alice.locator("#text")).to_have_value("a mistake")
    expect(alice.locator("#composing")).to_contain_text("Editing your message")
    alice.press("#text", "Escape")
    expect(alice.locator("#text")).to_have_value("")
    expect(alice.locator("#composing")).to_be_hidden()
    # The first message by its Edit button, while another is being written: it comes back.
    alice.fill("#text", "half a thought")
    helo = message(alice, "helo wrld")
    helo.hover()
    helo.locator("button", has_text="Edit").click()
    expect(alice.locator("#text")).to_have_value("helo wrld")
    alice.fill("#text", "hello world")
    alice.press("#text", "Enter")
    expect(alice.locator("#text")).to_have_value("half a thought")
    alice.fill("#text", "")
    got = bob.expect_event("edit", msgid=first)
    assert (got["text"], got["from"]) == ("hello world", "alice")
    edited = message(alice, "hello world")
    expect(edited).to_contain_text("hello world (edited)")

    # Deleting asks first, then leaves a tombstone.
    mistake = message(alice, "a mistake")
    mistake.hover()
    mistake.locator("button", has_text="Delete").click()
    got = bob.expect_event("delete", msgid=second)
    assert (got["by"], got["from"]) == ("alice", "alice")
    assert asked == ["Delete this message for everyone?"]
    tombstone = alice.locator(f'#messages li.message[data-id="{second}"]')
    expect(tombstone).to_have_class(re.compile(r"\bdeleted\b"))
    expect(tombstone.locator(".text")).to_have_text("message deleted")
    expect(tombstone.locator("button")).to_have_count(0)
    # The up arrow now edits the message before it (a deleted one is not editable).
    alice.press("#text", "ArrowUp")
    expect(alice.locator("#text")).to_have_value("hello world")
    alice.press("#text", "Escape")

    # Another's edit and deletion show live.
    bob_first = said_by(bob, "bob's draft")
    bob_second = said_by(bob, "bob's secret")
    expect(message(alice, "bob's secret")).to_be_visible()
    expect(message(alice, "bob's draft").locator("button", has_text="Edit")).to_have_count(0)
    bob.send_json(type="edit", msgid=bob_first, text="bob's final")
    expect(message(alice, "bob's final")).to_contain_text("(edited)")
    bob.send_json(type="delete", msgid=bob_second)
    expect(alice.locator(f'#messages li.message[data-id="{bob_second}"] .text')).to_have_text(
        "message deleted"
    )

    # A fresh page's history shows the same.
    carol = chat_page(browsing, server, "carol")
    expect(message(carol, "hello world")).to_contain_text("hello world (edited)")
    for gone in (second, bob_second):
        expect(carol.locator(f'#messages li.message[data-id="{gone}"] .text')).to_have_text(
            "message deleted"
        )
    expect(message(carol, "a mistake")).to_have_count(0)


def test_typing_notices_both_ways_with_an_irc_client(
    server: Server, browsing: Browsing, connect_json: ConnectJson, irc: Irc
) -> None:
    dora = irc("dora", TAGS)
    join_lobby(dora)
    bob = connect_json("bob")
    alice = chat_page(browsing, server, "alice")
    typing = alice.locator("#typing")

    # Typing on the page reaches the IRC client as +typing; emptying the box ends it.
    alice.locator("#text").press_sequentially("hel")
    active = dora.expect_msg("TAGMSG", lambda m: m.source.startswith("alice!"))
    assert active.tags["+typing"] == "active" and active.params == ["#lobby"]
    alice.locator("#text").fill("")
    done = dora.expect_msg("TAGMSG", lambda m: m.source.startswith("alice!"))
    assert done.tags["+typing"] == "done"
    # Typing again at once: the server would refuse a notice so soon, so the page sends it
    # once the 3 s are up (and again 3.3 s later if a slow link made even that too soon).
    alice.locator("#text").press_sequentially("again")
    again = dora.expect_msg("TAGMSG", lambda m: m.source.startswith("alice!"), timeout=WAIT + 7)
    assert again.tags["+typing"] == "active"
    type_line(alice, "again and done")
    dora.expect_msg("PRIVMSG", lambda m: m.params[1] == "again and done")
    assert dora.expect_msg("TAGMSG").tags["+typing"] == "done"

    # Others' notices under the log.
    dora.send("@+typing=active TAGMSG #lobby")
    expect(typing).to_have_text("dora is typing…")
    bob.send_json(type="typing", room="lobby", state="active")
    expect(typing).to_have_text("dora and bob are typing…")
    bob.send_json(type="typing", room="lobby", state="done")
    expect(typing).to_have_text("dora is typing…")
    # A message ends its sender's typing.
    dora.send("PRIVMSG #lobby :here it is")
    expect(typing).to_have_text("")
    # An `active` not followed by anything expires (after 6 s).
    erin = connect_json("erin")  # bob and dora's next notices would be too soon
    erin.send_json(type="typing", room="lobby", state="active", ref="late")
    erin.expect_event("ok", ref="late")
    expect(typing).to_have_text("erin is typing…")
    expect(typing).to_have_text("", timeout=MS + 6000)


def test_shift_enter_makes_one_multiline_message(
    server: Server, browsing: Browsing, connect_json: ConnectJson
) -> None:
    bob = connect_json("bob")
    alice = chat_page(browsing, server, "alice")
    box = alice.locator("#text")
    box.press_sequentially("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    expect(box).to_have_value("first line\nsecond line")
    box.press("Enter")
    expect(box).to_have_value("")
    assert bob.expect_event("message", **{"from": "alice"})["text"] == "first line\nsecond line"
    own = message(alice, "first line").locator(".text")
    assert own.inner_text() == "first line\nsecond line"
    # Shown on two lines (pre-wrap), as is one from JSON.
    bob.send_json(type="say", room="lobby", text="one\ntwo\nthree")
    three = message(alice, "three").locator(".text")
    expect(three).to_have_text("one\ntwo\nthree")
    box_of = three.bounding_box()
    single = message(alice, "first line").locator(".sender").bounding_box()
    assert box_of is not None and single is not None
    assert box_of["height"] > 2.5 * single["height"]
    # The same after a reload, from history.
    carol = chat_page(browsing, server, "carol")
    assert message(carol, "first line").locator(".text").inner_text() == "first line\nsecond line"


def test_the_live_module(server: Server, browsing: Browsing) -> None:
    page = browsing.page(test_page.page_url(server))
    results = page.evaluate(
        """async () => {
          const live = await import("./live.js");
          const fold = (name) => name.toLowerCase();
          let reactions = [];
          const react = (reaction, from, on) => {
            reactions = live.applyReaction(reactions, { reaction, from, on }, fold);
          };
          react("👍", "Bob", true);
          react("👍", "bob", true);
          react("🎉", "amy", true);
          react("👍", "amy", true);
          const counted = reactions.map((item) => [item.reaction, item.count]);
          react("🎉", "AMY", false);
          react("🙏", "amy", false);
          const sent = [];
          let clock = 100000;
          const send = (key, state) => sent.push([key, state]);
          const sender = new live.TypingSender(send, () => clock);
          sender.typed("#dev", "h");
          sender.typed("#dev", "he");   // within 3.3 s: nothing more
          clock += 1000;
          sender.typed("#dev", "");     // emptied: done
          sender.typed("#dev", "/who"); // a command: nothing
          clock += 5000;
          sender.typed("#dev", "x");
          sender.typed("#lobby", "y");  // elsewhere: done there; here, once 3.3 s are up
          sender.done();
          // An `active` the server refused is sent again later, if still typing.
          clock += 10000;
          sender.typed("#dev", "z");
          sender.refused("active");
          const retry = [sender.state, sender.laterTimer !== null];
          sender.done();
          return {
            retry,
            quotes: [live.quoteOf("short"), live.quoteOf("two\\nlines"),
                     live.quoteOf("a sentence that goes on well past the forty characters")],
            counted,
            left: reactions,
            typing: [[], ["amy"], ["amy", "bob"], ["a", "b", "c"], ["a", "b", "c", "d"]]
              .map(live.typingText),
            sent,
          };
        }"""
    )
    assert results["quotes"] == ["short", "two…", "a sentence that goes on well past the…"]
    assert results["counted"] == [["👍", 2], ["🎉", 1]]
    assert results["left"] == [{"reaction": "👍", "from": ["Bob", "amy"], "count": 2}]
    assert results["typing"] == [
        "",
        "amy is typing…",
        "amy and bob are typing…",
        "a, b and c are typing…",
        "Several people are typing…",
    ]
    assert results["sent"] == [
        ["#dev", "active"],
        ["#dev", "done"],
        ["#dev", "active"],
        ["#dev", "done"],
        ["#dev", "active"],
        ["#dev", "done"],
    ]
    assert results["retry"] == ["paused", True]


def test_a_private_conversation_has_the_same_reactions_edits_and_typing(
    server: Server, browsing: Browsing, connect_json: ConnectJson
) -> None:
    bob = connect_json("bob")
    alice = chat_page(browsing, server, "alice")
    bob.send_json(type="msg", to="alice", text="are you free?", ref="q")
    question = int(bob.expect_event("ok", ref="q")["msgid"])
    sidebar_button(alice, "@bob").click()
    asked = message(alice, "are you free?")
    expect(asked).to_have_attribute("data-id", str(question))

    # Typing in a private conversation goes to the other person only, by name.
    alice.locator("#text").press_sequentially("ye")
    typing = bob.expect_event("typing", **{"from": "alice"})
    assert typing.get("room") is None and typing["state"] == "active"
    alice.locator("#text").fill("")

    # A reaction from the picker reaches bob, named by the message and the conversation.
    asked.hover()
    asked.locator("button", has_text="React").click()
    alice.locator(".reaction-picker button", has_text="👍").click()
    reacted = bob.expect_event("react", msgid=question, **{"from": "alice"})
    assert reacted["on"] is True and reacted["to"] == "bob"
    expect(asked.locator("button.reaction")).to_have_text("👍1")

    # bob's edit shows; alice's own message is edited with the up arrow.
    bob.send_json(type="edit", msgid=question, text="are you free at noon?", ref="e")
    bob.expect_event("ok", ref="e")
    expect(message(alice, "are you free at noon?")).to_contain_text("(edited)")
    type_line(alice, "yes, free")
    answer = bob.expect_event("private", text="yes, free")["msgid"]
    expect(message(alice, "yes, free")).to_have_attribute("data-id", str(answer))
    alice.press("#text", "ArrowUp")
    expect(alice.locator("#text")).to_have_value("yes, free")
    alice.fill("#text", "yes, free at noon")
    alice.press("#text", "Enter")
    edited = bob.expect_event("edit", msgid=answer)
    assert (edited["text"], edited["to"]) == ("yes, free at noon", "bob")
