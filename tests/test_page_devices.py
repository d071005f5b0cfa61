"""The chat page and issue 15: one account on two pages (read markers, own messages from the
other device), unread counts that survive a reload, and the search panel.

Real server, Debian's chromium through Playwright (the fixtures of test_page.py); every wait
is bounded (WAIT).
"""

from collections.abc import Iterator

import pytest
import test_page
from conftest import LineClient
from playwright.sync_api import Page, expect
from test_page import (
    Browsing,
    chat_page,
    log_in,
    messages,
    nc_user,
    page_url,
    sidebar_button,
    type_line,
)

from threadchat.app.server import Server

PASSWORD = "a long passphrase"

# test_page.py's browser fixtures, for this module's tests too.
playwright = test_page.playwright
browser = test_page.browser
browsing = test_page.browsing


@pytest.fixture
def line_clients() -> Iterator[list[LineClient]]:
    clients: list[LineClient] = []
    yield clients
    for client in clients:
        client.close()


def badge(page: Page, key: str):  # type: ignore[no-untyped-def]
    return sidebar_button(page, key).locator(".badge")


def account_pages(browsing: Browsing, server: Server, name: str) -> tuple[Page, Page]:
    """Two pages logged in to one account (registered on the first)."""
    laptop = browsing.page(page_url(server))
    log_in(laptop, name, PASSWORD, register=True)
    expect(laptop.locator("#messages")).to_contain_text(f"You are logged in as {name}.")
    phone = browsing.page(page_url(server))
    log_in(phone, name, PASSWORD)
    return laptop, phone


def test_two_pages_of_one_account_share_read_markers_and_own_messages(
    server: Server, browsing: Browsing, line_clients: list[LineClient]
) -> None:
    laptop, phone = account_pages(browsing, server, "alice")
    carol = nc_user(server, "carol")
    line_clients.append(carol)
    carol.send("/join dev")
    type_line(laptop, "/join dev")
    expect(laptop.locator("#title")).to_have_text("#dev")
    # The account joined: the phone is in #dev too, and stays on the lobby.
    expect(sidebar_button(phone, "#dev")).to_be_visible()
    expect(phone.locator("#title")).to_have_text("#lobby")

    # What the laptop sends, the phone shows as its own: in a room, and privately.
    type_line(laptop, "hello from the laptop")
    carol.expect("[dev] alice: hello from the laptop")
    sidebar_button(phone, "#dev").click()
    expect(phone.locator("#messages li.message.own").last).to_contain_text(
        "alice hello from the laptop"
    )
    type_line(laptop, "/msg carol psst from the laptop")
    carol.expect("[private] alice: psst from the laptop")
    expect(sidebar_button(phone, "@carol")).to_be_visible()
    expect(badge(phone, "@carol")).to_have_count(0)  # one's own words are not unread
    sidebar_button(phone, "@carol").click()
    expect(phone.locator("#messages li.message.own").last).to_contain_text(
        "alice psst from the laptop"
    )

    # Both look at the lobby; carol speaks in #dev: two unread on both.
    for page in (laptop, phone):
        sidebar_button(page, "#lobby").click()
        expect(page.locator("#title")).to_have_text("#lobby")
    carol.send("/join dev", "first news", "second news")
    for page in (laptop, phone):
        expect(badge(page, "#dev")).to_have_text("2")
    # Read on the laptop: the phone's count goes too.
    sidebar_button(laptop, "#dev").click()
    expect(laptop.locator("#messages li.message").last).to_contain_text("carol second news")
    expect(badge(laptop, "#dev")).to_have_count(0)
    expect(badge(phone, "#dev")).to_have_count(0)

    # Unread while both look elsewhere, then the phone reloads: the count is the marker's.
    sidebar_button(laptop, "#lobby").click()
    expect(laptop.locator("#title")).to_have_text("#lobby")
    carol.send("late news")
    for page in (laptop, phone):
        expect(badge(page, "#dev")).to_have_text("1")
    phone.reload()
    log_in(phone, "alice", PASSWORD)
    expect(badge(phone, "#dev")).to_have_text("1")
    expect(phone).to_have_title("(1) threadchat")
    # The "new messages" line sits before what was not read.
    sidebar_button(phone, "#dev").click()
    line = phone.locator("#messages li.new-messages")
    expect(line).to_have_count(1)
    expect(phone.locator("#messages li.new-messages + li.message")).to_contain_text(
        "carol late news"
    )
    expect(badge(laptop, "#dev")).to_have_count(0)
    # And after a reload of the laptop, nothing is unread there either: the lobby was read
    # and so was #dev (each conversation's latest history has come before it is counted).
    laptop.reload()
    log_in(laptop, "alice", PASSWORD)
    sidebar_button(laptop, "#dev").click()
    expect(laptop.locator("#messages li.message").last).to_contain_text("carol late news")
    expect(laptop.locator("#messages li.new-messages")).to_have_count(0)


