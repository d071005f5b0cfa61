"""Accounts: registration, login with rate limits, and who may use a registered name.

`AccountService` is protocol-neutral, the hub's `core.ports.Accounts`: the native session uses
it for /register, /login, /password and `hello` with a password; IRC uses `authenticate` for
SASL PLAIN, PASS and NickServ IDENTIFY, and the hub calls `check_name` whenever someone takes a
nick. Refusals are `core.errors.AuthError`.

Enforcement of registered names:
- "strict" (default): a guest cannot take a registered name; the refusal says how to log in.
- "grace": the guest gets the name, and is renamed to GuestNNNNN after GRACE_PERIOD seconds
  unless they log in to that account meanwhile (`tick`, driven by the server's housekeeper).

Passwords never appear in a log line, an error or a repr: requests keep them out of their
reprs, and nothing here formats one.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from threadchat.core import addresses, names
from threadchat.core.errors import AuthError, HubError, StoreError
from threadchat.core.hub import User
from threadchat.core.modes import UserFlag
from threadchat.store.base import AccountExistsError, Store
from threadchat.store.passwords import MAX_PASSWORD_BYTES

if TYPE_CHECKING:
    from threadchat.core.hub import Hub

log = logging.getLogger(__name__)

STRICT = "strict"
GRACE = "grace"
ENFORCEMENT_MODES = (STRICT, GRACE)

# Shortest password accepted at registration: below this, online guessing within the rate
# limits below becomes realistic.
MIN_PASSWORD = 8
# How long a guest may hold a registered name in grace mode before being renamed.
GRACE_PERIOD = 30.0
# Failed logins counted over this window...
FAIL_WINDOW = 300.0
# ...at most this many per account name from one address: slows guessing one account to a
# crawl (5 guesses per 5 minutes per address) while a person who mistypes a few times is not
# held up for long. Counted per (account, address), not per account: counted per account, an
# attacker anywhere could lock the real owner out of their own account by failing 5 times.
MAX_FAILS_PER_ACCOUNT = 5
# ...and at most this many per client address: one address guessing many accounts. Higher,
# because several people may share an address (NAT, a university).
MAX_FAILS_PER_ADDRESS = 20
# Keys (account names + addresses) tracked at most; beyond that the oldest are forgotten, so
# an attacker cycling through names cannot grow the table without bound.
MAX_TRACKED = 10_000

BAD_LOGIN = "invalid account name or password"


class _Failures:
    """Failed attempts per key within FAIL_WINDOW. Thread-safe."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def count(self, key: str) -> tuple[int, float]:
        """Failures within the window, and seconds until the oldest of them expires."""
        now = self._clock()
        with self._lock:
            times = self._seen.get(key)
            if not times:
                return 0, 0.0
            while times and now - times[0] > FAIL_WINDOW:
                times.popleft()
            if not times:
                del self._seen[key]
                return 0, 0.0
            return len(times), FAIL_WINDOW - (now - times[0])

    def add(self, key: str) -> None:
        with self._lock:
            times = self._seen.pop(key, None) or collections.deque()
            times.append(self._clock())
            self._seen[key] = times
            while len(self._seen) > MAX_TRACKED:
                self._seen.popitem(last=False)

    def clear(self, key: str) -> None:
        with self._lock:
            self._seen.pop(key, None)


