"""Accounts for IRC clients: SASL PLAIN, PASS, and NickServ-style IDENTIFY.

Glue between the IRC session (`session.py`) and `accounts.AccountService`, kept apart so the
rest of IRC only needs a few hooks:

- SASL PLAIN (IRCv3 `sasl` capability, offered when the server has accounts): during CAP
  negotiation `AUTHENTICATE PLAIN`, then `AUTHENTICATE <base64 of authzid NUL authcid NUL
  password>`; 900 + 903 on success, 904 on failure. The account is applied at registration.
- PASS: when the server has no connection password (`irc_password`), a PASS given before
  registration is the password of the account named like the requested nick.
- `/msg NickServ IDENTIFY [account] password` after registration.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from threadchat.core import names
from threadchat.core.errors import AuthError
from threadchat.protocols.irc import devices as irc_devices
from threadchat.protocols.irc.wire import Message, Numeric

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession

log = logging.getLogger(__name__)

# The one SASL mechanism offered: PLAIN needs TLS to be safe on an open network, like PASS.
MECHANISMS = "PLAIN"
# IRCv3: SASL payloads come in 400-byte base64 chunks; a PLAIN message needs at most a few
# (two names and a password), so more than this is an abuse.
SASL_CHUNK = 400
MAX_SASL_PAYLOAD = 1200
NICKSERV = "nickserv"


@dataclass(slots=True)
class SaslState:
    """An AUTHENTICATE exchange under way: the mechanism chosen, the payload so far."""

    mechanism: str | None = None
    buffer: str = ""


def _numeric(conn: IrcSession, numeric: Numeric, *params: str) -> None:
    conn.error(numeric, *params)  # with the numeric's standard text


def on_authenticate(conn: IrcSession, message: Message) -> None:
    """The AUTHENTICATE command: before registration, or after it while not logged in (the
    login then applies at once, as IDENTIFY's does)."""
    accounts = conn.hub.accounts
    state = conn.sasl
    if state is None:
        state = conn.sasl = SaslState()
    if accounts is None:
        _numeric(conn, Numeric.ERR_SASLFAIL)
        return
    if conn.sasl_account is not None or (conn.user is not None and conn.user.account):
        _numeric(conn, Numeric.ERR_SASLALREADY)
        return
    argument = message.params[0] if message.params else ""
    if argument == "*":
        state.mechanism, state.buffer = None, ""
        _numeric(conn, Numeric.ERR_SASLABORTED)
        return
    if state.mechanism is None:
        if argument.upper() != MECHANISMS:
            conn.numeric(Numeric.RPL_SASLMECHS, MECHANISMS, "are the available SASL mechanisms")
            _numeric(conn, Numeric.ERR_SASLFAIL)
            return
        state.mechanism = MECHANISMS
        conn.send(Message("AUTHENTICATE", ["+"]))
        return
    if argument != "+":
        state.buffer += argument
    if len(state.buffer) > MAX_SASL_PAYLOAD:
        state.mechanism, state.buffer = None, ""
        _numeric(conn, Numeric.ERR_SASLTOOLONG)
        return
    if len(argument) == SASL_CHUNK:
        return  # more chunks follow
    payload, state.buffer, state.mechanism = state.buffer, "", None
    try:
        _authzid, authcid, password = base64.b64decode(payload, validate=True).split(b"\0")
        name, secret = authcid.decode(), password.decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        _numeric(conn, Numeric.ERR_SASLFAIL)
        return
    try:
        account = accounts.authenticate(name, secret, conn.host)
    except AuthError as problem:
        log.info("%s: SASL failed (%s)", conn.label, problem.code)
        _numeric(conn, Numeric.ERR_SASLFAIL)
        return
    if conn.user is None:
        conn.sasl_account = account
    elif not irc_devices.continue_as_person(conn, account):
        accounts.logged_in(conn.hub, conn.user, account)
    conn.send(logged_in_reply(conn, account))
    _numeric(conn, Numeric.RPL_SASLSUCCESS)


def logged_in_reply(conn: IrcSession, account: str) -> Message:
    """900 RPL_LOGGEDIN `<nick> <nick>!<user>@<host> <account> :...`. A registered client's
    mask is the one others see it by; before registration its username is not settled yet
    (it gets the `~` and the length limit then), so that part is `*`."""
    if conn.user is not None:
        target, mask = conn.user.nick, conn.mask
    else:
        target = conn.reg.nick or "*"
        mask = f"{target}!*@{conn.host}"
    return Message(
        Numeric.RPL_LOGGEDIN.value,
        [target, mask, account, f"You are now logged in as {account}"],
        conn.server_name,
    )


def account_for_registration(conn: IrcSession, nick: str) -> str | None:
    """The account a registering IRC client is logged in to: by SASL, or by PASS when the
    server has no connection password. None: a guest (also after a wrong PASS, with a
    NOTICE; the registered-name check then decides whether the nick is allowed)."""
    if conn.sasl_account is not None:
        return conn.sasl_account
    accounts = conn.hub.accounts
    password = conn.reg.password
    if accounts is None or password is None or conn.config.irc_password is not None:
        return None
    try:
        return accounts.authenticate(nick, password, conn.host)
    except AuthError as problem:
        conn.notice(f"*** PASS did not log you in: {problem.message}")
        return None


def account_to_come(conn: IrcSession, nick: str) -> str | None:
    """The account a registering client may be logged in to, as far as known at NICK:
    SASL's; or the nick itself while it may still log in to it (PASS given, or capability
    negotiation under way: clients send NICK before AUTHENTICATE). Only a hope: the nick
    is checked again when the client registers (`Hub.sign_on`)."""
    if conn.sasl_account is not None:
        return conn.sasl_account
    if conn.reg.password is not None and conn.config.irc_password is None:
        return nick
    if conn.reg.negotiating and conn.hub.accounts is not None:
        return nick
    return None


def after_registration(conn: IrcSession) -> None:
    """Mark the new user as logged in to the account found at registration."""
    account = conn.registered_account
    accounts = conn.hub.accounts
    if account is not None and accounts is not None and conn.user is not None:
        accounts.logged_in(conn.hub, conn.user, account)


def is_nickserv(target: str) -> bool:
    return names.fold(target) == NICKSERV


def nickserv(conn: IrcSession, text: str) -> None:
    """`IDENTIFY [account] password` (also `LOGIN`); anything else gets a short help."""
    accounts = conn.hub.accounts
    user = conn.user
    assert user is not None
    words = text.split()

    def reply(line: str) -> None:
        conn.send(Message("NOTICE", [user.nick, line], "NickServ!NickServ@services"))

    if accounts is None:
        reply("This server has no accounts.")
        return
    if irc_devices.nickserv_set(conn, words, reply):
        return
    if not words or words[0].upper() not in ("IDENTIFY", "LOGIN") or len(words) not in (2, 3):
        reply("Usage: IDENTIFY [account] password (or log in with SASL PLAIN or PASS)")
        return
    name = words[1] if len(words) == 3 else user.nick
    try:
        account = accounts.authenticate(name, words[-1], conn.host)
    except AuthError as problem:
        reply(problem.message)
        return
    if irc_devices.continue_as_person(conn, account):
        reply(f"You are now identified for {account}, as on your other devices.")
        return
    accounts.logged_in(conn.hub, user, account)
    reply(f"You are now identified for {account}.")


# -- draft/account-registration: REGISTER and VERIFY ------------------------------------------

REGISTRATION_CAPABILITY = "draft/account-registration"
# Codes of the account service's refusals as the spec's FAIL REGISTER codes.
_REGISTER_FAILURES = {
    "name_registered": "ACCOUNT_EXISTS",
    "weak_password": "WEAK_PASSWORD",
    "bad_request": "UNACCEPTABLE_PASSWORD",
    "auth_failed": "TEMPORARILY_UNAVAILABLE",
}


def registration_capability_value(before_connect: bool) -> str | None:
    """The capability's value: accounts are named like the nick (no `custom-account-name`)
    and need no email (no `email-required`); `before-connect` unless a connection password
    must come first (REGISTER must not get around it)."""
    return "before-connect" if before_connect else None


def on_register(conn: IrcSession, message: Message) -> None:
    """`REGISTER <account> {<email> | *} <password>`: create the account named like the
    current nick and log in to it, as SASL would. There is no email verification: an
    address given is neither checked nor kept, and VERIFY has nothing to complete."""
    accounts = conn.hub.accounts
    requested, _email, password = message.params[:3]
    nick = conn.user.nick if conn.user is not None else conn.reg.nick
    if accounts is None:
        conn.fail("REGISTER", "TEMPORARILY_UNAVAILABLE", requested, "This server has no accounts")
        return
    if conn.user is None and conn.config.irc_password is not None:
        conn.fail(
            "REGISTER", "COMPLETE_CONNECTION_REQUIRED", requested, "Register after connecting"
        )
        return
    if nick is None:
        taken = conn.reg.last_nick
        if taken is not None and requested in ("*", taken):
            # Its nick was refused as someone else's: registering that name would take it
            # from under them.
            conn.fail("REGISTER", "ACCOUNT_EXISTS", taken, f"{taken} is in use")
        else:
            conn.fail("REGISTER", "NEED_NICK", "*", "Send NICK before REGISTER")
        return
    account = nick if requested == "*" else requested
    if conn.sasl_account is not None or (conn.user is not None and conn.user.account):
        conn.fail("REGISTER", "ALREADY_AUTHENTICATED", account, "You are already logged in")
        return
    if names.fold(account) != names.fold(nick):
        conn.fail(
            "REGISTER", "ACCOUNT_NAME_MUST_BE_NICK", account, "The account is named like your nick"
        )
        return
    try:
        accounts.register(account, password)
    except AuthError as problem:
        code = _REGISTER_FAILURES.get(problem.code, "BAD_ACCOUNT_NAME")
        log.info("%s: REGISTER %s refused (%s)", conn.label, account, problem.code)
        conn.fail("REGISTER", code, account, problem.message)
        return
    log.info("%s: registered the account %s", conn.label, account)
    if conn.user is None:
        conn.sasl_account = account  # applied at registration, like a SASL login
    else:
        accounts.logged_in(conn.hub, conn.user, account)
    conn.send(
        Message(
            "REGISTER",
            ["SUCCESS", account, "Account created (no email verification on this server)"],
            conn.server_name,
        )
    )
    conn.send(logged_in_reply(conn, account))


def on_verify(conn: IrcSession, message: Message) -> None:
    """VERIFY: no registration here waits for a code (REGISTER succeeds or fails at once)."""
    account = message.params[0]
    if conn.sasl_account is not None or (conn.user is not None and conn.user.account):
        conn.fail("VERIFY", "ALREADY_AUTHENTICATED", account, "You are already logged in")
        return
    conn.fail("VERIFY", "INVALID_CODE", account, "No registration here needs verifying")