def test_the_search_panel_finds_and_opens_a_message_never_another_users_private_one(
    server: Server, browsing: Browsing, line_clients: list[LineClient]
) -> None:
    carol = nc_user(server, "carol")
    bob = nc_user(server, "bob")
    dave = nc_user(server, "dave")
    line_clients.extend([carol, bob, dave])
    for client in (bob, dave):
        client.send("/register no-spaces-in-text-mode")
        client.expect("--- you are logged in as")
    # Private between bob and dave: never found by anyone else.
    bob.send("/msg dave the green tea secret")
    dave.expect("[private] bob: the green tea secret")
    carol.send("the green tea is ready", *(f"filler {n}" for n in range(120)))
    page = chat_page(browsing, server, "erin")
    expect(page.locator("#messages li.message").last).to_contain_text("carol filler 119")

    page.locator("#toggle-search").click()
    expect(page.locator("#search")).to_be_visible()
    expect(page.locator("#search-text")).to_be_focused()
    page.fill("#search-text", '"green tea"')
    page.press("#search-text", "Enter")
    results = page.locator("#search-results button.result")
    expect(results).to_have_count(1)
    expect(results.first).to_contain_text("carol the green tea is ready")
    expect(results.first).to_contain_text("#lobby")

    # A filter that excludes it, then a prefix with filters from a /search line.
    page.fill("#search-from", "bob")
    page.press("#search-text", "Enter")
    expect(page.locator("#search-status")).to_have_text('Nothing found for "green tea".')
    type_line(page, "/search gre* from:carol in:lobby")
    expect(page.locator("#search-from")).to_have_value("carol")
    expect(results).to_have_count(1)
    type_line(page, "/search secret")
    expect(page.locator("#search-status")).to_have_text("Nothing found for secret.")

    # Opening the result: the lobby around it, beyond what the page held, with the gap
    # after it loaded by a button.
    type_line(page, '/search "green tea"')
    expect(results).to_have_count(1)
    results.first.click()
    found = page.locator("#messages li.message.found")
    expect(found).to_contain_text("carol the green tea is ready")
    expect(found).to_be_in_viewport()
    expect(found).to_be_focused()
    newer = page.locator("#messages li.newer button")
    expect(newer).to_be_visible()
    newer.click()
    expect(newer).to_have_count(0)
    shown = messages(page)
    fillers = [text for text in shown if text.startswith("carol filler")]
    assert fillers == [f"carol filler {n}" for n in range(120)]
    assert shown.count("carol the green tea is ready") == 1


def test_the_marker_moves_only_while_the_page_is_looked_at(
    server: Server, browsing: Browsing, line_clients: list[LineClient]
) -> None:
    laptop, phone = account_pages(browsing, server, "hugo")
    carol = nc_user(server, "carol")
    line_clients.append(carol)
    type_line(laptop, "/join dev")
    expect(laptop.locator("#title")).to_have_text("#dev")
    # The phone shows the lobby, but in a pocket: not focused.
    phone.evaluate("document.hasFocus = () => false")
    carol.send("while the phone is in a pocket")
    expect(phone.locator("#messages li.message").last).to_contain_text("in a pocket")
    expect(phone).to_have_title("(1) threadchat")
    expect(badge(laptop, "#lobby")).to_have_text("1")
    # Taken out: the line shows where the reading stopped, and both counts go.
    phone.evaluate("delete document.hasFocus; window.dispatchEvent(new Event('focus'))")
    expect(phone.locator("#messages li.new-messages + li.message")).to_contain_text("in a pocket")
    expect(phone).to_have_title("threadchat")
    expect(badge(laptop, "#lobby")).to_have_count(0)

    # The phone off, then on again: the lobby it opens on has the line where it stopped.
    phone.goto("about:blank")
    carol.send("while the phone was off")
    expect(badge(laptop, "#lobby")).to_have_text("1")
    phone.goto(page_url(server))
    log_in(phone, "hugo", PASSWORD)
    expect(phone.locator("#messages li.new-messages + li.message")).to_contain_text(
        "carol while the phone was off"
    )
    expect(badge(laptop, "#lobby")).to_have_count(0)


