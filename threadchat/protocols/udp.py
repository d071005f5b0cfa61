"""Sans-I/O protocol for threadchat over UDP: envelope codec, reliable channel, endpoints.

Nothing here touches a socket, a thread or the wall clock: every method that depends on time
takes ``now`` (seconds, any monotonic origin).  Transports feed received bytes in and carry out
the returned actions, and call ``poll(now)`` no later than ``next_deadline()``.  Timers compare
``now >= start + interval``, the same sum ``next_deadline`` reports, so polling exactly at the
deadline always does the work (``now - start >= interval`` can miss by one ulp).

None of the classes is thread-safe; a transport serialises calls with one lock per endpoint.

Envelope (one per datagram, compact UTF-8 JSON object, at most ``MAX_DATAGRAM_SIZE`` bytes)::

    {"v": 1, "k": KIND, ...}

    hello      client -> server  {"v","k","c": nonce, "e": {"type":"hello","name":...},
                                  "ck": cookie?, "pk": 1?, "p": pad}
    retry      server -> client  {"v","k","c": nonce echoed, "ck": address cookie}
    accept     server -> client  {"v","k","c": nonce echoed, "t": session token, "pk": 1?}
    data       both directions   {"v","k","t","s": seq, "a": cumulative ack, "e": event}
                                 or {..., "es": [event, event, ...]} (packed, see below)
    ack        both directions   {"v","k","t","a": cumulative ack, "sa": [selective acks]?}
    keepalive  client -> server  {"v","k","t","a"}         (the server answers with an ack)
    bye        both directions   {"v","k","t","r": reason?}

``e`` is exactly one event of the native JSON-lines schema.  ``s`` counts from 1 per direction;
``a`` is the highest seq delivered in order (0 = none); ``sa`` lists seqs above ``a`` that are
buffered.  Unknown keys are ignored so later versions can add fields.

Packing: a hello with ``"pk": 1`` says that its client takes data envelopes carrying several
events (``"es"``, 1 to ``MAX_PACKED_EVENTS`` events, delivered in order; the envelope's seq
numbers the datagram, not its events), and an accept with ``"pk": 1`` says the server does
too.  Only then do the two send packed envelopes: events queued together (a busy room's
burst, or what waits behind a full send window) go out in as few datagrams as fit.  Either
end *receives* packed envelopes in any case.  A peer that predates packing sends no ``pk``
(or ignores it) and gets one event per datagram, as before.

Delayed acks (the client's side): an in-order data envelope is acknowledged once
``ACK_EVERY`` of them are unacknowledged, or ``ACK_DELAY`` after the first, or when the
transport has read what its socket held (``flush_acks``); anything out of order or duplicated
is acknowledged at once.  One ack then covers several data envelopes.  This needs no
agreement: ``ACK_DELAY`` is far below the sender's retransmission timeout.

Handshake and address validation (no amplification, no spoofed registrations):

1. The client sends a hello padded with ``p`` to exactly ``MIN_HELLO_SIZE`` bytes, carrying a
   random nonce ``c`` and the hello event, and retransmits it until answered.
2. A hello without a valid cookie ``ck`` gets a *retry* (tens of bytes) holding the nonce and a
   cookie: an HMAC of the source address and port under a server secret that rotates every
   ``COOKIE_ROTATION`` seconds (see :class:`AddressCookies`).  Nothing is stored: a flood of
   hellos, spoofed or not, costs the server no memory.  The client sends its hello again with
   the cookie; only a hello echoing a valid cookie proves that its sender receives at its
   address, like a TCP SYN cookie, a DTLS HelloVerifyRequest or a QUIC Retry.
3. On that hello the server keeps a *pending* handshake for the address and answers with an
   accept holding the nonce and a fresh random token.  Before the address is proven by the
   token, nothing but retries and that accept is ever sent to it, each no larger than the
   hello that caused it (checked with :func:`amplification_ok`).
4. The client then sends a token-bearing datagram (an ack, resent as a keepalive, which the
   server always answers) until it hears from the server.  Only
   someone who received the accept at that address knows the token, so on this datagram the
   server registers the session (:class:`Registered`, then :class:`Deliver` of the hello event).

Hellos are limited per host (the IP address, whatever the port; an IPv6 /64), in rate and in
pending handshakes, so one host with many source ports cannot crowd out everyone else.  Hosts
the server exempts from its per-address limits (``--limit-exempt``, loopback by default) skip
these two, as they skip the TCP listeners' limits; the cap on all pending handshakes holds for
them too.

Every later datagram must carry the token registered for its source address; anything else is
dropped and counted (``forged`` / ``unknown_session``).  A session is bound to one address: a
NAT rebinding ends it (the client times out and reconnects).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from threadchat.core import addresses
from threadchat.core.flood import RateLimiter, TokenBucket

Address = tuple[Any, ...]
Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event already serialised as one compact JSON object (UTF-8, no trailing newline).

    Senders may queue this instead of a dict so a server fanning one event out to many UDP
    users serialises it once: the envelope is spliced around the bytes, never re-encoded.
    The bytes are trusted to be a valid JSON object; receivers always see plain dicts.
    """

    json: bytes


OutEvent = Event | EncodedEvent

PROTOCOL_VERSION = 1

# 1280 (IPv6 minimum MTU) - 40 (IPv6) - 8 (UDP) leaves 1232; 1200 keeps a margin for tunnels,
# so a datagram is never fragmented on any path (the same reasoning QUIC uses).
MAX_DATAGRAM_SIZE = 1200
# A hello is padded to a full datagram so every reply to an unproven address (a retry or an
# accept, under 150 bytes) is far smaller than the request: a spoofed hello cannot amplify.
MIN_HELLO_SIZE = MAX_DATAGRAM_SIZE
# Transports must read with a buffer this large so an oversize datagram is seen (and refused)
# rather than silently truncated into something that might parse.
RECV_BUFFER_SIZE = 65536

# First retransmission after 200 ms: well above loopback/LAN RTT, short enough for chat.
INITIAL_RTO = 0.2
# Doubling stops at 2 s so a recovered link is noticed quickly within GIVE_UP_AFTER.
MAX_RTO = 2.0
# Unacknowledged data with no progress for this long means the peer is gone.
GIVE_UP_AFTER = 10.0
# Client keepalive period: below common NAT UDP mapping lifetimes (30 s+).
KEEPALIVE_INTERVAL = 15.0
# A session silent this long (four missed keepalives) is removed as "timed out".
SESSION_TIMEOUT = 60.0
# A pending (unproven) handshake is forgotten after this; bounds state held for strangers.
HANDSHAKE_TIMEOUT = 10.0
# Caps the handshake state the server holds; only hellos with a valid cookie count against it.
MAX_PENDING_HANDSHAKES = 1024
# Pending handshakes per host: a NAT may have a few dozen logins in flight at once (each lasts
# one round trip), while one host with many source ports may hold at most 1/32 of the table,
# so filling it takes 32 hosts that each proved they receive at their address.
MAX_PENDING_PER_HOST = 32
# Hellos per host (every port together): a login costs two (plus retransmissions on loss), so
# 50/s lets 20 logins a second through one NAT, and bounds the retries a spoofed flood can make
# the server send to one victim host to 50 small datagrams a second.
HELLO_RATE_PER_HOST = 50.0
# Lets a burst of logins through at once (a NAT's users coming back after a server restart).
HELLO_BURST_PER_HOST = 100.0
# The cookie secret is replaced this often and the previous one still accepted, so a cookie
# works for between one and two rotations: plenty for one round trip and the client's
# retransmissions, and a cookie seen on the path is useless soon after.
COOKIE_ROTATION = 10.0
# 256-bit HMAC-SHA256 keys, fresh from the OS at every rotation.
COOKIE_SECRET_BYTES = 32
# The MAC is cut to 128 bits: unforgeable for an off-path attacker, short on the wire.
COOKIE_BYTES = 16
# Caps registered UDP sessions; the hub has its own user limits on top.
MAX_SESSIONS = 4096

