"""Server configuration: one table of settings, read from flags, environment and a TOML file.

Precedence: command-line flag, then THREADCHAT_<NAME> environment variable, then the
`--config` TOML file (same keys, with `_` or `-`), then the default. Each setting is one
field of `Config`; its metadata gives the help text, so `serve --help` documents every key.
"""

import argparse
import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "THREADCHAT_"


def setting(default: Any, help: str, *, factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    host: str = setting("127.0.0.1", "address to listen on (0.0.0.0 or :: for every interface)")
    line_port: int = setting(7000, "TCP port of the native line protocol (0 disables it)")
    udp_port: int = setting(7000, "UDP port of the native JSON datagram protocol (0 disables it)")
    udp_timeout: float = setting(60.0, "seconds of silence before a UDP user is removed")
    log_level: str = setting("info", "log level: debug, info, warning or error")
    server_name: str = setting("threadchat", "name the server gives itself to clients")
    server_info: str = setting(
        "a threadchat server", "one line describing the server (IRC LINKS shows it)"
    )
    max_line: int = setting(4096, "longest accepted line in bytes; longer lines are dropped")
    flood_burst: int = setting(20, "lines a client may send at once before flood control")
    flood_rate: float = setting(
        10.0, "lines per second a client may send (0 turns flood control off)"
    )
    quiet_room_size: int = setting(
        200, "rooms with more members than this do not announce joins, leaves and quits"
    )
    sendq: int = setting(1048576, "bytes queued for one client before it is cut off")
    relay_interval: float = setting(
        0.008,
        "seconds between two commits of stored messages at least: the messages of that time "
        "share one commit, and one send to each client (0: commit and relay each at once)",
    )
    name_timeout: float = setting(30.0, "seconds a new connection has to give its name")
    ping_interval: float = setting(60.0, "seconds of silence before a JSON client is pinged")
    ping_timeout: float = setting(60.0, "seconds a pinged client has to answer")
    line_timeout: float = setting(
        60.0, "seconds a line may take from its first byte to its end (0: no limit)"
    )
    max_clients: int = setting(
        0,
        "clients at once in all, TCP and UDP (0: the open-file limit less a reserve of 64)",
    )
    max_connections_per_ip: int = setting(
        16, "clients at once from one address, IPv6 /64 (0: no limit)"
    )
    connect_rate_per_ip: float = setting(
        0.1, "connections per second one address may open after its burst (0: no limit)"
    )
    connect_burst_per_ip: int = setting(
        32, "connections one address may open at once before --connect-rate-per-ip applies"
    )
    limit_exempt: list[str] = setting(  # noqa: RUF009 (a field with a factory, see admins)
        None,
        "networks (CIDR, repeatable or comma-separated) exempt from the per-address limits; "
        "'none' exempts nothing",
        factory=lambda: ["127.0.0.0/8", "::1/128"],
    )
    irc_port: int = setting(6667, "TCP port of the IRC protocol (0 disables it)")
    irc_password: str | None = setting(
        None, "connection password IRC clients must send with PASS (default: none)"
    )
    oper: list[str] = field(
        default_factory=list,
        metadata={"help": "IRC operator NAME:PASSWORD (repeatable); OPER NAME PASSWORD uses it"},
    )
    motd: str = setting("", "message of the day shown to IRC clients (empty: none, 422)")
    web_port: int = setting(
        8080, "TCP port of the chat page and its WebSocket at /ws (0 disables it)"
    )
    web_origin: list[str] = field(
        default_factory=list,
        metadata={
            "help": "page origin allowed to open the WebSocket, e.g. https://chat.example.com "
            "(repeatable; * allows any; default: the page's own origin)"
        },
    )
    # Storage, history, accounts, moderation, TLS (see docs/history.md).
    data_dir: str = setting("./data", "directory of the database (threadchat.db) and TLS files")
    database_url: str = setting(
        "",
        "postgresql://USER@HOST:PORT/DB: keep messages, rooms and accounts in PostgreSQL "
        "(shared by every node) instead of threadchat.db in --data-dir",
    )
    # Several nodes as one chat (docs/scaling.md).
    redis_url: str = setting(
        "", "redis://HOST:PORT/DB: link this node with the others sharing that Redis"
    )
    node_name: str = setting(
        "", "this node's name among the others (default: host name and first port)"
    )
    node_expiry: float = setting(
        15.0, "seconds after which a silent node counts as lost and its users leave"
    )
    redis_prefix: str = setting(
        "threadchat", "first part of every Redis key (one Redis may serve several chats)"
    )
    history: bool = setting(True, "store room and private messages (--no-history: relay only)")
    history_on_join: int = setting(50, "stored messages a user is shown on joining a room")
    history_days: float = setting(0.0, "delete messages older than this many days (0: never)")
    # setting() with a factory returns a field(default_factory=...), which RUF009 cannot see.
    admins: list[str] = setting(None, "server administrators (account names)", factory=list)  # noqa: RUF009
    nick_enforcement: str = setting(
        "strict", "registered names: strict (guests refused) or grace (renamed after 30 s)"
    )
    multiclient: bool = setting(
        True, "a logged-in account may connect from several clients at once under one nick"
    )
    always_on_expiry: float = setting(
        30.0, "days an always-on account stays in its rooms without any connection"
    )
    tls_cert: str = setting("", "PEM certificate (chain): every TCP listener speaks TLS")
    tls_key: str = setting("", "PEM private key of --tls-cert (default: in the cert file)")
    tls_self_signed: bool = setting(
        False, "TLS with a self-signed certificate made once and kept in the data directory"
    )


def _settings() -> list[dataclasses.Field]:
    return list(dataclasses.fields(Config))


def _base_type(annotation: Any) -> Any:
    """The scalar type of a field: int, float, str, bool, or list for list[str]."""
    origin = typing.get_origin(annotation)
    if origin is list:
        return list
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    return annotation


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --config and one flag per setting (default SUPPRESS, so absence is visible)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML file with any of these keys (env {ENV_PREFIX}CONFIG)",
    )
    for f in _settings():
        kind = _base_type(f.type)
        env = ENV_PREFIX + f.name.upper()
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata['help']} (default {default!r}; env {env})"
        if kind is bool:
            parser.add_argument(
                _flag(f.name),
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif kind is list:
            parser.add_argument(
                _flag(f.name), action="append", default=argparse.SUPPRESS, help=help_text
            )
        else:
            parser.add_argument(_flag(f.name), type=kind, default=argparse.SUPPRESS, help=help_text)


class ConfigError(Exception):
    pass


def _convert(name: str, kind: Any, value: Any, source: str) -> Any:
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is list:
            if isinstance(value, list):
                return [str(v) for v in value]
            return [v.strip() for v in str(value).split(",") if v.strip()]
        if kind is float and isinstance(value, int | float | str):
            return float(value)
        if kind is int and isinstance(value, int | str) and not isinstance(value, bool):
            return int(value)
        if kind is str and isinstance(value, str):
            return value
    except ValueError:
        pass
    raise ConfigError(f"{source}: {name} = {value!r} is not a valid {kind.__name__}")


def load(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Config:
    """Merge flags, environment and config file into a Config (raises ConfigError)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None) or environ.get(ENV_PREFIX + "CONFIG")
    known = {f.name: _base_type(f.type) for f in _settings()}
    if config_path:
        try:
            table = tomllib.loads(Path(config_path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as problem:
            raise ConfigError(f"cannot read config file {config_path}: {problem}") from problem
        for key, value in table.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"{config_path}: unknown key {key!r}")
            values[name] = _convert(name, known[name], value, config_path)
    for name, kind in known.items():
        env = ENV_PREFIX + name.upper()
        if env in environ:
            values[name] = _convert(name, kind, environ[env], f"environment {env}")
        if hasattr(args, name):
            values[name] = _convert(name, kind, getattr(args, name), _flag(name))
    return Config(**values)


def describe(config: Config) -> Sequence[str]:
    return [f"{f.name} = {getattr(config, f.name)!r}" for f in _settings()]