def test_always_on_from_the_page(server: Server, browsing: Browsing) -> None:
    laptop, _phone = account_pages(browsing, server, "gwen")
    type_line(laptop, "/always-on on")
    said = laptop.locator("#messages li.info .text", has_text="always-on is on")
    expect(said).to_have_count(1)
    type_line(laptop, "/always-on")
    expect(said).to_have_count(2)
    expect(said.last).to_have_text(
        "always-on is on: you stay in your rooms while no device is connected"
    )
    type_line(laptop, "/always-on maybe")
    expect(laptop.locator("#messages li.error .text").last).to_have_text(
        "usage: /always-on [on|off]"
    )


def test_the_modules_of_reading_and_search(server: Server, browsing: Browsing) -> None:
    page = browsing.page(page_url(server), timezone_id="UTC")
    results = page.evaluate(
        """async () => {
          const { parseLine } = await import("./commands.js");
          const { MarkerSender, READ_EVERY, unreadOf } = await import("./reading.js");
          const { searchRequest } = await import("./search.js");
          const room = { kind: "room", name: "dev" };
          const message = (ts, own = false, mentionsMe = false) =>
            ({ kind: "message", ts, own, mentionsMe });
          const conv = {
            readTs: "2026-12-07T10:00:00.000Z", joinedAt: null, more: false,
            entries: [
              message("2026-12-07T09:00:00.000Z"), message("2026-12-07T10:00:00.000Z"),
              { kind: "info", ts: "2026-12-07T10:30:00.000Z" },
              message("2026-12-07T11:00:00.000Z", true), message("2026-12-07T11:00:00.001Z"),
              message("2026-12-07T12:00:00.000Z", false, true),
            ],
          };
          const noMarker = { ...conv, readTs: null, joinedAt: "2026-12-07T09:30:00.000Z" };
          const allUnread = { ...conv, readTs: "2026-12-07T08:00:00.000Z", more: true };
          // Three moves at once: the first is sent at once, the last one after READ_EVERY.
          const sent = [];
          const sender = new MarkerSender((key, ts) => sent.push([key, ts, performance.now()]));
          const start = performance.now();
          sender.move("#dev", "a");
          sender.move("#dev", "b");
          sender.move("#dev", "c");
          sender.move("#ops", "d");
          await new Promise((done) => setTimeout(done, READ_EVERY + 500));
          return {
            search: parseLine('/search "green tea" deploy* from:bob in:#dev ' +
                              "after:2026-11-01 before:2026-12-01", room),
            request: searchRequest({
              text: " tea ", room: "dev", from: "bob ", since: "", until: "",
            }),
            days: searchRequest({ text: "tea", since: "2026-11-01", until: "2026-11-30" }),
            unread: unreadOf(conv),
            noMarker: unreadOf(noMarker),
            allUnread: unreadOf(allUnread),
            sent: sent.map(([key, ts, at]) => [key, ts, at - start >= READ_EVERY - 50]),
          };
        }"""
    )
    assert results["search"] == {
        "search": {
            "text": '"green tea" deploy*',
            "room": "dev",
            "from": "bob",
            "since": "2026-11-01",
            "until": "2026-11-30",
        }
    }
    assert results["request"] == {
        "type": "search",
        "text": "tea",
        "limit": 50,
        "room": "dev",
        "from": "bob",
    }
    # Days are inclusive, in the browser's time zone; the server's bounds exclusive.
    assert results["days"] == {
        "type": "search",
        "text": "tea",
        "limit": 50,
        "after": "2026-10-31T23:59:59.999Z",
        "before": "2026-12-01T00:00:00.000Z",
    }
    assert results["unread"] == {"count": 2, "mention": True, "capped": False}
    assert results["noMarker"] == {"count": 3, "mention": True, "capped": False}
    assert results["allUnread"] == {"count": 4, "mention": True, "capped": True}
    assert results["sent"] == [["#dev", "a", False], ["#ops", "d", False], ["#dev", "c", True]]


def test_at_phone_width_the_search_panel_gives_way_to_the_result(
    server: Server, browsing: Browsing, line_clients: list[LineClient]
) -> None:
    carol = nc_user(server, "carol")
    line_clients.append(carol)
    carol.send("the kettle is on", *(f"small talk {n}" for n in range(30)))
    page = browsing.page(page_url(server), viewport={"width": 390, "height": 760})
    log_in(page, "ines")
    expect(page.locator("#messages li.message").last).to_contain_text("small talk 29")
    page.locator("#toggle-search").click()
    page.fill("#search-text", "kettle")
    page.press("#search-text", "Enter")
    page.locator("#search-results button.result").first.click()
    expect(page.locator("#search")).to_be_hidden()
    expect(page.locator("#toggle-search")).to_have_attribute("aria-expanded", "false")
    found = page.locator("#messages li.message.found")
    expect(found).to_contain_text("carol the kettle is on")
    expect(found).to_be_in_viewport()
    expect(found).to_be_focused()
