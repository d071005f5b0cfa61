"""The chat page in a real browser: Playwright driving Debian's chromium (/usr/bin/chromium).

Every test runs a real server on ephemeral ports; every wait is bounded (WAIT). Browser
builds are never downloaded: without /usr/bin/chromium these tests are skipped with the
reason (`.ci/run` installs it with apt-get before `make test`).
"""

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import WAIT, IrcClient, LineClient, unref
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from threadchat.app.server import Server
from threadchat.config import Config

CHROMIUM = Path("/usr/bin/chromium")
MS = int(WAIT * 1000)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"browser tests need Debian's chromium at {CHROMIUM}: "
            "apt-get install chromium (.ci/run does it before make test)"
        )
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Chromium's sandbox needs user namespaces, which a root CI container lacks.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args, timeout=MS * 4)
    yield browser
    browser.close()


@dataclass
class Browsing:
    """Pages opened by a test: each in its own browser context (its own user), with the
    page errors and console errors they logged, which fail the test."""

    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def page(self, url: str, *, tolerate: tuple[str, ...] = (), **options: object) -> Page:
        context = self.browser.new_context(**options)  # type: ignore[arg-type]
        context.set_default_timeout(MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

        def on_console(message: object) -> None:
            text = message.text  # type: ignore[attr-defined]
            if message.type == "error" and not any(t in text for t in tolerate):  # type: ignore[attr-defined]
                self.problems.append(f"console: {text}")

        page.on("console", on_console)
        page.goto(url)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def browsing(browser: Browser) -> Iterator[Browsing]:
    expect.set_options(timeout=MS)
    session = Browsing(browser)
    yield session
    session.close()
    assert not session.problems, session.problems


def page_url(server: Server) -> str:
    return f"http://127.0.0.1:{server.listener('web').port}/"


def log_in(page: Page, name: str, password: str = "", *, register: bool = False) -> None:
    page.fill("#name", name)
    if password:
        page.fill("#password", password)
    if register:
        page.check("#register")
    page.click("#login button[type=submit]")
    expect(page.locator("#status")).to_have_text(f"connected as {name}")
    expect(page.locator("#title")).to_have_text("#lobby")


def chat_page(browsing: Browsing, server: Server, name: str, **options: object) -> Page:
    page = browsing.page(page_url(server), **options)
    log_in(page, name)
    return page


def type_line(page: Page, line: str) -> None:
    page.fill("#text", line)
    page.press("#text", "Enter")
    expect(page.locator("#text")).to_have_value("")


def messages(page: Page) -> list[str]:
    """The chat messages shown, each as "sender text"."""
    return [
        " ".join(text.split())
        for text in page.locator("#messages li.message .body").all_inner_texts()
    ]


def sidebar_button(page: Page, key: str):  # type: ignore[no-untyped-def]
    return page.locator(f'#sidebar button[data-key="{key}"]')


def nc_user(server: Server, name: str, port: int | None = None) -> LineClient:
    client = LineClient(port or server.listener("line").port)
    client.send(name)
    client.expect("--- in lobby:")
    return client


@pytest.fixture
def line_clients() -> Iterator[list[LineClient]]:
    clients: list[LineClient] = []
    yield clients
    for client in clients:
        client.close()


# -- chat ----------------------------------------------------------------------------------------


def test_two_pages_an_nc_user_and_an_irc_user_chat_in_a_room_and_privately(
    server: Server, browsing: Browsing, line_clients: list[LineClient]
) -> None:
    alice = chat_page(browsing, server, "alice")
    bob = chat_page(browsing, server, "bob")
    carol = nc_user(server, "carol")
    line_clients.append(carol)
    expect(alice.locator("#member-list")).to_contain_text("carol")

    type_line(alice, "hi all")
    expect(bob.locator("#messages li.message").last).to_contain_text("alice hi all")
    carol.expect("alice: hi all")
    carol.send("hello from nc")
    for page in (alice, bob):
        expect(page.locator("#messages li.message").last).to_contain_text("carol hello from nc")
    type_line(bob, "/me waves")
    carol.expect("* bob waves")
    expect(alice.locator("#messages li.message.action").last).to_contain_text("* bob waves")
    # An IRC user in the same room.
    dora = IrcClient(server.listener("irc").port)
    line_clients.append(dora)
    dora.register("dora")
    dora.send("JOIN #lobby")
    dora.expect_msg("366")
    expect(alice.locator("#member-list")).to_contain_text("dora")
    type_line(alice, "hi dora")
    dora.expect_msg("PRIVMSG", lambda message: message.params == ["#lobby", "hi dora"])
    dora.send("PRIVMSG #lobby :hello from irc")
    expect(bob.locator("#messages li.message").last).to_contain_text("dora hello from irc")

    # A private conversation, opened from the member list.
    bob.locator("#member-list button", has_text="alice").click()
    expect(bob.locator("#title")).to_have_text("alice")
    type_line(bob, "psst alice")
    expect(sidebar_button(alice, "@bob")).to_contain_text("1")
    sidebar_button(alice, "@bob").click()
    expect(alice.locator("#messages li.message").last).to_contain_text("bob psst alice")
    carol.send("/msg alice from nc, privately")
    expect(sidebar_button(alice, "@carol")).to_be_visible()
    sidebar_button(alice, "@carol").click()
    expect(alice.locator("#messages li.message").last).to_contain_text("carol from nc, privately")
    type_line(alice, "back to you")
    assert unref(carol.expect("[private]")) == "[private] alice: back to you"

    # Another room: joined by a command and by the form; the lobby counts what is missed.
    type_line(alice, "/join dev")
    expect(alice.locator("#title")).to_have_text("#dev")
    bob.fill("#join-room", "#dev")
    bob.press("#join-room", "Enter")
    expect(bob.locator("#title")).to_have_text("#dev")
    expect(alice.locator("#member-list")).to_contain_text("bob")
    type_line(alice, "/topic building the page")
    expect(bob.locator("#topic")).to_have_text("building the page")
    type_line(bob, "in dev now")
    expect(alice.locator("#messages li.message").last).to_contain_text("bob in dev now")
    carol.send("lobby news")
    expect(sidebar_button(alice, "#lobby")).to_contain_text("1")
    sidebar_button(alice, "#lobby").click()
    expect(alice.locator("#messages li.message").last).to_contain_text("carol lobby news")
    expect(sidebar_button(alice, "#lobby")).not_to_contain_text("1")
    # Each message shown once, in order.
    sidebar_button(bob, "#lobby").click()
    expect(bob.locator("#title")).to_have_text("#lobby")
    assert messages(bob) == [
        "alice hi all",
        "carol hello from nc",
        "* bob waves",
        "alice hi dora",
        "dora hello from irc",
        "carol lobby news",
    ]


def test_hostile_text_is_shown_as_text(
    server: Server, browsing: Browsing, line_clients: list[LineClient]
) -> None:
    page = chat_page(browsing, server, "reader")
    mallory = nc_user(server, "mallory")
    line_clients.append(mallory)
    hostile = [
        '<img src=x onerror="window.pwned = 1">',
        "<script>window.pwned = 2</script>",
        "javascript:window.pwned=3 and https://example.com/?q=<b>bold</b>",
        '<a href="javascript:window.pwned=4">click</a>',
    ]
    for line in hostile:
        mallory.send(line)
    expect(page.locator("#messages li.message")).to_have_count(len(hostile))
    assert messages(page) == [f"mallory {line}" for line in hostile]
    listed = page.locator("#messages")
    expect(listed.locator("img, script, b")).to_have_count(0)
    # One link only, the https one, cut before the markup, opened without a way back.
    links = listed.locator("a")
    expect(links).to_have_count(1)
    assert links.get_attribute("href") == "https://example.com/?q="
    assert links.get_attribute("rel") == "noopener noreferrer"
    assert links.get_attribute("target") == "_blank"
    assert page.evaluate("window.pwned") is None


# -- history -------------------------------------------------------------------------------------


def test_history_on_join_and_scroll_back(
    make_server: Callable[..., Server], browsing: Browsing, line_clients: list[LineClient]
) -> None:
    server = make_server(history_on_join=5)
    dan = nc_user(server, "dan")
    line_clients.append(dan)
    said = [f"message {n:03}" for n in range(120)]
    dan.send(*said)
    dan.send("/history 1")
    dan.expect("message 119")
    # The join replays 5 messages; the page asks for the latest page of history (50) with
    # them, to know whether there is more: the two overlap, and each shows once.
    page = chat_page(browsing, server, "eve")
    expect(page.locator("#messages li.message")).to_have_count(50)
    assert messages(page) == [f"dan {text}" for text in said[-50:]]
    # Scrolling up asks for older pages (50 a time), until the start: each message once.
    older = page.locator("#messages li.older button")
    expect(older).to_have_text("Load older messages")
    for _ in range(5):
        if page.locator("#messages li.message").count() == len(said):
            break
        page.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
        page.locator("#messages").dispatch_event("scroll")
        page.wait_for_function(
            "() => !document.querySelector('#messages li.older button:disabled')", timeout=MS
        )
    expect(page.locator("#messages li.message")).to_have_count(len(said))
    assert messages(page) == [f"dan {text}" for text in said]
    expect(older).to_have_count(0)
    # Grouped by day: one day, one separator.
    expect(page.locator("#messages li.day")).to_have_count(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_reconnect_after_a_restart_shows_what_was_said_meanwhile_once(
    tmp_path: Path, browsing: Browsing
) -> None:
    # Fixed ports, so that the restarted server is where the page left it.
    settings = Config(
        line_port=free_port(),
        web_port=free_port(),
        irc_port=0,
        udp_port=0,
        flood_rate=0,
        history_on_join=3,
        data_dir=str(tmp_path),
    )
    server = Server(settings, ephemeral_ports=False)
    server.start()
    try:
        page = browsing.page(page_url(server), tolerate=("WebSocket connection to",))
        log_in(page, "fay")
        type_line(page, "before the restart")
        expect(page.locator("#messages li.message.own")).to_have_count(1)
        server.stop()
        # The page retries with a growing delay; once it waits 2 s for its next attempt,
        # the server comes back and others speak before the page does.
        expect(page.locator("#status")).to_contain_text("reconnecting in 2 s")
        server = Server(settings, ephemeral_ports=False)
        server.start()
        gus = nc_user(server, "gus")
        meanwhile = [f"while you were away {n}" for n in range(8)]
        try:
            gus.send(*meanwhile)
            gus.send("/history 1")
            gus.expect("while you were away 7")
            expect(page.locator("#status")).to_have_text("connected as fay", timeout=MS * 2)
            expected = ["fay before the restart", *(f"gus {text}" for text in meanwhile)]
            expect(page.locator("#messages li.message")).to_have_count(len(expected))
            assert messages(page) == expected
            # And the page goes on live.
            gus.send("live again")
            expect(page.locator("#messages li.message").last).to_contain_text("gus live again")
            assert len(messages(page)) == len(expected) + 1
        finally:
            gus.close()
    finally:
        server.stop()


# -- notifications, keyboard, layout -----------------------------------------------------------

# Records each notification the page makes, then lets the browser make it.
RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  window.notified = [];
  class Recorded extends Real {
    constructor(title, options) {
      super(title, options);
      window.notified.push({ title, body: options && options.body });
    }
  }
  window.Notification = Recorded;
})();
"""


def test_a_mention_or_private_message_raises_a_notification(
    server: Server, browsing: Browsing, line_clients: list[LineClient]
) -> None:
    page = browsing.page(page_url(server), permissions=["notifications"])
    page.add_init_script(RECORD_NOTIFICATIONS)
    page.reload()
    log_in(page, "hana")
    type_line(page, "/join quiet")
    expect(page.locator("#title")).to_have_text("#quiet")
    ivan = nc_user(server, "ivan")
    line_clients.append(ivan)
    ivan.send("no mention here", "hey hana, look at this", "/msg hana psst")
    expect(sidebar_button(page, "@ivan")).to_be_visible()
    notified = page.evaluate("window.notified")
    assert notified == [
        {"title": "ivan in #lobby", "body": "hey hana, look at this"},
        {"title": "ivan (private)", "body": "psst"},
    ]
    lobby = sidebar_button(page, "#lobby")
    expect(lobby).to_have_class("conversation-button mentioned")
    expect(lobby).to_contain_text("2")
    lobby.click()
    expect(page.locator("#messages li.message.mention")).to_have_count(1)
    expect(page.locator("#messages li.message.mention")).to_contain_text("hey hana")


def test_notifications_are_asked_for_on_a_click(server: Server, browsing: Browsing) -> None:
    page = browsing.page(page_url(server))
    log_in(page, "jon")
    button = page.locator("#notify")
    expect(button).to_be_visible()
    page.context.grant_permissions(["notifications"])
    button.click()
    expect(button).to_be_hidden()


def test_usable_by_keyboard_alone(server: Server, browsing: Browsing) -> None:
    page = browsing.page(page_url(server))
    # The name field has the focus; Enter joins.
    page.keyboard.type("kim")
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text("connected as kim")
    expect(page.locator("#text")).to_be_focused()
    page.keyboard.type("/join dev")
    page.keyboard.press("Enter")
    expect(page.locator("#title")).to_have_text("#dev")
    # Alt+Up / Alt+Down go round the conversations, and leave the focus in the message box.
    page.keyboard.press("Alt+ArrowUp")
    expect(page.locator("#title")).to_have_text("#lobby")
    expect(page.locator("#text")).to_be_focused()
    page.keyboard.press("Alt+ArrowDown")
    expect(page.locator("#title")).to_have_text("#dev")
    # Tab reaches the conversation list, Enter opens one.
    sidebar_button(page, "#lobby").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#title")).to_have_text("#lobby")
    expect(sidebar_button(page, "#lobby")).to_have_attribute("aria-current", "true")
    # The landmarks and live regions assistive technology relies on.
    expect(page.get_by_role("log")).to_have_count(1)
    expect(page.get_by_role("navigation", name="Conversations")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("connected as kim")
    expect(page.get_by_role("textbox", name="Message")).to_be_visible()


def test_phone_width_layout(server: Server, browsing: Browsing) -> None:
    page = browsing.page(page_url(server), viewport={"width": 390, "height": 844})
    log_in(page, "lou")
    sidebar = page.locator("#sidebar")
    expect(sidebar).to_be_hidden()
    expect(page.locator("#members")).to_be_hidden()
    toggle = page.locator("#toggle-sidebar")
    toggle.click()
    expect(sidebar).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Escape")
    expect(sidebar).to_be_hidden()
    page.locator("#toggle-members").click()
    expect(page.locator("#member-list")).to_contain_text("lou")
    # Nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_commands_translate_to_requests(
    server: Server, browsing: Browsing, line_clients: list[LineClient]
) -> None:
    page = chat_page(browsing, server, "max")
    ned = nc_user(server, "ned")
    line_clients.append(ned)
    type_line(page, "/nick maxi")
    expect(page.locator("#status")).to_have_text("connected as maxi")
    ned.expect("--- max is now known as maxi")
    type_line(page, "//slash")
    ned.expect("maxi: /slash")
    type_line(page, "/whois ned")
    expect(page.locator("#messages li.info", has_text="ned: a guest")).to_have_count(1)
    type_line(page, "/frobnicate")
    expect(page.locator("#messages li.error").last).to_have_text(
        "unknown command /frobnicate; /help lists them"
    )  # said by the page itself, without a time
    type_line(page, "/leave #nowhere")
    expect(page.locator("#messages li.error", has_text="nowhere")).to_have_count(1)
    # The room directory joins with a click.
    ned.send("/join games", "/topic cards at noon")
    ned.expect("--- ned set the topic of games")
    page.locator("#list-rooms").click()
    directory = page.locator("#messages .room-directory").last
    expect(directory).to_contain_text("#games 1 member — cards at noon")
    directory.get_by_role("button", name="#games").click()
    expect(page.locator("#title")).to_have_text("#games")
    expect(page.locator("#topic")).to_have_text("cards at noon")
    type_line(page, "/register correct horse battery")
    expect(page.locator("#messages li.info", has_text="You are logged in as maxi")).to_have_count(1)


# -- origins -------------------------------------------------------------------------------------

# A page of another site that opens a WebSocket to the chat server (a hijacking attempt).
PROBE = """
async (url) => await new Promise((resolve) => {
  const socket = new WebSocket(url, "threadchat.json");
  socket.onopen = () => { socket.close(); resolve("open"); };
  socket.onclose = (close) => resolve(`closed ${close.code}`);
})
"""


@contextlib.contextmanager
def other_site() -> Iterator[str]:
    """Another origin: a plain HTTP server with an empty page."""

    class Blank(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>elsewhere</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), Blank)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{site.server_address[1]}/"
    finally:
        site.shutdown()
        site.server_close()
        thread.join(WAIT)


def test_a_page_from_another_origin_is_refused_the_websocket(
    make_server: Callable[..., Server], browsing: Browsing
) -> None:
    server = make_server()
    ws_url = f"ws://127.0.0.1:{server.listener('web').port}/ws"
    own = browsing.page(page_url(server))
    assert own.evaluate(PROBE, ws_url) == "open"
    with other_site() as elsewhere:
        foreign = browsing.page(elsewhere, tolerate=("WebSocket connection",))
        assert foreign.evaluate(PROBE, ws_url) == "closed 1006"
        # Let in when the operator names that origin.
        allowing = make_server(web_origin=[elsewhere.rstrip("/")])
        allowed_url = f"ws://127.0.0.1:{allowing.listener('web').port}/ws"
        assert foreign.evaluate(PROBE, allowed_url) == "open"


# -- accounts ------------------------------------------------------------------------------------


def test_register_then_log_in_and_refusals_on_the_login_form(
    server: Server, browsing: Browsing
) -> None:
    first = browsing.page(page_url(server))
    log_in(first, "olga", "a long passphrase", register=True)
    expect(first.locator("#messages li.info", has_text="You are logged in as olga")).to_have_count(
        1
    )
    # A name in use, and a wrong password: the form says why and stays.
    second = browsing.page(page_url(server))
    second.fill("#name", "olga")
    second.click("#login button[type=submit]")
    expect(second.locator("#login-error")).not_to_be_empty()
    expect(second.locator("#login")).to_be_visible()
    type_line(first, "/quit")
    expect(first.locator("#login")).to_be_visible()
    second.fill("#name", "olga")
    second.fill("#password", "not the passphrase")
    second.click("#login button[type=submit]")
    expect(second.locator("#login-error")).to_contain_text("password")
    second.fill("#password", "a long passphrase")
    second.click("#login button[type=submit]")
    expect(second.locator("#status")).to_have_text("connected as olga")
    expect(second.locator("#messages li.info", has_text="You are logged in as olga")).to_have_count(
        1
    )


# -- the page's modules, in the browser ----------------------------------------------------------


def test_the_pages_modules(server: Server, browsing: Browsing) -> None:
    page = browsing.page(page_url(server))
    results = page.evaluate(
        """async () => {
          const { parseLine } = await import("./commands.js");
          const { safeHref } = await import("./links.js");
          const { mentions } = await import("./render.js");
          const { backoffDelay } = await import("./connection.js");
          const room = { kind: "room", name: "dev" };
          const peer = { kind: "private", name: "bob" };
          return {
            say: parseLine("hello", room),
            slash: parseLine("//etc/passwd", room),
            me: parseLine("/me waves", peer),
            join: parseLine("/join #Dev", room),
            kick: parseLine("/kick #ops bob too loud", room),
            kickHere: parseLine("/kick bob", room),
            topic: parseLine("/topic #dev new topic", peer),
            noRoom: parseLine("/who", peer),
            msg: parseLine("/msg carol hi there", room),
            unknown: parseLine("/frob", room),
            hrefs: ["javascript:alert(1)", "data:text/html,x", "https://a.example/x", "ftp://f"]
              .map(safeHref),
            mentions: [
              mentions("hey alice!", "alice"), mentions("ALICE: look", "alice"),
              mentions("malice aforethought", "alice"), mentions("alice_b here", "alice"),
              mentions("ping [x]", "[x]"),
            ],
            delays: [1, 2, 3, 4, 10].map((attempt) => backoffDelay(attempt, () => 1)),
            shortest: backoffDelay(1, () => 0),
          };
        }"""
    )
    assert results["say"] == {"say": "hello", "action": False}
    assert results["slash"] == {"say": "/etc/passwd", "action": False}
    assert results["me"] == {"say": "waves", "action": True}
    assert results["join"] == {"request": {"type": "join", "room": "Dev"}}
    assert results["kick"] == {
        "request": {"type": "kick", "room": "ops", "name": "bob", "reason": "too loud"}
    }
    assert results["kickHere"] == {"request": {"type": "kick", "room": "dev", "name": "bob"}}
    assert results["topic"] == {"request": {"type": "topic", "room": "dev", "topic": "new topic"}}
    assert "error" in results["noRoom"]
    assert results["msg"] == {"open": "carol", "say": "hi there"}
    assert results["unknown"] == {"error": "unknown command /frob; /help lists them"}
    assert results["hrefs"] == [None, None, "https://a.example/x", None]
    assert results["mentions"] == [True, True, False, False, True]
    assert results["delays"] == [1000, 2000, 4000, 8000, 30000]
    assert results["shortest"] == 800


def test_light_and_dark_follow_the_system(server: Server, browsing: Browsing) -> None:
    backgrounds = {}
    for scheme in ("light", "dark"):
        page = browsing.page(page_url(server), color_scheme=scheme)
        backgrounds[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert backgrounds == {"light": "rgb(253, 253, 253)", "dark": "rgb(23, 23, 26)"}
