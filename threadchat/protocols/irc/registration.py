"""Registration: CAP, PASS, USER and NICK until the client is a hub user, then the welcome.

The sans-I/O state machine of CAP negotiation and the three registration commands is
`wire.Registration`; this module offers it the server's capabilities, checks the nick with the
hub, registers the user (with the account SASL or PASS logged in to, see `sasl.py`) and sends
the welcome burst: 001-004, ISUPPORT, LUSERS and the MOTD.
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from threadchat import __version__
from threadchat.core import live, names
from threadchat.core.errors import HeldElsewhere
from threadchat.core.hub import MAX_BANS, Hub, HubError
from threadchat.protocols.irc import channels as irc_channels
from threadchat.protocols.irc import chathistory as irc_history
from threadchat.protocols.irc import devices as irc_devices
from threadchat.protocols.irc import metadata as irc_metadata
from threadchat.protocols.irc import modes as irc_modes
from threadchat.protocols.irc import monitor as irc_monitor
from threadchat.protocols.irc import sasl as irc_accounts
from threadchat.protocols.irc.limits import (
    AWAYLEN,
    ELIST,
    KEYLEN,
    KICKLEN,
    MAX_CHANNELS,
    MAX_KICK_TARGETS,
    MAX_MODES,
    MAX_TARGETS,
    REALNAME_MAX,
    USERLEN,
)
from threadchat.protocols.irc.replies import HUB_NUMERICS
from threadchat.protocols.irc.wire import (
    CHANNELLEN,
    NICKLEN,
    NUMERIC_TEXT,
    Message,
    Numeric,
    Registration,
    is_valid_nick,
    isupport,
)

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession

log = logging.getLogger(__name__)

VERSION = f"threadchat-{__version__}"
STARTED = time.time()

# Capabilities we offer. `sasl` (PLAIN) is added per connection when the server has accounts
# (sasl.py), `draft/chathistory` when it keeps history (chathistory.py): announcing either
# without it would make clients wait for what never comes.
OFFERED_CAPS: dict[str, str | None] = {
    "cap-notify": None,
    "multi-prefix": None,
    "server-time": None,
    "message-tags": None,
    "echo-message": None,
    "away-notify": None,
    "account-tag": None,
    "extended-join": None,
    "userhost-in-names": None,
    "batch": None,
    "labeled-response": None,
    "account-notify": None,
    # Hosts never change here (no cloaks or vhosts), so no CHGHOST is ever sent; offered
    # so clients know they would be told rather than see a QUIT and a JOIN.
    "chghost": None,
    "setname": None,
    "invite-notify": None,
    "extended-monitor": None,
    "no-implicit-names": None,
    irc_metadata.CAPABILITY: irc_metadata.CAPABILITY_VALUE,
    "draft/channel-rename": None,
    # Issue 14: multiline messages (limits in core/live.py) and deletions (REDACT).
    "draft/multiline": f"max-bytes={live.MULTILINE_MAX_BYTES},max-lines={live.MULTILINE_MAX_LINES}",
    "draft/message-redaction": None,
}

# IRCv3 STS: how long clients that reached us over TLS must keep to TLS (30 days, what
# public networks announce); sent again on each connection, so the policy renews itself.
STS_DURATION = 30 * 24 * 3600

_IDENT_BAD = re.compile(r"[^A-Za-z0-9._-]")


def new_registration(
    hub: Hub,
    server_name: str,
    *,
    open_server: bool = True,
    tls: bool = False,
) -> Registration:
    """The registration state machine, offering what this server can do. `open_server`:
    no connection password is asked (accounts may then be registered before connecting).
    `tls`: the connection is over TLS (with TLS on, every listener is: there is no plain
    port to upgrade from), so STS says to keep using it (a persistence policy)."""
    offered = _offered_caps(open_server, tls, hub.accounts is not None, hub.history is not None)
    return Registration(server_name, offered)


@functools.lru_cache(maxsize=64)
def _offered_caps(
    open_server: bool, tls: bool, accounts: bool, history: bool
) -> dict[str, str | None]:
    """The capabilities offered, one dict per kind of connection shared by all of them
    (`Registration` never changes it in place): a copy per connection was 0.8 KB of each."""
    offered = OFFERED_CAPS
    if tls:
        offered = {**offered, "sts": f"duration={STS_DURATION}"}
    if accounts:
        offered = {
            **offered,
            "sasl": irc_accounts.MECHANISMS,
            irc_accounts.REGISTRATION_CAPABILITY: irc_accounts.registration_capability_value(
                open_server
            ),
        }
    if history:
        offered = {**offered, irc_history.CAPABILITY: None, **irc_devices.offered(True)}
    return dict(offered)


def ident_of(username: str | None) -> str:
    """The username IRC shows: `~` (not verified) and what is safe of the one given.

    Never empty, so a user who has one is an IRC user (see `codec.ident_host`)."""
    return "~" + (_IDENT_BAD.sub("", username or "")[: USERLEN - 1] or "user")


def on_registration(session: IrcSession, message: Message) -> None:
    """CAP, PASS and USER (and NICK before registration)."""
    step = session.reg.handle(message)
    session.send(*step.replies)
    if step.cap_changes:
        session.caps = session.reg.enabled
    if step.nick_to_check:
        account = irc_accounts.account_to_come(session, step.nick_to_check)
        if not session.hub.nick_available(step.nick_to_check, account):
            elsewhere = session.hub.held_elsewhere(step.nick_to_check, account)
            if elsewhere is not None:
                session.notice(f"*** {elsewhere}")
            session.send(*session.reg.reject_nick(step.nick_to_check))
            return
    if step.ready:
        _register(session)


def on_nick(session: IrcSession, message: Message) -> None:
    if session.user is None:
        on_registration(session, message)
        return
    if not message.params or not message.params[0]:
        session.error(Numeric.ERR_NONICKNAMEGIVEN)
        return
    new = message.params[0]
    if not is_valid_nick(new):
        session.error(Numeric.ERR_ERRONEUSNICKNAME, new)
        return
    try:
        session.hub.change_nick(session.user, new)
    except HubError as problem:
        session.hub_error(problem, nick=new)
        return
    session.reg.nick = session.user.nick


def _register(session: IrcSession) -> None:
    config = session.config
    if config.irc_password is not None:
        given = (session.reg.password or "").encode()
        if not hmac.compare_digest(given, config.irc_password.encode()):
            session.error(Numeric.ERR_PASSWDMISMATCH)
            session.close_link("Bad password")
            return
    nick = session.reg.nick
    assert nick is not None
    ident = ident_of(session.reg.username)
    realname = (session.reg.realname or "")[:REALNAME_MAX]
    account = irc_accounts.account_for_registration(session, nick)
    identity = {"account": account} if account is not None else {}
    try:
        # IRC clients build nick lists from JOIN, PART and QUIT: they get them everywhere.
        signed = session.hub.sign_on(
            session.transport,
            nick,
            keeps_member_list=True,
            username=ident,
            realname=realname,
            host=session.host,
            **identity,
        )
    except HubError as problem:
        if problem.code == "name_registered" or isinstance(problem, HeldElsewhere):
            session.notice(f"*** {problem.message}")
        numeric = HUB_NUMERICS.get(problem.code, Numeric.ERR_ERRONEUSNICKNAME)
        session.send(*session.reg.reject_nick(nick, numeric))
        return
    user = signed.user
    session.user = user
    session.registered_account = account
    session.reg.complete(nick)
    if signed.attached:
        # Another device of a person already here: their state is theirs, not this client's.
        count = len(user.connections)
        log.info("%s: attached to %s (irc, %d connections)", session.label, nick, count)
        _welcome(session)
        irc_channels.show_rooms(session)
        if signed.missed_since is not None:
            irc_devices.catch_up(session, session.hub.missed(user, signed.missed_since))
        return
    user.watch_details = "extended-monitor" in session.caps
    irc_accounts.after_registration(session)
    log.info("%s: registered as %s (irc)", session.label, nick)
    _welcome(session)
    irc_metadata.after_registration(session)


def _welcome(session: IrcSession) -> None:
    server_name = session.server_name
    created = datetime.fromtimestamp(STARTED, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    welcome = f"Welcome to the {server_name} IRC network, {session.mask}"
    session.numeric(Numeric.RPL_WELCOME, welcome)
    session.numeric(Numeric.RPL_YOURHOST, f"Your host is {server_name}, running {VERSION}")
    session.numeric(Numeric.RPL_CREATED, f"This server was created {created}")
    session.numeric(
        Numeric.RPL_MYINFO,
        server_name,
        VERSION,
        irc_modes.USER_MODES,
        irc_modes.CHANNEL_MODES,
        irc_modes.CHANNEL_MODES_WITH_PARAMETER,
    )
    send_isupport(session)
    send_lusers(session)
    send_motd(session)


def send_isupport(session: IrcSession) -> None:
    groups = _isupport_groups(
        session.server_name, len(session.nick), session.hub.history is not None
    )
    text = NUMERIC_TEXT[Numeric.RPL_ISUPPORT]
    for group in groups:
        session.numeric(Numeric.RPL_ISUPPORT, *group, text)


@functools.lru_cache(maxsize=256)
def _isupport_groups(
    server_name: str, nick_length: int, history: bool
) -> tuple[tuple[str, ...], ...]:
    """The tokens of each 005 line, the same for every client but for the nick's length (a
    line must fit): packing them checks the line's length once per token, which made this
    the largest part of a registration's CPU (a connect storm of 10,000)."""
    tokens: dict[str, str | None] = {
        "AWAYLEN": str(AWAYLEN),
        "CASEMAPPING": names.CASEMAPPING,
        "CHANLIMIT": f"#:{MAX_CHANNELS}",
        "CHANMODES": irc_modes.CHANMODES,
        "CHANNELLEN": str(CHANNELLEN),
        "CHANTYPES": "#",
        "ELIST": ELIST,
        "EXCEPTS": irc_modes.EXCEPTS,
        "INVEX": irc_modes.INVEX,
        "KEYLEN": str(KEYLEN),
        "KICKLEN": str(KICKLEN),
        "MAXLIST": ",".join(f"{letter}:{MAX_BANS}" for letter in irc_modes.LIST_LETTERS),
        "MAXTARGETS": str(MAX_TARGETS),
        "MODES": str(MAX_MODES),
        "NETWORK": server_name,
        "NICKLEN": str(NICKLEN),
        "PREFIX": irc_modes.PREFIX,
        "TARGMAX": (
            f"PRIVMSG:{MAX_TARGETS},NOTICE:{MAX_TARGETS},JOIN:,PART:,"
            f"KICK:{MAX_KICK_TARGETS},WHOIS:1"
        ),
        "STATUSMSG": "".join(irc_modes.STATUS_PREFIXES.values()),
        "TOPICLEN": str(names.TOPIC_MAX),
        "USERLEN": str(USERLEN),
        "BOT": irc_modes.BOT_LETTER,
        "UTF8ONLY": None,
        "WHOX": None,
        **irc_monitor.ISUPPORT_TOKEN,
    }
    if history:
        tokens.update(irc_history.isupport_tokens())
    # Packed for a stand-in nick of the same length: the same lines as for the real one.
    lines = isupport(server_name, "*" * nick_length, tokens)
    return tuple(tuple(line.params[1:-1]) for line in lines)