# Datagrams in flight per direction; kept below RECV_WINDOW so in-window data is never dropped.
SEND_WINDOW = 64
# Events in one packed data envelope ("es"): a busy room's events (joins, leaves, messages of
# 80 to 300 bytes) fill a datagram at 4 to 12; the bound caps what one datagram of tiny events
# makes a receiver hold (it buffers up to RECV_WINDOW datagrams).
MAX_PACKED_EVENTS = 32
# Delayed acks (a client's): at most this long after an in-order data envelope, far below
# INITIAL_RTO so the sender never retransmits for the delay (QUIC's max_ack_delay is 25 ms).
ACK_DELAY = 0.025
# ... or at once when this many in-order data envelopes are unacknowledged: a window of 64
# then still sees an ack every few datagrams.
ACK_EVERY = 4
# Out-of-order datagrams the receiver buffers; seqs beyond are dropped (and counted).
RECV_WINDOW = 128
# Events queued behind a full send window; beyond this the peer cannot keep up and is dropped.
MAX_SEND_QUEUE = 512
# Selective acks per ack datagram; keeps acks small and bounded.
MAX_SACKS = 32
# Largest seq accepted: exact in every JSON implementation (2**53 - 1).
MAX_SEQ = 2**53 - 1

# 16 random bytes (128 bits) make a token unguessable for an off-path attacker.
TOKEN_BYTES = 16
# Nonce only has to be unpredictable for the lifetime of one handshake.
NONCE_BYTES = 12
# Upper bounds for strings we accept from the wire.
MAX_TOKEN_LENGTH = 64
MAX_NONCE_LENGTH = 64
MAX_COOKIE_LENGTH = 64
MAX_REASON_LENGTH = 200

# Per-address datagram rate: a chat client sends a few per second (plus one ack per received
# event); 200/s with a burst of 400 tolerates busy rooms and stops floods from one address.
RATE_LIMIT_PER_SECOND = 200.0
RATE_LIMIT_BURST = 400.0
# Bounds the rate limiter's table; idle buckets are evicted first.
MAX_RATE_LIMITED_ADDRESSES = 8192

ERROR_DATAGRAM_TOO_LARGE = "datagram_too_large"

KINDS = frozenset({"hello", "retry", "accept", "data", "ack", "keepalive", "bye"})
_TOKEN_KINDS = frozenset({"data", "ack", "keepalive", "bye"})


class UdpProtocolError(Exception):
    """Base class of the errors this module raises to callers."""


class DatagramTooLarge(UdpProtocolError, ValueError):
    """An event would not fit in one datagram of ``MAX_DATAGRAM_SIZE`` bytes."""


class SendQueueFull(UdpProtocolError):
    """More than ``MAX_SEND_QUEUE`` events wait behind the send window."""


