"""METADATA (IRCv3 draft/metadata-3): the hub's metadata rule (core/metadata.py) on IRC.

    METADATA <target> GET <key>...     a `metadata` batch: 761 per set key, 766 per unset one
    METADATA <target> LIST             a `metadata` batch of 761
    METADATA <target> SET <key> [:v]   761 (set) or 766 (unset)
    METADATA <target> CLEAR            a `metadata` batch of 766, one per key cleared
    METADATA * SUB|UNSUB <key>...      770 / 771 with the keys
    METADATA * SUBS                    772 with the keys subscribed to
    METADATA <target> SYNC             a `metadata` batch of 761: the subscribed keys of the
                                       target (and of each member, for a channel)

`<target>` is `*` (yourself), a nick or a channel. Refusals are standard replies: `FAIL
METADATA INVALID_TARGET`, `KEY_NO_PERMISSION`, `INVALID_KEY`, `INVALID_VALUE`,
`LIMIT_REACHED`, `TOO_MANY_SUBS`, `SUBCOMMAND_INVALID`. Subscribers sharing a channel are
told of changes as `761 * <target> <key> * :<value>` (`766` when unset), and a client joining
a channel is sent the subscribed keys of the channel and its members. Before registration
(`before-connect`) a client may set its own metadata and subscriptions; they are applied
when it registers, and the client then gets its metadata in a `metadata` batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from threadchat.core import metadata
from threadchat.core.hub import HubError
from threadchat.protocols.irc.wire import Message, Numeric, channel_to_room

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession

CAPABILITY = "draft/metadata-3"
CAPABILITY_VALUE = (
    f"before-connect,max-subs={metadata.MAX_SUBS},max-keys={metadata.MAX_KEYS},"
    f"max-value-bytes={metadata.MAX_VALUE_BYTES}"
)
BATCH_TYPE = "metadata"

RPL_WHOISKEYVALUE = "760"
RPL_KEYVALUE = "761"
RPL_KEYNOTSET = "766"
RPL_METADATASUBOK = "770"
RPL_METADATAUNSUBOK = "771"
RPL_METADATASUBS = "772"

# Keys per 770/771/772 line: far below 512 bytes with the longest keys.
_KEYS_PER_LINE = 6
_batch_ids = itertools.count(1)


@dataclass(slots=True)
class Pending:
    """What a client set before registering (before-connect), applied when it registers."""

    values: dict[str, str] = field(default_factory=dict)
    subs: list[str] = field(default_factory=list)


def on_metadata(session: IrcSession, message: Message) -> None:
    target, sub = message.params[0], message.params[1].upper()
    args = message.params[2:]
    if sub in ("GET", "SET", "SUB", "UNSUB") and not args:
        session.error(Numeric.ERR_NEEDMOREPARAMS, "METADATA")
        return
    if sub in ("SUB", "UNSUB", "SUBS"):
        _subscriptions(session, sub, args)
    elif sub not in ("GET", "LIST", "SET", "CLEAR", "SYNC"):
        session.fail("METADATA", "SUBCOMMAND_INVALID", _safe(sub), "Unknown METADATA subcommand")
    elif session.user is None:
        _before_connect(session, target, sub, args)
    else:
        try:
            _registered(session, target, sub, args)
        except HubError as problem:
            key = args[0] if sub == "SET" else "*"
            _refused(session, problem, target, key)


def _safe(param: str) -> str:
    """A client's word echoed in a middle parameter: `*` when it could not be one."""
    return "*" if not param or " " in param or param.startswith(":") else param


def _refused(session: IrcSession, problem: HubError, target: str, key: str) -> None:
    target, key = _safe(target), _safe(key)
    if problem.code in ("no_such_room", "no_such_nick", "invalid_room"):
        session.fail("METADATA", "INVALID_TARGET", target, "Invalid metadata target")
    elif problem.code in ("not_in_room", "not_privileged", "not_operator"):
        session.fail("METADATA", "KEY_NO_PERMISSION", target, key, problem.message)
    elif problem.code == "invalid_key":
        session.fail("METADATA", "INVALID_KEY", key, problem.message)
    elif problem.code == "invalid_value":
        session.fail("METADATA", "INVALID_VALUE", key, problem.message)
    elif problem.code == "limit_reached":
        session.fail("METADATA", "LIMIT_REACHED", target, problem.message)
    else:
        session.fail("METADATA", "INVALID_PARAMS", target, problem.message)


