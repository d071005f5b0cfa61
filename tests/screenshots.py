"""The page's screenshots in docs/images/ (README.md, docs/architecture.md): `make screenshots`.

For each picture a real server, a few users (two pages, three nc users) and a short
conversation, then the page of one of them in chromium: desktop and phone width, light and
dark; and the search panel (desktop and phone).
"""

import os
import re
import sys
import tempfile
from pathlib import Path

from conftest import LineClient
from playwright.sync_api import Browser, expect, sync_playwright
from test_page import CHROMIUM, MS, log_in, page_url, sidebar_button, type_line

from threadchat.app.server import Server
from threadchat.config import Config

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
SHOTS = (
    ("desktop", {"width": 1100, "height": 640}, "light"),
    ("desktop-dark", {"width": 1100, "height": 640}, "dark"),
    ("phone", {"width": 390, "height": 760}, "light"),
)


def nc(server: Server, name: str, *lines: str) -> LineClient:
    client = LineClient(server.listener("line").port)
    client.send(name)
    client.expect("--- in lobby:")
    client.send(*lines)
    return client


def shoot(browser: Browser, name: str, viewport: dict[str, int], scheme: str) -> None:
    server = Server(Config(flood_rate=0, data_dir=tempfile.mkdtemp()), ephemeral_ports=True)
    server.start()
    users: list[LineClient] = []
    try:
        carol = nc(server, "carol", "/join dev", "/topic the web page: issue 13")
        carol.send("morning! the WebSocket port is merged")
        carol.send("next: the page itself, no framework, no build step")
        dave = nc(server, "dave", "/join dev", "/me makes coffee")
        erin = nc(server, "erin")
        users += [carol, dave, erin]
        carol.expect("* dave makes coffee")

        bob_context = browser.new_context()
        bob = bob_context.new_page()
        bob.set_default_timeout(MS)
        bob.goto(page_url(server))
        log_in(bob, "bob")
        type_line(bob, "/join dev")
        expect(bob.locator("#title")).to_have_text("#dev")

        context = browser.new_context(viewport=viewport, color_scheme=scheme)  # type: ignore[arg-type]
        context.set_default_timeout(MS)
        page = context.new_page()
        page.goto(page_url(server))
        log_in(page, "alice")
        type_line(page, "/join dev")
        expect(page.locator("#title")).to_have_text("#dev")
        type_line(bob, "welcome alice! the design notes: https://example.com/threadchat/page")
        expect(page.locator("#messages li.message").last).to_contain_text("design notes")
        type_line(page, "thanks! reading them now")
        # Issue 14: a reaction and a reply from bob's page, an edit (the up arrow) on alice's.
        merged = bob.locator("#messages li.message", has_text="the WebSocket port is merged")
        merged.hover()
        merged.locator("button", has_text="React").click()
        bob.locator(".reaction-picker button", has_text="🎉").click()
        itself = bob.locator("#messages li.message", has_text="no framework, no build step")
        itself.hover()
        itself.locator("button", has_text="Reply").click()
        type_line(bob, "and replies, reactions and edits\nShift+Enter for a second line")
        own = page.locator("#messages li.message", has_text="reading them now")
        expect(own).to_have_attribute("data-id", re.compile(r"^\d+$"))
        page.press("#text", "ArrowUp")
        type_line(page, "thanks! reading them tonight")
        expect(page.locator("#messages .edited")).to_have_count(1)
        expect(page.locator("#messages .reaction")).to_have_count(1)
        carol.send("/msg alice can you look at the phone layout later?")
        erin.send("anyone for lunch?")
        expect(sidebar_button(page, "#lobby")).to_contain_text("1")
        expect(sidebar_button(page, "@carol")).to_contain_text("1")
        type_line(bob, "alice: links open in a new tab, and <b>markup</b> stays text")
        expect(page.locator("#messages li.mention")).to_have_count(2)
        bob.locator("#text").press_sequentially("one more")
        expect(page.locator("#typing")).to_have_text("bob is typing…")
        page.locator("#text").fill("looks good to me")
        page.screenshot(path=str(IMAGES / f"web-{name}.png"))
        if name in ("desktop", "phone"):
            page.locator("#text").fill("")
            page.locator("#toggle-search").click()
            page.fill("#search-text", "page*")
            page.press("#search-text", "Enter")
            expect(page.locator("#search-results button.result")).to_have_count(2)
            suffix = "-phone" if name == "phone" else ""
            page.screenshot(path=str(IMAGES / f"web-search{suffix}.png"))
            page.locator("#toggle-search").click()
        if name == "phone":
            page.locator("#toggle-sidebar").click()
            expect(page.locator("#sidebar")).to_be_visible()
            page.screenshot(path=str(IMAGES / "web-phone-rooms.png"))
        context.close()
        bob_context.close()
    finally:
        for user in users:
            user.close()
        server.stop()


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=args)
        for name, viewport, scheme in SHOTS:
            shoot(browser, name, viewport, scheme)
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