class MalformedDatagram(UdpProtocolError, ValueError):
    """A received datagram is not a valid envelope; ``str(exc)`` says why."""


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; letting them in would make us emit invalid JSON later.
    raise ValueError(f"non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON but overflows to infinity, which `_dumps` would write as Infinity.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _loads(data: bytes) -> Any:
    return json.loads(
        data.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
    )


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded datagram; fields not used by ``kind`` are None / empty."""

    kind: str
    token: str | None = None
    seq: int | None = None
    ack: int | None = None
    sacks: tuple[int, ...] = ()
    # A hello's event.
    event: Event | None = None
    nonce: str | None = None
    reason: str | None = None
    cookie: str | None = None
    # A data envelope's events, in order (one for "e", one or more for packed "es").
    events: tuple[Event, ...] = ()
    # A hello offering, or an accept granting, packed data envelopes ("pk": 1).
    pack: bool = False


def same_secret(given: str, expected: str) -> bool:
    """Constant-time equality of a string from the wire with a secret one.

    ``hmac.compare_digest`` raises TypeError on a ``str`` with non-ASCII characters, and the
    peer chooses what it sends, so both are compared as UTF-8 bytes.
    """
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short_str(obj: dict[str, Any], key: str, limit: int, required: bool) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MalformedDatagram(f"bad {key!r}")
    if not value.isascii():
        # JSON may spell a lone surrogate (\ud800); such a token or nonce made `same_secret`
        # raise UnicodeEncodeError out of `receive`, which promises never to raise.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedDatagram(f"bad {key!r}") from None
    return value


def _pack_flag(obj: dict[str, Any]) -> bool:
    # Only the value 1 means packing as specified here; anything else is a version or a
    # mistake this end does not know, so it is ignored like an unknown key.
    value = obj.get("pk")
    return _is_int(value) and value == 1


def _data_events(obj: dict[str, Any]) -> tuple[Event, ...]:
    packed = obj.get("es")
    if packed is None:
        event = obj.get("e")
        if not isinstance(event, dict):
            raise MalformedDatagram("bad event")
        return (event,)
    if (
        "e" in obj
        or not isinstance(packed, list)
        or not 1 <= len(packed) <= MAX_PACKED_EVENTS
        or not all(isinstance(event, dict) for event in packed)
    ):
        raise MalformedDatagram("bad 'es'")
    return tuple(packed)


def _seq_field(obj: dict[str, Any], key: str, low: int) -> int:
    value = obj.get(key)
    if not _is_int(value) or not low <= value <= MAX_SEQ:
        raise MalformedDatagram(f"bad {key!r}")
    return value


def decode(data: bytes) -> Envelope:
    """Parse and validate one datagram; raises :class:`MalformedDatagram` and nothing else."""
    if len(data) > MAX_DATAGRAM_SIZE:
        raise MalformedDatagram("datagram too large")
    try:
        obj = _loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedDatagram("not JSON") from exc
    if not isinstance(obj, dict):
        raise MalformedDatagram("not an object")
    version = obj.get("v")
    if not _is_int(version) or version != PROTOCOL_VERSION:
        raise MalformedDatagram("unsupported version")
    kind = obj.get("k")
    if not isinstance(kind, str) or kind not in KINDS:
        raise MalformedDatagram("unknown kind")
    token = _short_str(obj, "t", MAX_TOKEN_LENGTH, kind in _TOKEN_KINDS or kind == "accept")
    if kind == "hello":
        event = obj.get("e")
        if (
            not isinstance(event, dict)
            or event.get("type") != "hello"
            or not isinstance(event.get("name"), str)
        ):
            raise MalformedDatagram("bad hello event")
        if not isinstance(obj.get("p", ""), str):
            raise MalformedDatagram("bad padding")
        return Envelope(
            kind,
            event=event,
            nonce=_short_str(obj, "c", MAX_NONCE_LENGTH, True),
            cookie=_short_str(obj, "ck", MAX_COOKIE_LENGTH, False),
            pack=_pack_flag(obj),
        )
    if kind == "retry":
        return Envelope(
            kind,
            nonce=_short_str(obj, "c", MAX_NONCE_LENGTH, True),
            cookie=_short_str(obj, "ck", MAX_COOKIE_LENGTH, True),
        )
    if kind == "accept":
        return Envelope(
            kind,
            token=token,
            nonce=_short_str(obj, "c", MAX_NONCE_LENGTH, True),
            pack=_pack_flag(obj),
        )
    if kind == "bye":
        return Envelope(kind, token=token, reason=_short_str(obj, "r", MAX_REASON_LENGTH, False))
    ack = _seq_field(obj, "a", 0)
    if kind == "keepalive":
        return Envelope(kind, token=token, ack=ack)
    raw_sacks = obj.get("sa", [])
    if (
        not isinstance(raw_sacks, list)
        or len(raw_sacks) > MAX_SACKS
        or not all(_is_int(s) and 0 < s <= MAX_SEQ for s in raw_sacks)
    ):
        raise MalformedDatagram("bad 'sa'")
    if kind == "ack":
        return Envelope(kind, token=token, ack=ack, sacks=tuple(raw_sacks))
    events = _data_events(obj)
    return Envelope(
        kind,
        token=token,
        seq=_seq_field(obj, "s", 1),
        ack=ack,
        sacks=tuple(raw_sacks),
        events=events,
    )


def encode_hello(
    name: str,
    nonce: str,
    ref: str | int | None = None,
    cookie: str | None = None,
    pack: bool = False,
) -> bytes:
    """The client's hello, padded to exactly ``MIN_HELLO_SIZE`` bytes.

    ``ref`` (optional) rides in the hello event, so the server's ``ok`` for it tells the
    client that registration finished, as in TCP JSON mode.  ``cookie`` is the one from the
    server's retry (None on the first hello).  ``pack``: the client takes packed data
    envelopes (``"pk": 1``).
    Raises :class:`DatagramTooLarge` if the name does not leave room for the envelope.
    """
    base: dict[str, Any] = {"v": PROTOCOL_VERSION, "k": "hello", "c": nonce}
    hello: dict[str, Any] = {"type": "hello", "name": name}
    if ref is not None:
        hello["ref"] = ref
    base["e"] = hello
    if cookie is not None:
        base["ck"] = cookie
    if pack:
        base["pk"] = 1
    base["p"] = ""
    room = MIN_HELLO_SIZE - len(_dumps(base))
    if room < 0:
        raise DatagramTooLarge("name too long for a hello datagram")
    base["p"] = "." * room
    return _dumps(base)


def encode_retry(nonce: str, cookie: str) -> bytes:
    return _dumps({"v": PROTOCOL_VERSION, "k": "retry", "c": nonce, "ck": cookie})


def encode_accept(nonce: str, token: str, pack: bool = False) -> bytes:
    obj: dict[str, Any] = {"v": PROTOCOL_VERSION, "k": "accept", "c": nonce, "t": token}
    if pack:
        obj["pk"] = 1
    return _dumps(obj)


def encode_data(token: str, seq: int, ack: int, event: OutEvent) -> bytes:
    if isinstance(event, EncodedEvent):
        # Same key order and compact form as the dict path, so both encodings are identical.
        head = _dumps({"v": PROTOCOL_VERSION, "k": "data", "t": token, "s": seq, "a": ack})
        return head[:-1] + b',"e":' + event.json + b"}"
    return _dumps({"v": PROTOCOL_VERSION, "k": "data", "t": token, "s": seq, "a": ack, "e": event})


def _event_json(event: OutEvent) -> bytes:
    return event.json if isinstance(event, EncodedEvent) else _dumps(event)


def encode_data_events(token: str, seq: int, ack: int, events: Sequence[OutEvent]) -> bytes:
    """A data envelope carrying ``events`` in order: ``"e"`` for one, packed ``"es"`` for more.

    Only for a peer that agreed to packing (``"pk"``) when there are several.
    """
    if len(events) == 1:
        return encode_data(token, seq, ack, events[0])
    if not 1 < len(events) <= MAX_PACKED_EVENTS:
        raise ValueError(f"{len(events)} events in one envelope")
    head = _dumps({"v": PROTOCOL_VERSION, "k": "data", "t": token, "s": seq, "a": ack})
    return head[:-1] + b',"es":[' + b",".join(map(_event_json, events)) + b"]}"


def encode_ack(token: str, ack: int, sacks: tuple[int, ...] | list[int] = ()) -> bytes:
    obj: dict[str, Any] = {"v": PROTOCOL_VERSION, "k": "ack", "t": token, "a": ack}
    if sacks:
        obj["sa"] = list(sacks)[:MAX_SACKS]
    return _dumps(obj)


def encode_keepalive(token: str, ack: int) -> bytes:
    return _dumps({"v": PROTOCOL_VERSION, "k": "keepalive", "t": token, "a": ack})


def encode_bye(token: str, reason: str = "") -> bytes:
    obj: dict[str, Any] = {"v": PROTOCOL_VERSION, "k": "bye", "t": token}
    if reason:
        obj["r"] = reason[:MAX_REASON_LENGTH]
    return _dumps(obj)


def data_datagram_size(event: OutEvent) -> int:
    """Worst-case size of a data datagram carrying ``event`` (longest token, seq and ack)."""
    if isinstance(event, EncodedEvent):
        # The envelope is spliced around the bytes: its size is theirs plus a constant. The
        # server checks every event it fans out to every UDP user, so no encoding here.
        return _ENCODED_DATA_OVERHEAD + len(event.json)
    return len(encode_data("x" * MAX_TOKEN_LENGTH, MAX_SEQ, MAX_SEQ, event))


_ENCODED_DATA_OVERHEAD = len(
    encode_data("x" * MAX_TOKEN_LENGTH, MAX_SEQ, MAX_SEQ, EncodedEvent(b""))
)


# A packed envelope of n events is this plus their lengths plus n - 1 commas, at worst (the
# longest token, seq and ack: a retransmission carries a later ack than the first copy).
_PACKED_DATA_OVERHEAD = len(
    encode_data_events(
        "x" * MAX_TOKEN_LENGTH, MAX_SEQ, MAX_SEQ, [EncodedEvent(b""), EncodedEvent(b"")]
    )
) - len(b",")


def event_fits(event: OutEvent) -> bool:
    """True if ``event`` can always be sent in one datagram."""
    return data_datagram_size(event) <= MAX_DATAGRAM_SIZE


# Fields that may be cut into consecutive pieces when an event is too large for one datagram:
# lists (who, rooms) split between items, message text between characters.
SPLITTABLE_FIELDS = ("members", "rooms", "text", "messages")


def _continuation(key: str) -> str:
    # A history page already has "more" (older messages exist), so its pieces say "continued".
    return "continued" if key == "messages" else "more"


def _fits_with(event: Event, key: str, value: Any, more: bool) -> bool:
    piece = {**event, key: value}
    if more:
        piece[_continuation(key)] = True
    return event_fits(piece)


def _largest_prefix(event: Event, key: str, value: Any) -> int:
    """Length of the longest prefix of ``value`` that fits as a "more" piece (0 if none)."""
    low, high = 0, len(value)
    while low < high:
        middle = (low + high + 1) // 2
        if _fits_with(event, key, value[:middle], True):
            low = middle
        else:
            high = middle - 1
    return low


def fit_event(event: Event) -> list[Event]:
    """``event`` as one or more events that each fit in one datagram.

    An event too large is cut along its first splittable field (``members``, ``rooms``,
    ``text`` or a history page's ``messages``): every piece repeats the other fields (id and ts
    included) and all but the last carry ``"more": true`` (``"continued": true`` for history
    pages, whose ``more`` already means that older messages exist), so a client joins
    consecutive pieces of the same id.  Failing that,
    the longest string field is shortened and the event marked ``"truncated": true``.  Returns
    [] only if not even that fits (no event of the native schema is that large).
    """
    if event_fits(event):
        return [event]
    for key in SPLITTABLE_FIELDS:
        value = event.get(key)
        if not isinstance(value, list | str) or len(value) < 2:
            continue
        pieces: list[Event] = []
        rest = value
        while not _fits_with(event, key, rest, False):
            n = _largest_prefix(event, key, rest)
            if n == 0:
                break
            pieces.append({**event, key: rest[:n], _continuation(key): True})
            rest = rest[n:]
        else:
            return [*pieces, {**event, key: rest}]
    strings = [k for k, v in event.items() if isinstance(v, str) and k not in ("type", "ts")]
    if not strings:
        return []
    longest = max(strings, key=lambda k: len(event[k]))
    base = {**event, "truncated": True}
    low, high = 0, len(event[longest])
    while low < high:
        middle = (low + high + 1) // 2
        if event_fits({**base, longest: event[longest][:middle]}):
            low = middle
        else:
            high = middle - 1
    shortened = {**base, longest: event[longest][:low]}
    return [shortened] if event_fits(shortened) else []


def amplification_ok(request_size: int, reply_size: int) -> bool:
    """True if a reply to an unproven address is no larger than the datagram that caused it."""
    return 0 <= reply_size <= request_size


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_nonce() -> str:
    return secrets.token_urlsafe(NONCE_BYTES)


def host_key(addr: Address) -> str:
    """The host part of ``addr`` for per-host limits (see `addresses.host_key`)."""
    return addresses.host_key(str(addr[0]))


class AddressCookies:
    """Stateless proof that a sender receives at its address (and port).

    A cookie is ``HMAC-SHA256(secret, [host, port, period])`` cut to ``COOKIE_BYTES``, where
    ``period`` numbers the ``rotation``-second slice of time it was issued in.  Each period
    has its own random secret, and only the current and the previous one are kept, so a
    cookie is valid for between one and two rotations and then never again.  Only the two
    secrets are stored, whatever the number of senders.
    """

    def __init__(self, rotation: float = COOKIE_ROTATION) -> None:
        self.rotation = rotation
        self._period: int | None = None
        self._current = b""
        self._previous = b""

    def _rotate(self, now: float) -> int:
        period = math.floor(now / self.rotation)
        if self._period is None or period > self._period:
            if self._period is not None and period == self._period + 1:
                self._previous = self._current
            else:
                # First use, or a gap of several periods: no older cookie may stay valid.
                self._previous = secrets.token_bytes(COOKIE_SECRET_BYTES)
            self._current = secrets.token_bytes(COOKIE_SECRET_BYTES)
            self._period = period
        return self._period

    @staticmethod
    def _mac(secret: bytes, addr: Address, period: int) -> str:
        message = _dumps([str(addr[0]), addr[1], period])
        digest = hmac.new(secret, message, hashlib.sha256).digest()[:COOKIE_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def issue(self, addr: Address, now: float) -> str:
        """The cookie for ``addr`` at ``now``."""
        period = self._rotate(now)
        return self._mac(self._current, addr, period)

    def valid(self, cookie: str, addr: Address, now: float) -> bool:
        """True if ``cookie`` was issued to ``addr`` in this period or the previous one."""
        period = self._rotate(now)
        # Both comparisons always run, so timing does not tell which secret matched.
        current = same_secret(cookie, self._mac(self._current, addr, period))
        previous = same_secret(cookie, self._mac(self._previous, addr, period - 1))
        return current or previous


@dataclass(slots=True)
class _Outstanding:
    # The events of one data envelope, sent again as they were on retransmission.
    events: tuple[EncodedEvent, ...]
    rto: float
    due: float


class ReliableChannel:
    """Reliable, ordered, de-duplicated event stream to and from one peer.

    ``send`` queues events; ``receive`` takes decoded envelopes of kind data/ack/keepalive;
    ``poll`` retransmits due datagrams.  Once no progress was made for ``give_up_after``
    seconds while data was unacknowledged, ``failed`` becomes True and the channel goes quiet.
    Counters (``duplicates``, ``retransmits``, ``out_of_window``) go to ``stats``.

    With a ``pace`` bucket, the receiving side hands over one event per token.  An event
    that arrived in order while the bucket is empty is *held*: it stays in the receive
    window, and it is not acknowledged (neither cumulatively nor selectively) until it is
    handed over (``release``, at ``release_at``).  The peer's send window then fills, and the
    peer waits instead of its events being refused: flood control paces, nothing is lost,
    and the window bounds what is held.

    With ``max_in_hand``, at most that many events are handed over and not yet reported
    done by the caller (``handed_back``): the caller may queue what it was handed for
    another thread, and an acknowledgement means "taken in", so what waits beyond the bound
    is held, unacknowledged, exactly like what waits for the pace.  A slow consumer thus
    slows the peer down instead of growing a queue or dropping what was acknowledged.

    Seq numbers count data envelopes.  With ``pack`` (the peer agreed, see the module
    docstring) the events queued when the window has room go out packed, as many to a
    datagram as fit (``send_many`` queues several before filling the window).  A received
    packed envelope is handed over event by event (pace and consumer's bound count events)
    and acknowledged once all of its events are.

    With ``ack_delay`` > 0 acks of in-order data are delayed (the module docstring): the
    caller then calls ``poll`` by ``next_deadline`` as for retransmissions, and may call
    ``flush_acks`` once it has read every datagram waiting.  0: every data envelope is
    acknowledged at once.
    """

    def __init__(
        self,
        token: str,
        *,
        stats: Counter[str] | None = None,
        send_window: int = SEND_WINDOW,
        recv_window: int = RECV_WINDOW,
        max_queue: int = MAX_SEND_QUEUE,
        initial_rto: float = INITIAL_RTO,
        max_rto: float = MAX_RTO,
        give_up_after: float = GIVE_UP_AFTER,
        pace: TokenBucket | None = None,
        max_in_hand: int | None = None,
        pack: bool = False,
        ack_delay: float = 0.0,
        ack_every: int = ACK_EVERY,
    ) -> None:
        self.token = token
        self.pack = pack
        self.ack_delay = ack_delay
        self.ack_every = ack_every
        # In-order data envelopes received and not yet acknowledged, and when the oldest's
        # ack is due (None: nothing waits; only with ack_delay).
        self._ack_pending = 0
        self._ack_due: float | None = None
        self.pace = pace if pace is not None and pace.enabled else None
        self.max_in_hand = max_in_hand
        # Events handed over and not yet reported done (`handed_back`); counted only with a
        # max_in_hand.
        self.in_hand = 0
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.send_window = send_window
        self.recv_window = recv_window
        self.max_queue = max_queue
        self.initial_rto = initial_rto
        self.max_rto = max_rto
        self.give_up_after = give_up_after
        self.failed = False
        self._next_seq = 1
        self._unacked: dict[int, _Outstanding] = {}  # insertion order == seq order
        self._queue: deque[EncodedEvent] = deque()
        self._progress_at = 0.0
        self._delivered = 0  # cumulative: highest seq all of whose events were handed over
        # Received envelopes' events not yet handed over, by seq (the next one's may be
        # partly handed over already).
        self._buffer: dict[int, deque[Event]] = {}

    @property
    def ack_number(self) -> int:
        return self._delivered

    @property
    def unacked(self) -> int:
        """Events sent or queued and not yet acknowledged."""
        return sum(len(item.events) for item in self._unacked.values()) + len(self._queue)

    @property
    def queue_full(self) -> bool:
        """Whether ``send`` would raise :class:`SendQueueFull` now."""
        return len(self._queue) >= self.max_queue

    def send(self, event: OutEvent, now: float) -> list[bytes]:
        """Queue ``event``; return the datagrams to send now (empty if the window is full).

        Raises :class:`DatagramTooLarge` (nothing queued) or :class:`SendQueueFull`.
        """
        return self.send_many((event,), now)

    def send_many(self, events: Iterable[OutEvent], now: float) -> list[bytes]:
        """Queue ``events`` in order, then fill the window once (packed, with ``pack``).

        Raises :class:`DatagramTooLarge` (nothing queued) or :class:`SendQueueFull` (the
        events before the one that did not fit stay queued).
        """
        encoded = [
            event if isinstance(event, EncodedEvent) else EncodedEvent(_dumps(event))
            for event in events
        ]
        for event in encoded:
            if not event_fits(event):
                raise DatagramTooLarge(
                    f"event needs {data_datagram_size(event)} bytes, limit {MAX_DATAGRAM_SIZE}"
                )
        if self.failed:
            return []
        for event in encoded:
            if len(self._queue) >= self.max_queue:
                raise SendQueueFull("peer is not acknowledging fast enough")
            self._queue.append(event)
        return self._fill_window(now)

    def _next_envelope(self) -> tuple[EncodedEvent, ...]:
        """The events of the next data envelope, off the queue: one, or with ``pack`` as
        many as fit in a datagram."""
        first = self._queue.popleft()
        if not self.pack or not self._queue:
            return (first,)
        taken = [first]
        size = _PACKED_DATA_OVERHEAD + len(first.json)
        while self._queue and len(taken) < MAX_PACKED_EVENTS:
            cost = len(b",") + len(self._queue[0].json)
            if size + cost > MAX_DATAGRAM_SIZE:
                break
            size += cost
            taken.append(self._queue.popleft())
        return tuple(taken)

    def _fill_window(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        while self._queue and len(self._unacked) < self.send_window:
            if not self._unacked:
                self._progress_at = now
            events = self._next_envelope()
            if len(events) > 1:
                self.stats["packed"] += 1
            seq = self._next_seq
            self._next_seq += 1
            self._unacked[seq] = _Outstanding(events, self.initial_rto, now + self.initial_rto)
            out.append(encode_data_events(self.token, seq, self._delivered, events))
        if out:
            self._ack_carried()
        return out

    def _ack_carried(self) -> None:
        """Data just sent carries ``a``: with nothing buffered, that acknowledges everything
        received, and a delayed ack has nothing left to say."""
        if not self._buffer:
            self._ack_pending = 0
            self._ack_due = None

    def receive(self, env: Envelope, now: float) -> tuple[list[Event], list[bytes]]:
        """Process a data/ack/keepalive envelope; return (events delivered in order, datagrams)."""
        out: list[bytes] = []
        if env.ack is not None:
            out.extend(self._on_ack(env.ack, env.sacks, now))
        if env.kind != "data" or env.seq is None or not env.events:
            return [], out
        delivered: list[Event] = []
        seq = env.seq
        in_order = False
        if seq <= self._delivered or seq in self._buffer:
            self.stats["duplicates"] += 1
        elif seq > self._delivered + self.recv_window:
            self.stats["out_of_window"] += 1
        else:
            in_order = seq == self._delivered + 1 and not self._buffer
            self._buffer[seq] = deque(env.events)
            delivered = self._hand_over(now)
        if self.ack_delay > 0 and in_order and not self._buffer:
            # In order, and all handed over: the ack may wait for more (module docstring).
            self._ack_pending += 1
            if self._ack_pending >= self.ack_every:
                out.append(self.ack_datagram())
            elif self._ack_due is None:
                self._ack_due = now + self.ack_delay
            return delivered, out
        # Acknowledge every other data datagram at once, duplicates included (the peer may
        # have lost our ack), and anything out of order (the peer learns of the gap now).
        out.append(self.ack_datagram())
        return delivered, out

    def flush_acks(self) -> list[bytes]:
        """The delayed ack, now, if one waits: for a caller that has read every datagram
        its socket held, so one ack covers them all."""
        return [self.ack_datagram()] if self._ack_pending else []

    def _hand_over(self, now: float) -> list[Event]:
        """The events now in order, as many as the pace allows."""
        delivered: list[Event] = []
        pace = self.pace
        bound = self.max_in_hand
        while (waiting := self._buffer.get(self._delivered + 1)) is not None:
            # The consumer's bound first: a token is not spent on an event that cannot go.
            if bound is not None and self.in_hand >= bound:
                break
            if pace is not None and not pace.allow(now):
                break
            delivered.append(waiting.popleft())
            if bound is not None:
                self.in_hand += 1
            if not waiting:
                # Every event of the envelope is handed over: now it counts as delivered.
                del self._buffer[self._delivered + 1]
                self._delivered += 1
        return delivered

    @property
    def holding(self) -> bool:
        """Whether an event in order waits, for the pace or for the consumer (see the class
        docstring)."""
        return self._delivered + 1 in self._buffer

    @property
    def consumer_full(self) -> bool:
        """Whether ``max_in_hand`` events are in the consumer's hands (nothing more goes)."""
        return self.max_in_hand is not None and self.in_hand >= self.max_in_hand

    @property
    def pace_holding(self) -> bool:
        """Whether an event in order waits for the pace (and not for the consumer)."""
        return self.pace is not None and self.holding and not self.consumer_full

    def release_at(self) -> float | None:
        """When ``release`` can hand over an event held for the pace (None: nothing is, or
        what is held waits for the consumer's ``handed_back``)."""
        if not self.pace_holding:
            return None
        assert self.pace is not None
        return self.pace.ready_at()

    def handed_back(self, count: int, now: float) -> tuple[list[Event], list[bytes]]:
        """The consumer is done with ``count`` events: what was held for it and the pace
        allows now, and an ack for that (it opens the peer's window)."""
        # Clamped: a transport may report for a session that ended and was replaced.
        self.in_hand = max(0, self.in_hand - count)
        return self.release(now)

    def release(self, now: float) -> tuple[list[Event], list[bytes]]:
        """Held events the pace allows now, and an ack for them (it opens the peer's window)."""
        delivered = self._hand_over(now)
        return delivered, [self.ack_datagram()] if delivered else []

    def take_held(self) -> list[Event]:
        """Every held event at once, pace and consumer's bound or not: for a peer that is
        leaving (its bye came after them), so that what it sent and we received is not lost.
        The receive window bounds how many."""
        pace, self.pace = self.pace, None
        bound, self.max_in_hand = self.max_in_hand, None
        try:
            return self._hand_over(0.0)
        finally:
            self.pace = pace
            self.max_in_hand = bound

    def ack_datagram(self) -> bytes:
        """A pure ack of everything received so far (cumulative plus selective), except
        events held (for the pace or the consumer): those are acknowledged when they are
        handed over (an envelope once all of its events are)."""
        self._ack_pending = 0
        self._ack_due = None
        sacks: list[int] = []
        held = self._delivered + 1
        for seq in sorted(self._buffer):
            if seq == held:
                held += 1
                continue
            sacks.append(seq)
            if len(sacks) == MAX_SACKS:
                break
        return encode_ack(self.token, self._delivered, sacks)

    def _on_ack(self, ack: int, sacks: tuple[int, ...], now: float) -> list[bytes]:
        acked = [s for s in self._unacked if s <= ack]
        advanced = bool(acked)
        acked.extend(s for s in sacks if s in self._unacked and s > ack)
        for seq in acked:
            del self._unacked[seq]
        if not acked:
            return []
        self._progress_at = now
        if advanced:
            # The cumulative ack moved: the peer is taking our data in order, only slower
            # than we sent it (a server pacing a flood holds it unacknowledged). Restart the
            # retransmission timers, as TCP does on an ack of new data (RFC 6298, 5.3), so
            # what waits in the window is not sent again and again meanwhile. A datagram
            # really lost stops the cumulative ack, and its timer runs out as before.
            for item in self._unacked.values():
                item.due = max(item.due, now + item.rto)
        return self._fill_window(now)

    def poll(self, now: float) -> list[bytes]:
        """A delayed ack that is due, and datagrams to retransmit at ``now``; sets ``failed``
        after ``give_up_after``."""
        if self.failed:
            return []
        out: list[bytes] = []
        if self._ack_due is not None and now >= self._ack_due:
            out.append(self.ack_datagram())
        if not self._unacked:
            return out
        if now >= self._progress_at + self.give_up_after:
            self.failed = True
            self._unacked.clear()
            self._queue.clear()
            return []
        for seq, item in self._unacked.items():
            if item.due <= now:
                item.rto = min(item.rto * 2, self.max_rto)
                item.due = now + item.rto
                self.stats["retransmits"] += 1
                out.append(encode_data_events(self.token, seq, self._delivered, item.events))
        return out

    def next_deadline(self) -> float | None:
        """Earliest time ``poll`` has work to do, or None while nothing is outstanding and
        no ack waits."""
        if self.failed:
            return None
        deadlines: list[float] = []
        if self._ack_due is not None:
            deadlines.append(self._ack_due)
        if self._unacked:
            deadlines.append(min(item.due for item in self._unacked.values()))
            deadlines.append(self._progress_at + self.give_up_after)
        return min(deadlines, default=None)


# ---------------------------------------------------------------------------------------------
# Actions returned by the endpoints.  A transport carries them out in order.


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``data`` to ``addr``."""

    addr: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    """``event`` arrived from ``addr``, in order and exactly once."""

    addr: Address
    event: Event


@dataclass(frozen=True, slots=True)
class Registered:
    """Server: ``addr`` proved it owns its address; a new user named ``name`` connects.

    Always followed by a :class:`Deliver` of the hello event itself.
    """

    addr: Address
    name: str


@dataclass(frozen=True, slots=True)
class Connected:
    """Client: the server accepted the hello; events may flow."""

    addr: Address
    token: str


@dataclass(frozen=True, slots=True)
class Drop:
    """The session with ``addr`` is over and already forgotten by the endpoint.

    ``reason`` is "timed out", "peer unreachable", "send queue full", or the peer's bye reason.
    """

    addr: Address
    reason: str


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """Server: send an error event (``code``, ``message``) to the user at ``addr``.

    Returned instead of a ready event so the hub stamps ``id`` and ``ts`` as for any event.
    """

    addr: Address
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A datagram from ``addr`` was ignored (already counted in ``stats``); for logging."""

    addr: Address
    reason: str


@dataclass(frozen=True, slots=True)
class Paced:
    """Server: the user at ``addr`` sends faster than its pace; its events are now held
    (and handed over at the pace's rate: see :class:`ReliableChannel`).  Once per episode."""

    addr: Address


Action = Send | Deliver | Registered | Connected | Drop | ErrorReply | Rejected | Paced


@dataclass(slots=True)
class _Pending:
    nonce: str
    token: str
    hello: Event
    created: float
    # The client offered packed data envelopes and this server agreed (the accept says so).
    pack: bool = False


@dataclass(slots=True)
class _Session:
    token: str
    nonce: str
    channel: ReliableChannel
    last_heard: float


class ServerEndpoint:
    """The server's table of UDP sessions, keyed by source address.

    ``receive`` routes raw datagrams, ``send_event`` queues an event for a registered address,
    ``poll`` retransmits and expires, ``close`` ends a session.  All return lists of actions.
    """

    def __init__(
        self,
        *,
        rate_limiter: RateLimiter | None = None,
        hello_limiter: RateLimiter | None = None,
        session_timeout: float = SESSION_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        max_sessions: int = MAX_SESSIONS,
        max_pending: int = MAX_PENDING_HANDSHAKES,
        max_pending_per_host: int = MAX_PENDING_PER_HOST,
        cookie_rotation: float = COOKIE_ROTATION,
        channel_options: dict[str, Any] | None = None,
        pace_rate: float = 0.0,
        pace_burst: float = 0.0,
        exempt: Callable[[str], bool] | None = None,
        max_in_hand: int | None = None,
        pack: bool = True,
    ) -> None:
        """``rate_limiter`` counts every datagram per (address, port); ``hello_limiter``
        counts hellos per host (:func:`host_key`).  ``pace_rate`` and ``pace_burst`` pace
        each session's events (see :class:`ReliableChannel`; 0: not paced).  ``exempt``
        says which source IPs skip the per-host limits (hello rate, pending handshakes): the
        server's exempt networks, so that many local clients (a load test, a bouncer) are
        not taken for one flooding host.  ``max_in_hand`` bounds each session's events
        handed over (Deliver) and not yet reported done with ``handled`` (see
        :class:`ReliableChannel`; None: no bound, and ``handled`` is not needed).  ``pack``:
        agree to packed data envelopes with clients that offer them (False: behave as a
        server that predates them)."""
        self.pack = pack
        self.exempt = exempt
        self.max_in_hand = max_in_hand
        self.pace_rate = pace_rate
        self.pace_burst = pace_burst
        self.rate_limiter = (
            rate_limiter
            if rate_limiter is not None
            else RateLimiter(RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST, MAX_RATE_LIMITED_ADDRESSES)
        )
        self.hello_limiter = (
            hello_limiter
            if hello_limiter is not None
            else RateLimiter(HELLO_RATE_PER_HOST, HELLO_BURST_PER_HOST)
        )
        self.session_timeout = session_timeout
        self.handshake_timeout = handshake_timeout
        self.max_sessions = max_sessions
        self.max_pending = max_pending
        self.max_pending_per_host = max_pending_per_host
        self.cookies = AddressCookies(cookie_rotation)
        self._channel_options = channel_options or {}
        self._stats: Counter[str] = Counter()
        self._sessions: dict[Address, _Session] = {}
        self._pending: dict[Address, _Pending] = {}
        self._pending_per_host: Counter[str] = Counter()
        # Sessions holding events for their pace (see `release`).
        self._held: dict[Address, _Session] = {}

    @property
    def stats(self) -> dict[str, int]:
        """Counters: malformed, forged, unknown_session, oversize, short_hello, rate_limited,
        hello_rate_limited, retries, bad_cookie, handshakes_full, host_handshakes_full,
        sessions_full, duplicates, retransmits, out_of_window, registered, paced (episodes
        of a session's events held for its pace), packed (data envelopes sent with several
        events)."""
        return dict(self._stats)

    def addresses(self) -> list[Address]:
        """Registered (address-proven) sessions."""
        return list(self._sessions)

    def pending_handshakes(self) -> int:
        """Handshakes whose address is proven by a cookie but not yet by the token."""
        return len(self._pending)

    def has_session(self, addr: Address) -> bool:
        return addr in self._sessions

    def _reject(self, addr: Address, counter: str, reason: str) -> list[Action]:
        self._stats[counter] += 1
        return [Rejected(addr, reason)]

    def receive(self, data: bytes, addr: Address, now: float) -> list[Action]:
        """Handle one datagram from ``addr``.  Never raises on bad input."""
        if not self.rate_limiter.allow(addr, now):
            return self._reject(addr, "rate_limited", "rate limited")
        if len(data) > MAX_DATAGRAM_SIZE:
            return self._on_oversize(data, addr)
        try:
            env = decode(data)
        except MalformedDatagram as exc:
            return self._reject(addr, "malformed", str(exc))
        if env.kind == "hello":
            return self._on_hello(env, len(data), addr, now)
        if env.kind not in _TOKEN_KINDS or env.token is None:
            return self._reject(addr, "malformed", f"unexpected {env.kind}")
        actions: list[Action] = []
        session = self._sessions.get(addr)
        if session is None:
            pending = self._pending.get(addr)
            if pending is None:
                return self._reject(addr, "unknown_session", "no session for address")
            if not same_secret(env.token, pending.token):
                return self._reject(addr, "forged", "token mismatch")
            if len(self._sessions) >= self.max_sessions:
                self._forget_pending(addr)
                return self._reject(addr, "sessions_full", "too many sessions")
            session = self._register(addr, pending, now, actions)
        elif not same_secret(env.token, session.token):
            return self._reject(addr, "forged", "token mismatch")
        session.last_heard = now
        if env.kind == "bye":
            del self._sessions[addr]
            # Events held for the pace came before the bye: they are handed over first.
            held = session.channel.take_held()
            return [*actions, *(Deliver(addr, e) for e in held), Drop(addr, env.reason or "quit")]
        delivered, out = session.channel.receive(env, now)
        if env.kind == "keepalive":
            out.append(session.channel.ack_datagram())
        actions.extend(Deliver(addr, event) for event in delivered)
        actions.extend(Send(addr, datagram) for datagram in out)
        self._note_holding(addr, session, actions)
        return actions

    def _note_holding(self, addr: Address, session: _Session, actions: list[Action]) -> None:
        """Keep `_held` (sessions with events held for the pace) true after a hand-over.

        A session enters it when the pace holds an event (one Paced action per episode) and
        leaves it when nothing is held.  While what it holds waits for the consumer
        (``handled``) it stays, so an episode of pacing goes on across such waits."""
        channel = session.channel
        if not channel.holding:
            if self._held:
                self._held.pop(addr, None)
        elif channel.pace_holding and addr not in self._held:
            self._held[addr] = session
            self._stats["paced"] += 1
            actions.append(Paced(addr))

    def handled(self, addr: Address, count: int, now: float) -> list[Action]:
        """The consumer is done with ``count`` events delivered from ``addr`` (see
        ``max_in_hand``): Deliver what was held for it and the pace allows, and the ack."""
        session = self._sessions.get(addr)
        if session is None:
            return []
        delivered, out = session.channel.handed_back(count, now)
        actions: list[Action] = [Deliver(addr, event) for event in delivered]
        actions.extend(Send(addr, datagram) for datagram in out)
        self._note_holding(addr, session, actions)
        return actions

    def next_release(self) -> float | None:
        """When ``release`` has held events to hand over (None: no session holds any for
        the pace now)."""
        earliest: float | None = None
        for addr, session in list(self._held.items()):
            if not session.channel.holding or self._sessions.get(addr) is not session:
                del self._held[addr]  # handed over on receipt, or the session ended
                continue
            at = session.channel.release_at()
            if at is not None and (earliest is None or at < earliest):
                earliest = at
        return earliest

    def release(self, now: float) -> list[Action]:
        """Held events whose pace allows them now (Deliver, in order) and their acks."""
        actions: list[Action] = []
        for addr, session in list(self._held.items()):
            if self._sessions.get(addr) is not session:
                del self._held[addr]  # the session ended meanwhile
                continue
            delivered, out = session.channel.release(now)
            actions.extend(Deliver(addr, event) for event in delivered)
            actions.extend(Send(addr, datagram) for datagram in out)
            if not session.channel.holding:
                del self._held[addr]
        return actions

    def _register(
        self, addr: Address, pending: _Pending, now: float, actions: list[Action]
    ) -> _Session:
        self._forget_pending(addr)
        pace = TokenBucket(self.pace_rate, self.pace_burst, now)
        channel = ReliableChannel(
            pending.token,
            stats=self._stats,
            pace=pace,
            max_in_hand=self.max_in_hand,
            # No ack_delay: the server acknowledges at once, since "taken in" is what paces
            # a client, and it gets few data envelopes (requests, not a room's traffic).
            **{"pack": pending.pack, **self._channel_options},
        )
        session = _Session(pending.token, pending.nonce, channel, now)
        self._sessions[addr] = session
        self._stats["registered"] += 1
        actions.append(Registered(addr, pending.hello["name"]))
        actions.append(Deliver(addr, pending.hello))
        if self.max_in_hand is not None:
            channel.in_hand += 1  # the hello is handed over like any event
        # Tell the client its address is proven, so it stops resending its first ack.
        actions.append(Send(addr, channel.ack_datagram()))
        return session

    def _on_oversize(self, data: bytes, addr: Address) -> list[Action]:
        self._stats["oversize"] += 1
        session = self._sessions.get(addr)
        token = None
        if session is not None:
            # Answer only a datagram that proves it comes from the session's owner.
            try:
                obj = _loads(data)
                token = obj.get("t") if isinstance(obj, dict) else None
            except (UnicodeDecodeError, ValueError, RecursionError):
                token = None
        if session is not None and isinstance(token, str) and same_secret(token, session.token):
            message = f"datagram of {len(data)} bytes exceeds the {MAX_DATAGRAM_SIZE}-byte limit"
            return [ErrorReply(addr, ERROR_DATAGRAM_TOO_LARGE, message)]
        return [Rejected(addr, "datagram too large")]

    def _on_hello(self, env: Envelope, size: int, addr: Address, now: float) -> list[Action]:
        assert env.nonce is not None and env.event is not None
        if size < MIN_HELLO_SIZE:
            return self._reject(addr, "short_hello", "hello not padded")
        session = self._sessions.get(addr)
        if session is not None:
            # The registered session must not be disturbed, whoever sent this.
            if same_secret(env.nonce, session.nonce):
                return self._reject(addr, "duplicates", "late copy of the opening hello")
            return self._reject(addr, "forged", "address already has a session")
        host = host_key(addr)
        limited = self.exempt is None or not self.exempt(str(addr[0]))
        if limited and not self.hello_limiter.allow(host, now):
            return self._reject(addr, "hello_rate_limited", "too many hellos from this host")
        if env.cookie is None or not self.cookies.valid(env.cookie, addr, now):
            # Unproven address: answer statelessly, so a flood costs no memory.  A forged or
            # expired cookie gets a fresh one, which a genuine client simply uses.
            if env.cookie is not None:
                self._stats["bad_cookie"] += 1
            return self._reply_unproven(
                addr, size, encode_retry(env.nonce, self.cookies.issue(addr, now)), "retries"
            )
        pending = self._pending.get(addr)
        if pending is not None and pending.nonce != env.nonce:
            return self._reject(addr, "forged", "handshake in progress for address")
        if pending is None:
            if limited and self._pending_per_host[host] >= self.max_pending_per_host:
                self._expire_pending(now)
            if limited and self._pending_per_host[host] >= self.max_pending_per_host:
                return self._reject(addr, "host_handshakes_full", "too many handshakes from host")
            if len(self._pending) >= self.max_pending:
                self._expire_pending(now)
            if len(self._pending) >= self.max_pending:
                return self._reject(addr, "handshakes_full", "too many handshakes")
            pending = _Pending(env.nonce, new_token(), env.event, now, env.pack and self.pack)
            self._pending[addr] = pending
            self._pending_per_host[host] += 1
        accept = encode_accept(pending.nonce, pending.token, pending.pack)
        return self._reply_unproven(addr, size, accept, None)

    def _reply_unproven(
        self, addr: Address, request_size: int, reply: bytes, counter: str | None
    ) -> list[Action]:
        if not amplification_ok(request_size, len(reply)):  # pragma: no cover - MIN_HELLO_SIZE
            return self._reject(addr, "short_hello", "reply would amplify")
        if counter is not None:
            self._stats[counter] += 1
        return [Send(addr, reply)]

    def _forget_pending(self, addr: Address) -> None:
        if self._pending.pop(addr, None) is None:
            return
        host = host_key(addr)
        self._pending_per_host[host] -= 1
        if self._pending_per_host[host] <= 0:
            del self._pending_per_host[host]

    def _expire_pending(self, now: float) -> None:
        stale = [a for a, p in self._pending.items() if now >= p.created + self.handshake_timeout]
        for addr in stale:
            self._forget_pending(addr)

    def send_event(self, addr: Address, event: OutEvent, now: float) -> list[Action]:
        """Queue ``event`` for the user at ``addr``.

        Returns [] if ``addr`` has no session (it may have just been dropped), or
        [Drop(addr, "send queue full")] if the peer cannot keep up (session forgotten).
        Raises :class:`DatagramTooLarge` if the event cannot fit in one datagram.
        """
        return self.send_events(addr, (event,), now)

    def send_events(self, addr: Address, events: Iterable[OutEvent], now: float) -> list[Action]:
        """Queue ``events`` for the user at ``addr``, in order, as ``send_event`` does each;
        to a client that agreed to packing they go out in as few datagrams as fit."""
        session = self._sessions.get(addr)
        if session is None:
            return []
        try:
            out = session.channel.send_many(events, now)
        except SendQueueFull:
            del self._sessions[addr]
            return [Drop(addr, "send queue full")]
        return [Send(addr, datagram) for datagram in out]

    def close(self, addr: Address, reason: str = "") -> list[Action]:
        """Forget the session (e.g. the hub removed the user) and tell the peer with a bye."""
        session = self._sessions.pop(addr, None)
        self._forget_pending(addr)
        if session is None:
            return []
        return [Send(addr, encode_bye(session.token, reason))]

    def poll(self, now: float) -> list[Action]:
        """Retransmissions, plus Drop for unreachable and silent sessions; expires handshakes."""
        self._expire_pending(now)
        actions: list[Action] = []
        for addr, session in list(self._sessions.items()):
            if now >= session.last_heard + self.session_timeout:
                del self._sessions[addr]
                actions.append(Send(addr, encode_bye(session.token, "timed out")))
                actions.append(Drop(addr, "timed out"))
                continue
            out = session.channel.poll(now)
            if session.channel.failed:
                del self._sessions[addr]
                actions.append(Drop(addr, "peer unreachable"))
                continue
            actions.extend(Send(addr, datagram) for datagram in out)
        return actions

    def unacked(self) -> int:
        """Events sent or queued to any session and not yet acknowledged (for a flush wait)."""
        return sum(session.channel.unacked for session in self._sessions.values())

    def next_deadline(self) -> float | None:
        """Earliest time ``poll`` has work to do (None if there are no sessions or handshakes)."""
        deadlines = [p.created + self.handshake_timeout for p in self._pending.values()]
        for session in self._sessions.values():
            deadlines.append(session.last_heard + self.session_timeout)
            channel_deadline = session.channel.next_deadline()
            if channel_deadline is not None:
                deadlines.append(channel_deadline)
        return min(deadlines, default=None)


class ClientEndpoint:
    """The client's side of one UDP session with the server at ``server``.

    Lifecycle: ``connect`` -> (``Connected``) -> ``send``/``receive``/``poll`` -> ``close`` or
    ``Drop``.  Events sent before the accept are queued and flushed on ``Connected``.  A retry
    from the server is answered at once with the hello carrying its cookie; later hello
    retransmissions carry it too.  A server that answers with an accept straight away (one
    that predates retries) is served as well.
    """

    def __init__(
        self,
        name: str,
        server: Address,
        *,
        nonce: str | None = None,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        session_timeout: float = SESSION_TIMEOUT,
        channel_options: dict[str, Any] | None = None,
        hello_ref: str | int | None = None,
        pack: bool = True,
    ) -> None:
        """``pack``: offer packed data envelopes in the hello (False: behave as a client
        that predates them).  ``channel_options`` go to the session's
        :class:`ReliableChannel`; acks are delayed (``ACK_DELAY``) unless they say
        ``ack_delay=0``."""
        self.name = name
        self.pack = pack
        self.server = server
        self.nonce = nonce if nonce is not None else new_nonce()
        self.keepalive_interval = keepalive_interval
        self.session_timeout = session_timeout
        self._channel_options = channel_options or {}
        self._hello_ref = hello_ref
        # Raises DatagramTooLarge now, not at a retry: room is left for the longest cookie.
        encode_hello(name, self.nonce, hello_ref, "x" * MAX_COOKIE_LENGTH, pack)
        self._hello = encode_hello(name, self.nonce, hello_ref, pack=pack)
        self._cookie: str | None = None
        self._stats: Counter[str] = Counter()
        self.state = "new"  # new -> handshaking -> connected -> closed
        self.close_reason: str | None = None
        self.channel: ReliableChannel | None = None
        self._early: list[Event] = []
        self._confirmed = False
        self._retry_rto = INITIAL_RTO
        self._retry_due = 0.0
        self._started = 0.0
        self._last_sent = 0.0
        self._last_heard = 0.0
        self._give_up_after = float(self._channel_options.get("give_up_after", GIVE_UP_AFTER))

    @property
    def stats(self) -> dict[str, int]:
        """Counters: malformed, forged, wrong_source, duplicates, retransmits, out_of_window,
        retries (distinct cookies answered)."""
        return dict(self._stats)

    @property
    def token(self) -> str | None:
        return self.channel.token if self.channel is not None else None

    def connect(self, now: float) -> list[Action]:
        """Start the handshake: the padded hello datagram."""
        if self.state != "new":
            return []
        self.state = "handshaking"
        self._started = now
        self._retry_due = now + self._retry_rto
        self._last_sent = now
        return [Send(self.server, self._hello)]

    @property
    def queue_full(self) -> bool:
        """Whether ``send`` would raise :class:`SendQueueFull` now: the server takes events
        more slowly than they come (its flood control paces them), so wait for its acks."""
        if self.state == "closed":
            return False
        if self.channel is None:
            return len(self._early) >= MAX_SEND_QUEUE
        return self.channel.queue_full

    def send(self, event: Event, now: float) -> list[Action]:
        """Queue ``event`` for the server.  Raises DatagramTooLarge / SendQueueFull."""
        if not event_fits(event):
            raise DatagramTooLarge(
                f"event needs {data_datagram_size(event)} bytes, limit {MAX_DATAGRAM_SIZE}"
            )
        if self.state == "closed":
            return []
        if self.channel is None:
            if len(self._early) >= MAX_SEND_QUEUE:
                raise SendQueueFull("not connected yet and the queue is full")
            self._early.append(event)
            return []
        return self._sends(self.channel.send(event, now), now)

    def _sends(self, datagrams: list[bytes], now: float) -> list[Action]:
        if datagrams:
            self._last_sent = now
        return [Send(self.server, d) for d in datagrams]

    def receive(self, data: bytes, addr: Address, now: float) -> list[Action]:
        """Handle one datagram; anything not from the server or not valid is dropped."""
        if addr != self.server:
            self._stats["wrong_source"] += 1
            return [Rejected(addr, "not from the server")]
        if self.state in ("new", "closed"):
            return [Rejected(addr, f"state {self.state}")]
        try:
            env = decode(data)
        except MalformedDatagram as exc:
            self._stats["malformed"] += 1
            return [Rejected(addr, str(exc))]
        if env.kind == "accept":
            return self._on_accept(env, now)
        if env.kind == "retry":
            return self._on_retry(env, now)
        if env.kind not in _TOKEN_KINDS or env.token is None:
            self._stats["malformed"] += 1
            return [Rejected(addr, f"unexpected {env.kind}")]
        channel = self.channel
        if channel is None or not same_secret(env.token, channel.token):
            self._stats["forged"] += 1
            return [Rejected(addr, "token mismatch")]
        self._last_heard = now
        self._confirmed = True
        if env.kind == "bye":
            return self._close(env.reason or "closed by server")
        delivered, out = channel.receive(env, now)
        if env.kind == "keepalive":
            out.append(channel.ack_datagram())
        actions: list[Action] = [Deliver(addr, event) for event in delivered]
        actions.extend(self._sends(out, now))
        return actions

    def _on_retry(self, env: Envelope, now: float) -> list[Action]:
        assert env.nonce is not None and env.cookie is not None
        if not same_secret(env.nonce, self.nonce):
            self._stats["forged"] += 1
            return [Rejected(self.server, "nonce mismatch")]
        if self.channel is not None or env.cookie == self._cookie:
            # Late, or a second answer to a retransmitted hello: one hello per cookie is
            # enough, so a server (or a duplicating path) cannot make us loop.
            self._stats["duplicates"] += 1
            return []
        self._stats["retries"] += 1
        self._cookie = env.cookie
        self._hello = encode_hello(self.name, self.nonce, self._hello_ref, env.cookie, self.pack)
        self._retry_rto = INITIAL_RTO
        self._retry_due = now + self._retry_rto
        return self._sends([self._hello], now)

    def _on_accept(self, env: Envelope, now: float) -> list[Action]:
        assert env.nonce is not None and env.token is not None
        if not same_secret(env.nonce, self.nonce):
            self._stats["forged"] += 1
            return [Rejected(self.server, "nonce mismatch")]
        if self.channel is not None:
            self._stats["duplicates"] += 1
            return []
        self.state = "connected"
        options: dict[str, Any] = {
            "ack_delay": ACK_DELAY,
            "pack": self.pack and env.pack,
            **self._channel_options,
        }
        self.channel = ReliableChannel(env.token, stats=self._stats, **options)
        self._last_heard = now
        self._retry_rto = INITIAL_RTO
        self._retry_due = now + self._retry_rto
        self._started = now
        actions: list[Action] = [Connected(self.server, env.token)]
        # The first token-bearing datagram proves our address; an ack is the smallest one.
        out = [self.channel.ack_datagram()]
        early, self._early = self._early, []
        if early:
            out.extend(self.channel.send_many(early, now))
        actions.extend(self._sends(out, now))
        return actions

    def flush_acks(self, now: float) -> list[Action]:
        """The delayed ack, if one waits: call once every datagram waiting was received."""
        if self.state != "connected" or self.channel is None:
            return []
        return self._sends(self.channel.flush_acks(), now)

    def close(self, reason: str = "") -> list[Action]:
        """End the session: a best-effort bye (no retransmission)."""
        token = self.token
        if self.state == "closed":
            return []
        self.state = "closed"
        self.close_reason = reason or "closed"
        return [Send(self.server, encode_bye(token, reason))] if token else []

    def _close(self, reason: str) -> list[Action]:
        self.state = "closed"
        self.close_reason = reason
        return [Drop(self.server, reason)]

    def poll(self, now: float) -> list[Action]:
        """Hello/ack retries, retransmissions, keepalives, and Drop on failure or silence."""
        if self.state in ("new", "closed"):
            return []
        channel = self.channel
        unproven = channel is None or not self._confirmed
        if unproven and now >= self._started + self._give_up_after:
            return self._close("peer unreachable")
        if channel is None:
            if now < self._retry_due:
                return []
            self._stats["retransmits"] += 1
            self._bump_retry(now)
            return self._sends([self._hello], now)
        if now >= self._last_heard + self.session_timeout:
            return self._close("timed out")
        out = channel.poll(now)
        if channel.failed:
            return self._close("peer unreachable")
        if not self._confirmed and now >= self._retry_due:
            self._bump_retry(now)
            # The server's answer to our first proof was lost (or the proof was).  A pure ack
            # gets no answer from a registered session; a keepalive always gets an ack.
            out.append(encode_keepalive(channel.token, channel.ack_number))
        elif not out and now >= self._last_sent + self.keepalive_interval:
            out.append(encode_keepalive(channel.token, channel.ack_number))
        return self._sends(out, now)

    def _bump_retry(self, now: float) -> None:
        self._retry_rto = min(self._retry_rto * 2, MAX_RTO)
        self._retry_due = now + self._retry_rto

    def next_deadline(self) -> float | None:
        """Earliest time ``poll`` has work to do; None once closed."""
        if self.state in ("new", "closed"):
            return None
        channel = self.channel
        if channel is None:
            return min(self._retry_due, self._started + self._give_up_after)
        deadlines = [
            self._last_heard + self.session_timeout,
            self._last_sent + self.keepalive_interval,
        ]
        if not self._confirmed:
            deadlines += [self._retry_due, self._started + self._give_up_after]
        channel_deadline = channel.next_deadline()
        if channel_deadline is not None:
            deadlines.append(channel_deadline)
        return min(deadlines)