def send_lusers(session: IrcSession) -> None:
    counts = session.hub.user_counts()
    users, most = counts.users, counts.max_users
    visible = users - counts.invisible
    unknown = max(0, session.transport.connection_count() - users)
    session.numeric(
        Numeric.RPL_LUSERCLIENT,
        f"There are {visible} users and {counts.invisible} invisible on 1 servers",
    )
    session.numeric(Numeric.RPL_LUSEROP, str(counts.operators), "operator(s) online")
    session.numeric(Numeric.RPL_LUSERUNKNOWN, str(unknown), "unknown connection(s)")
    session.numeric(Numeric.RPL_LUSERCHANNELS, str(counts.rooms), "channels formed")
    session.numeric(Numeric.RPL_LUSERME, f"I have {users} clients and 0 servers")
    # One server: its local users are all the network's.
    session.numeric(
        Numeric.RPL_LOCALUSERS, str(users), str(most), f"Current local users {users}, max {most}"
    )
    session.numeric(
        Numeric.RPL_GLOBALUSERS, str(users), str(most), f"Current global users {users}, max {most}"
    )


def send_motd(session: IrcSession) -> None:
    text = session.config.motd
    if not text:
        session.error(Numeric.ERR_NOMOTD)
        return
    session.numeric(Numeric.RPL_MOTDSTART, f"- {session.server_name} Message of the day - ")
    for line in text.splitlines():
        session.numeric(Numeric.RPL_MOTD, f"- {line}")
    session.error(Numeric.RPL_ENDOFMOTD)