def _holder(target: str) -> dict[str, str | None]:
    """The hub keywords naming `target`: a channel's room, a nick, or yourself (`*`)."""
    if target == "*":
        return {}
    if target.startswith("#"):
        room = channel_to_room(target)
        if room is None:
            raise HubError("invalid_room", target)
        return {"room": room}
    return {"nick": target}


def _shown(name: str, keywords: dict[str, str | None]) -> str:
    return "#" + name if "room" in keywords else name


def _registered(session: IrcSession, target: str, sub: str, args: Sequence[str]) -> None:
    user = session.user
    assert user is not None
    hub = session.hub
    keywords = _holder(target)
    if sub == "SET":
        value = args[1] if len(args) > 1 else None
        name, key = hub.set_metadata(user, args[0], value, **keywords)
        shown = _shown(name, keywords)
        if value:
            session.numeric(RPL_KEYVALUE, shown, key, "*", value)
        else:
            session.numeric(RPL_KEYNOTSET, shown, key, "Key deleted")
    elif sub == "CLEAR":
        name, cleared = hub.clear_metadata(user, **keywords)
        shown = _shown(name, keywords)
        lines = [_reply(session, RPL_KEYNOTSET, shown, key, "Key cleared") for key in cleared]
        send_batch(session, shown, lines)
    elif sub == "SYNC":
        found = hub.sync_metadata(user, **keywords)
        send_values(session, session.nick if target == "*" else target, found)
    else:
        name, values = hub.metadata_of(user, **keywords)
        shown = _shown(name, keywords)
        if sub == "LIST":
            lines = [_reply(session, RPL_KEYVALUE, shown, k, "*", v) for k, v in values.items()]
        else:
            lines = [_get_line(session, shown, given, values) for given in args]
        send_batch(session, shown, lines)


def _get_line(session: IrcSession, shown: str, given: str, values: dict[str, str]) -> Message:
    key = metadata.normal_key(given)
    if key is None:
        return Message(
            "FAIL", ["METADATA", "INVALID_KEY", given, "Invalid key"], session.server_name
        )
    if key not in values:
        return _reply(session, RPL_KEYNOTSET, shown, key, "Key not set")
    return _reply(session, RPL_KEYVALUE, shown, key, "*", values[key])


def _reply(session: IrcSession, numeric: str, *params: str) -> Message:
    return Message(numeric, [session.nick, *params], session.server_name)


def send_batch(session: IrcSession, target: str, lines: Sequence[Message]) -> None:
    """`lines` in a `metadata` batch about `target` (bare without `batch`)."""
    batched = "batch" in session.caps
    ref = f"m{next(_batch_ids)}"
    if batched:
        session.send(Message("BATCH", ["+" + ref, BATCH_TYPE, target], session.server_name))
    for line in lines:
        if batched:
            line.tags["batch"] = ref
        session.send(line)
    if batched:
        session.send(Message("BATCH", ["-" + ref], session.server_name))


def send_values(
    session: IrcSession, target: str, found: Sequence[tuple[str, bool, str, str]]
) -> None:
    """Values of several holders, as `Hub.sync_metadata` gives them, in one batch."""
    lines = [
        _reply(session, RPL_KEYVALUE, "#" + name if is_room else name, key, "*", value)
        for name, is_room, key, value in found
    ]
    send_batch(session, target, lines)


def _subscriptions(session: IrcSession, sub: str, keys: Sequence[str]) -> None:
    user = session.user
    pending = session.pending_metadata
    if sub == "SUBS":
        held = sorted(user.metadata_subs) if user is not None else list(pending.subs)
        for start in range(0, len(held), _KEYS_PER_LINE):
            session.numeric(RPL_METADATASUBS, *held[start : start + _KEYS_PER_LINE])
        return
    if sub == "SUB":
        if user is not None:
            done, invalid, refused = session.hub.subscribe_metadata(user, keys)
        else:
            done, invalid, refused = _pending_subscribe(pending, keys)
        numeric = RPL_METADATASUBOK
    else:
        if user is not None:
            done, invalid = session.hub.unsubscribe_metadata(user, keys)
        else:
            done, invalid = _pending_unsubscribe(pending, keys)
        refused, numeric = None, RPL_METADATAUNSUBOK
    for key in invalid:
        session.fail("METADATA", "INVALID_KEY", _safe(key), "Invalid key")
    if refused is not None:
        session.fail("METADATA", "TOO_MANY_SUBS", _safe(refused), "Too many subscriptions")
    for start in range(0, len(done), _KEYS_PER_LINE):
        session.numeric(numeric, *done[start : start + _KEYS_PER_LINE])


