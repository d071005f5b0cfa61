"""One IRC client's state and what it does with the lines it sends (sans-I/O).

`IrcSession` holds what IRC keeps per connection: the line reader, registration and CAP
negotiation (`wire.Registration`), the enabled capabilities and the encoder they select
(`codec.IrcCodec`), the SASL exchange, and the hub `User` once registered. It reaches its
transport only through `IrcTransport` and the server's settings only through `IrcSettings`;
the command handlers (`commands.COMMANDS`) act on the session.

Runs on the connection's reader thread, inside its delivery batch; the hub calls the codec
(`encode`, `codec_key`) from any thread.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Protocol

from threadchat.core import names
from threadchat.core.events import Event
from threadchat.core.hub import Connection, Hub, HubError, User
from threadchat.protocols.irc import commands, registration, replies
from threadchat.protocols.irc import metadata as irc_metadata
from threadchat.protocols.irc.codec import IrcCodec, source_of
from threadchat.protocols.irc.messages import MultilineBatch
from threadchat.protocols.irc.sasl import SaslState
from threadchat.protocols.irc.wire import (
    BufferOverflow,
    IrcLineReader,
    IrcParseError,
    LineTooLong,
    MalformedLine,
    Message,
    MessageReceived,
    Numeric,
    escape_tag_value,
    parse,
    reply_line,
    reply_with_text,
)

log = logging.getLogger(__name__)

# Reference tags of labeled-response batches (unique on the server, so on each connection).
_label_batches = itertools.count(1)
_MESSAGE_COMMANDS = frozenset({"PRIVMSG", "NOTICE", "TAGMSG"})


def _with_tag(line: bytes, tag: bytes) -> bytes:
    """`line` (one encoded IRC line without its end) with one more tag."""
    if line.startswith(b"@"):
        return b"@" + tag + b";" + line[1:]
    return b"@" + tag + b" " + line


def _label_of(line: str) -> str | None:
    """The `label` tag of a line that is not a valid message (an unknown command word), so
    its error is labeled too; None without one."""
    if not line.startswith("@"):
        return None
    try:
        tags = parse(line.split(" ", 1)[0] + " PING x").tags
    except IrcParseError:
        return None
    return tags.get("label", "") if "label" in tags else None


def _has_batch_tag(line: bytes) -> bool:
    """Whether `line` belongs to a batch already (a nested one's lines keep theirs)."""
    if not line.startswith(b"@"):
        return False
    tags = line[1:].split(b" ", 1)[0]
    return any(t.startswith(b"batch=") for t in tags.split(b";"))


def _one_batch(lines: list[bytes]) -> bool:
    """Whether `lines` are one batch: its opening line, lines tagged with its reference, and
    its end (a multiline echo is one)."""
    first = parse(lines[0].decode("utf-8", "replace"))
    if first.command != "BATCH" or not first.params or not first.params[0].startswith("+"):
        return False
    ref = first.params[0][1:]
    last = lines[-1].split(b" ")
    if last[-2:] != [b"BATCH", b"-" + ref.encode()] or _has_batch_tag(lines[-1]):
        return False
    inner = b"batch=" + ref.encode()
    return all(
        line.startswith(b"@") and inner in line[1:].split(b" ", 1)[0].split(b";")
        for line in lines[1:-1]
    )


class IrcTransport(Connection, Protocol):
    """What a session needs of the transport that carries it (besides being the hub's
    `Connection` for its user): a name for logs, flood pacing, and flushing."""

    label: str

    def throttle(self) -> None:
        """Take a flood token for one line; pauses reading when none is left."""
        ...

    def flush_now(self) -> None:
        """Send what this read queued so far (to every recipient), then keep batching."""
        ...

    def connection_count(self) -> int:
        """How many connections the server has, registered or not (for LUSERS)."""
        ...

    def begin_capture(self, *, deliveries: bool) -> Callable[[bytes], None]:
        """Keep the response to one labeled command instead of queueing it: returns the
        function the session sends its own replies with until `end_capture` (all of those
        are kept), and with `deliveries` also keeps what the hub delivers to this connection
        from this thread (what other threads deliver meanwhile is queued as usual)."""
        ...

    def end_capture(self) -> list[bytes]:
        """Stop keeping; what was kept since `begin_capture`, in order."""
        ...


class IrcSettings(Protocol):
    """The server settings IRC reads (the server's `Config` has them all)."""

    server_name: str
    server_info: str
    irc_password: str | None
    oper: list[str]
    motd: str
    flood_rate: float
    flood_burst: int


class IrcSession:
    # One per connection: slots keep an idle connection's memory what it was in one class.
    __slots__ = (
        "closing",
        "codec",
        "config",
        "host",
        "hub",
        "label",
        "labeling",
        "multiline",
        "pending_metadata",
        "reader",
        "reg",
        "registered_account",
        "sasl",
        "sasl_account",
        "send_bytes",
        "server_name",
        "transport",
        "user",
    )

    def __init__(
        self,
        hub: Hub,
        config: IrcSettings,
        transport: IrcTransport,
        host: str,
        *,
        send_bytes: Callable[[bytes], None] | None = None,
        tls: bool = False,
    ) -> None:
        self.hub = hub
        self.config = config
        self.transport = transport
        self.label = transport.label
        # Bound once: replies and echoes go straight to the transport's queue. A transport
        # that carries lines in frames of its own (WebSocket) gives its framer instead.
        self.send_bytes = send_bytes or transport.send_bytes
        self.server_name = config.server_name
        # The peer's address as IRC shows it (see `codec.safe_host`).
        self.host = host
        self.reader = IrcLineReader()
        self.reg = registration.new_registration(
            hub,
            self.server_name,
            open_server=config.irc_password is None,
            tls=tls,
        )
        self.codec = IrcCodec(hub, self.server_name, host, self.label)
        # Made by the first AUTHENTICATE: most clients never send one.
        self.sasl: SaslState | None = None
        # Accounts (sasl.py): logged in by SASL before registration; and at it.
        self.sasl_account: str | None = None
        self.registered_account: str | None = None
        self.user: User | None = None
        # Metadata set before registering (IRCv3 metadata before-connect).
        self.pending_metadata = irc_metadata.Pending()
        # Set by `close_link`: the reason the link ends once this read's replies are out.
        self.closing: str | None = None
        # A draft/multiline batch the client is sending (messages.py), or None.
        self.multiline: MultilineBatch | None = None
        # The label whose response is being kept now (see `labeled`), or None.
        self.labeling: str | None = None

    @property
    def caps(self) -> frozenset[str]:
        return self.codec.caps

    @caps.setter
    def caps(self, value: frozenset[str]) -> None:
        self.codec.caps = value
        if self.user is not None:
            self.user.watch_details = "extended-monitor" in value
            self.hub.codec_changed(self.user)

    def event_messages(self, event: Event) -> list[Message]:
        return self.codec.event_messages(event)

    # -- replies ---------------------------------------------------------------------------

    @property
    def nick(self) -> str:
        return self.user.nick if self.user is not None else "*"

    @property
    def mask(self) -> str:
        assert self.user is not None
        return source_of(self.user)

    def send(self, *messages: Message) -> None:
        for message in messages:
            try:
                self.send_bytes(message.to_bytes())
            except ValueError:
                # A reply built from a client's own words; never worth the connection.
                log.warning("%s: unsendable reply %r", self.label, message)

    def numeric(self, numeric: Numeric | str, *params: str) -> None:
        try:
            self.send_bytes(reply_line(self.server_name, numeric, self.nick, params))
        except ValueError:
            # A reply built from a client's own words; never worth the connection.
            log.warning("%s: unsendable reply %s %r", self.label, numeric, params)

    def error(self, numeric: Numeric, *params: str) -> None:
        self.send(reply_with_text(self.server_name, numeric, self.nick, *params))

    def standard_reply(self, kind: str, command: str, code: str, *context: str) -> None:
        """An IRCv3 standard reply: `FAIL`, `WARN` or `NOTE` <command> <code> [<context>...]
        :<description> (the last of `context` is the description). Every error added since
        IRCv3 uses these rather than new numerics."""
        self.send(Message(kind, [command, code, *context], self.server_name))

    def fail(self, command: str, code: str, *context: str) -> None:
        self.standard_reply("FAIL", command, code, *context)

    def notice(self, text: str) -> None:
        self.send(Message("NOTICE", [self.nick, text], self.server_name))

    def hub_error(self, problem: HubError, *, nick: str = "*", channel: str = "*") -> None:
        replies.hub_error(self, problem, nick=nick, channel=channel)

    def close_link(self, reason: str, quit_reason: str | None = None) -> None:
        """Say ERROR; the link ends once this read's replies are out."""
        self.send(replies.closing_link(self.host, reason))
        self.closing = quit_reason or reason

    def flush_now(self) -> None:
        self.transport.flush_now()

    def echo(self, event: Event) -> None:
        """For echo-message: called by the hub right after the relay, so the echo carries the
        stored msgid and time, and comes in order with everything else this user is sent."""
        data = self.codec.encode(event)
        if data:
            self.send_bytes(data)

    # -- what the transport calls ----------------------------------------------------------

    def receive_data(self, data: bytes) -> str | None:
        """Handle one read's bytes; the reason to end the link, or None to read on."""
        pipeline = self.hub.pipeline
        for item in self.reader.receive_data(data):
            # The usual line first, with no call it does not need: this runs per message.
            if type(item) is MessageReceived:
                message = item.message
                if message.command != "PRIVMSG":
                    # Nothing may overtake queued messages: no other command (a PART, a
                    # NOTICE, which is relayed at once, a CHATHISTORY that should see them).
                    pipeline.complete()
                if self.user is not None:
                    self.transport.throttle()  # a flood pause completes what is queued
                tags = message.tags
                # A valueless label labels nothing, as if there were none.
                label = tags.get("label") if tags else None
                if label is not None and "labeled-response" in self.codec.caps:
                    self.labeled(label, self._run, message, item.latin1)
                elif item.latin1:
                    self._run(message, True)
                else:
                    commands.dispatch(self, message)
            else:
                # Nor may a reply to a bad line.
                pipeline.complete()
                match item:
                    case LineTooLong():
                        self.error(Numeric.ERR_INPUTTOOLONG)
                    case MalformedLine(line=line, reason=reason):
                        caps = self.codec.caps
                        label = _label_of(line) if "labeled-response" in caps else None
                        if label is not None:
                            self.labeled(label, self._malformed, line, reason)
                        else:
                            self._malformed(line, reason)
                    case BufferOverflow():
                        self.close_link("Input buffer exceeded: no newline in 64 KiB")
            if self.closing is not None:
                return self.closing
        return None

    def _run(self, message: Message, latin1: bool) -> None:
        if latin1:
            # UTF8ONLY (in ISUPPORT): the line is refused, not passed on as latin-1.
            self.fail(message.command, "INVALID_UTF8", "Message rejected: not UTF-8")
        else:
            commands.dispatch(self, message)

    def labeled(self, label: str, handle: Callable[..., None], *args: object) -> None:
        """IRCv3 labeled-response: run the command keeping everything it makes this
        connection receive, then send that with the label: one line tagged, one batch
        (a multiline echo) tagged on its opening line, several lines in a
        `labeled-response` batch (bare and unlabeled without `batch`), none as an `ACK`.
        Within another labeled response (a labeled line that ends a labeled batch), the
        outer one takes what it makes."""
        if self.labeling is not None:
            handle(*args)
            return
        # PRIVMSGs queued before it are not part of its response: relayed (echoed) first.
        self.hub.pipeline.complete()
        # A message's response is its echo: a copy delivered to the sender as its recipient
        # (a message to oneself) is not part of it. So for a multiline batch's.
        message = args[0] if args else None
        deliveries = not (
            isinstance(message, Message) and message.command in _MESSAGE_COMMANDS
        ) and not isinstance(message, MultilineBatch)
        # Restored afterwards as it was (a WebSocket session's is its framer).
        previous = self.send_bytes
        self.send_bytes = self.transport.begin_capture(deliveries=deliveries)
        self.labeling = label
        try:
            handle(*args)
            # Queued PRIVMSGs are relayed (and echoed) now, so the echo is in the response.
            self.hub.pipeline.complete()
        finally:
            self.labeling = None
            captured = self.transport.end_capture()
            self.send_bytes = previous
        lines = [line for chunk in captured for line in chunk.split(b"\r\n") if line]
        tag = b"label=" + escape_tag_value(label).encode()
        if not lines:
            batch = self.multiline
            if batch is not None and batch.label == label and not batch.lines:
                return  # a multiline batch opened: its end gets the response (messages.py)
            ack = Message("ACK", [], self.server_name, {"label": label})
            self.send_bytes(ack.to_bytes())
        elif len(lines) == 1:
            self.send_bytes(_with_tag(lines[0], tag) + b"\r\n")
        elif "batch" not in self.codec.caps:
            self.send_bytes(b"".join(line + b"\r\n" for line in lines))
        elif _one_batch(lines):
            # A batch of a type that covers the whole response: labeled itself.
            lines[0] = _with_tag(lines[0], tag)
            self.send_bytes(b"".join(line + b"\r\n" for line in lines))
        else:
            ref = f"L{next(_label_batches)}"
            start = Message("BATCH", ["+" + ref, "labeled-response"], self.server_name)
            start.tags["label"] = label
            end = Message("BATCH", ["-" + ref], self.server_name)
            in_batch = b"batch=" + ref.encode()
            body = b"".join(
                (line if _has_batch_tag(line) else _with_tag(line, in_batch)) + b"\r\n"
                for line in lines
            )
            self.send_bytes(start.to_bytes() + body + end.to_bytes())

    def _malformed(self, line: str, reason: str) -> None:
        words = [w for w in line.split(" ") if w and w[0] not in "@:"]
        word = words[0] if words else "*"
        if reason.startswith("invalid command") and not names.text_error(word):
            self.error(Numeric.ERR_UNKNOWNCOMMAND, word)
        else:
            self.numeric(Numeric.ERR_UNKNOWNERROR, "*", f"Malformed line: {reason}")

    def flood_notice(self) -> None:
        self.notice(
            f"*** Flood control: more than {self.config.flood_burst} lines at once or "
            f"{self.config.flood_rate:g} lines/s; your lines are now read more slowly"
        )

    def closed(self, reason: str) -> None:
        """The link is gone: the user leaves the hub (after their queued messages)."""
        if self.user is not None:
            reason = {"EOF": "Connection closed"}.get(reason, reason)
            self.hub.detach(self.user, self.transport, reason)

    def release(self) -> None:
        """The link has ended and nothing more will be read from it: let go of the transport
        (and its sending end). The two hold each other; without this the pair waits for the
        rarely run garbage collector (docs/architecture.md, "Garbage collection") instead of
        being freed at once."""
        del self.transport, self.send_bytes

    # -- the shared lifecycle's hooks (`TcpConnection.tick`): what IRC says ----------------

    @property
    def registered(self) -> bool:
        return self.user is not None

    def registration_timeout(self, limit: float) -> str:
        log.info("%s: not registered within %gs", self.label, limit)
        reason = "Registration timeout"
        self.send(replies.closing_link(self.host, reason))
        return reason

    @property
    def pending(self) -> int:
        """Bytes received of a line not yet ended (for the transport's line timeout)."""
        return self.reader.pending

    def line_timeout(self, limit: float) -> str:
        reason = f"Line timeout: no line end within {limit:g} seconds"
        self.send(replies.closing_link(self.host, reason))
        return reason

    def ping(self) -> None:
        self.send(Message("PING", [self.server_name]))

    def ping_timeout(self, waited: float) -> str:
        reason = f"Ping timeout: {int(waited)} seconds"
        self.send(replies.closing_link(self.host, reason))
        return reason