def check_password_shape(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AuthError("weak_password", f"a password has at least {MIN_PASSWORD} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise AuthError("bad_request", f"a password has at most {MAX_PASSWORD_BYTES} bytes")


class AccountService:
    def __init__(
        self,
        store: Store,
        *,
        enforcement: str = STRICT,
        admins: list[str] | tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if enforcement not in ENFORCEMENT_MODES:
            raise ValueError(f"nick enforcement must be one of {', '.join(ENFORCEMENT_MODES)}")
        self.store = store
        self.enforcement = enforcement
        self.admins = frozenset(names.fold(a) for a in admins)
        self._clock = clock
        self._failures = _Failures(clock)
        # Grace mode: folded nick -> when its guest holder is renamed unless logged in.
        self._grace: dict[str, float] = {}
        self._grace_lock = threading.Lock()

    # -- the API every protocol uses (core.ports.Accounts) ----------------------------------

    @property
    def grace_period(self) -> float:
        return GRACE_PERIOD

    def authenticate(self, name: str, password: str, host: str) -> str:
        """Check a login; return the account name (as given) or raise AuthError.

        Rate-limited per account name and per client address. The error is the same whether
        or not the account exists, and a missing account costs the same time as a wrong
        password (the store burns a hash), so neither reveals which names are registered.
        """
        # Per host, not per connection: a client's ports (an IPv6 client's /64) share a budget.
        where = addresses.host_key(host)
        account_key, host_key = f"a:{names.fold(name)}@{where}", "h:" + where
        for key, most in ((account_key, MAX_FAILS_PER_ACCOUNT), (host_key, MAX_FAILS_PER_ADDRESS)):
            count, wait = self._failures.count(key)
            if count >= most:
                raise AuthError(
                    "rate_limited", f"too many failed logins; try again in {int(wait) + 1} s"
                )
        try:
            ok = (
                bool(name)
                and not names.nick_error(name)
                and len(password.encode()) <= MAX_PASSWORD_BYTES
                and self.store.verify_password(name, password)
            )
        except StoreError as problem:
            log.error("login check failed: %s", problem)
            raise AuthError("auth_failed", "logins are not possible right now") from None
        if not ok:
            self._failures.add(account_key)
            self._failures.add(host_key)
            # What was typed as a name may be a password typed in the wrong field: it is
            # logged only when it names an account. Asked on every failure, so the answer
            # costs the same time whichever it is.
            if self.is_registered(name):
                log.info("failed login for account %s from %s", name, host)
            else:
                log.info("failed login for a name that is no account, from %s", host)
            raise AuthError("bad_login", BAD_LOGIN)
        self._failures.clear(account_key)
        return name

    def register(self, name: str, password: str) -> None:
        """Create the account `name`; raises AuthError (taken, weak password, store failure)."""
        check_password_shape(password)
        try:
            self.store.create_account(name, password)
        except AccountExistsError:
            raise AuthError("name_registered", f"{name} is already registered") from None
        except StoreError as problem:
            log.error("registration failed: %s", problem)
            raise AuthError("auth_failed", "registration is not possible right now") from None
        log.info("account %s registered", name)

    def change_password(self, account: str, old: str, new: str, host: str) -> None:
        check_password_shape(new)
        self.authenticate(account, old, host)  # rate limits apply to guessing OLD too
        try:
            changed = self.store.change_password(account, old, new)
        except StoreError as problem:
            log.error("password change failed: %s", problem)
            raise AuthError("auth_failed", "the password cannot be changed right now") from None
        if not changed:
            raise AuthError("bad_login", BAD_LOGIN)

    def is_registered(self, name: str) -> bool:
        try:
            return self.store.account_exists(name)
        except StoreError as problem:
            log.error("account lookup failed: %s", problem)
            return False

    def is_admin(self, account: str | None) -> bool:
        return account is not None and names.fold(account) in self.admins

    def check_name(self, nick: str, account: str | None) -> None:
        """May someone logged in to `account` (None: a guest) take `nick`? Raises HubError.

        Called by the hub before a registration or nick change. In grace mode a guest may,
        and is renamed after GRACE_PERIOD unless they log in.
        """
        if account is not None and names.fold(account) == names.fold(nick):
            return
        if not self.is_registered(nick):
            return
        if self.enforcement == GRACE:
            with self._grace_lock:
                self._grace[names.fold(nick)] = self._clock() + GRACE_PERIOD
            return
        raise HubError(
            "name_registered",
            f"the name {nick} is registered. If it is yours, log in: give `{nick} PASSWORD` "
            f"as your first line, or /login {nick} PASSWORD (JSON: hello with a password; "
            "IRC: SASL or PASS). Otherwise choose another name.",
        )

    def in_grace(self, nick: str) -> bool:
        with self._grace_lock:
            return names.fold(nick) in self._grace

    def logged_in(self, hub: Hub, user: User, account: str) -> None:
        """Mark `user` as logged in to `account` (admins get server operator status)."""
        hub.set_account(user, account)  # those who see the user are told (account-notify)
        with hub.locked():
            if self.is_admin(account):
                user.flags.add(UserFlag.SERVER_OPERATOR)
        with self._grace_lock:
            self._grace.pop(names.fold(account), None)
        if hub.moderation is not None:
            hub.moderation.logged_in(user)

    def tick(self, hub: Hub) -> None:
        """Rename guests whose grace period ran out (called about once a second)."""
        now = self._clock()
        with self._grace_lock:
            due = [nick for nick, deadline in self._grace.items() if deadline <= now]
            for nick in due:
                del self._grace[nick]
        for nick in due:
            user = hub.find_user(nick)
            if user is None or (user.account and names.fold(user.account) == nick):
                continue
            for _ in range(5):
                guest = f"Guest{secrets.randbelow(100000):05d}"
                try:
                    hub.change_nick(user, guest)
                except HubError:
                    continue
                log.info("%s did not log in within %gs, renamed to %s", nick, GRACE_PERIOD, guest)
                break