def _pending_subscribe(
    pending: Pending, keys: Sequence[str]
) -> tuple[list[str], list[str], str | None]:
    done: list[str] = []
    invalid: list[str] = []
    for given in keys:
        key = metadata.normal_key(given)
        if key is None:
            invalid.append(given)
            continue
        if key not in pending.subs:
            if len(pending.subs) >= metadata.MAX_SUBS:
                return done, invalid, given
            pending.subs.append(key)
        done.append(key)
    return done, invalid, None


def _pending_unsubscribe(pending: Pending, keys: Sequence[str]) -> tuple[list[str], list[str]]:
    done: list[str] = []
    invalid: list[str] = []
    for given in keys:
        key = metadata.normal_key(given)
        if key is None:
            invalid.append(given)
        else:
            if key in pending.subs:
                pending.subs.remove(key)
            done.append(key)
    return done, invalid


def _before_connect(session: IrcSession, target: str, sub: str, args: Sequence[str]) -> None:
    """Before registration a client may only touch its own metadata, kept in the session
    until it registers; the hub's rules on keys and values apply at once."""
    pending = session.pending_metadata
    if target != "*":
        session.fail(
            "METADATA",
            "KEY_NO_PERMISSION",
            _safe(target),
            "*",
            "Only your own metadata (*) may be changed before registration",
        )
        return
    if sub == "SET":
        try:
            key = metadata.check_key(args[0])
            value = args[1] if len(args) > 1 else ""
            if value:
                metadata.check_value(value)
                if key not in pending.values and len(pending.values) >= metadata.MAX_KEYS:
                    raise HubError("limit_reached", f"at most {metadata.MAX_KEYS} keys")
        except HubError as problem:
            _refused(session, problem, "*", args[0])
            return
        if value:
            pending.values[key] = value
            session.numeric(RPL_KEYVALUE, "*", key, "*", value)
        else:
            pending.values.pop(key, None)
            session.numeric(RPL_KEYNOTSET, "*", key, "Key deleted")
    elif sub == "CLEAR":
        cleared, pending.values = list(pending.values), {}
        send_batch(
            session, "*", [_reply(session, RPL_KEYNOTSET, "*", k, "Key cleared") for k in cleared]
        )
    elif sub == "LIST":
        values = pending.values
        send_batch(
            session, "*", [_reply(session, RPL_KEYVALUE, "*", k, "*", v) for k, v in values.items()]
        )
    elif sub == "GET":
        send_batch(session, "*", [_get_line(session, "*", given, pending.values) for given in args])
    else:
        send_batch(session, "*", [])


def after_registration(session: IrcSession) -> None:
    """Apply what was set before registering, then (with the capability) send the client its
    own metadata in a `metadata` batch, as the specification asks on connecting."""
    user = session.user
    assert user is not None
    pending = session.pending_metadata
    if pending.subs:
        session.hub.subscribe_metadata(user, pending.subs)
    for key, value in pending.values.items():
        try:
            session.hub.set_metadata(user, key, value)
        except HubError as problem:
            _refused(session, problem, "*", key)
    session.pending_metadata = Pending()
    if CAPABILITY in session.caps:
        _, values = session.hub.metadata_of(user)
        lines = [_reply(session, RPL_KEYVALUE, user.nick, k, "*", v) for k, v in values.items()]
        send_batch(session, user.nick, lines)


def on_join(session: IrcSession, room: str) -> None:
    """A client with the capability and subscriptions joining a channel gets the channel's
    values and its members' for the keys it subscribed to."""
    user = session.user
    if CAPABILITY not in session.caps or user is None or not user.metadata_subs:
        return
    try:
        found = session.hub.sync_metadata(user, room=room)
    except HubError:
        return  # kicked at once: the client was told
    if found:
        send_values(session, "#" + room, found)


def whois_lines(session: IrcSession, nick: str) -> None:
    """760 RPL_WHOISKEYVALUE for each key of `nick`, to clients with the capability."""
    if CAPABILITY not in session.caps or session.user is None:
        return
    try:
        name, values = session.hub.metadata_of(session.user, nick=nick)
    except HubError:
        return
    for key, value in values.items():
        session.numeric(RPL_WHOISKEYVALUE, name, key, "*", value)
