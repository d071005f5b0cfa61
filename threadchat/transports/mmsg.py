"""Many datagrams per system call: Linux's recvmmsg and sendmmsg, called without releasing
the interpreter lock.

Why: every socket call of Python's `socket` module releases the interpreter lock, and a
thread must win it back afterwards. On a loaded server (a thousand reader threads, the
1,000-client soak) winning it back took the UDP receive thread about a millisecond each
time: it spent 90 % of its time waiting after `recvfrom` and `sendto` (py-spy), handled
only about 800 datagrams a second for every UDP user together, and the socket's receive
buffer overflowed (docs/reliability.md). A shorter switch interval
(`sys.setswitchinterval(0.0005)`) cured the UDP failures too, but cost the whole server a
third or more of its throughput; this costs nothing elsewhere. Here one call takes up to `BATCH`
waiting datagrams, or sends a whole list, with the lock held: the socket is non-blocking,
so the call never waits, and the thread keeps the lock for the whole batch.

No library on PyPI offers these calls; `ctypes` reaches glibc's. Where they are missing
(another libc or system), `available()` is False and the listener uses `recvfrom` and
`sendto` as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import socket
import struct
import sys
from typing import Any

# Datagrams per recvmmsg call; more wait for the next call (the caller loops).
BATCH = 64

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_SOCKADDR_SPACE = 128  # sizeof(struct sockaddr_storage)


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),  # one iovec each here, set by address
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_IOVEC_SIZE = ctypes.sizeof(_IoVec)
_MMSGHDR_SIZE = ctypes.sizeof(_MMsgHdr)


def _load() -> tuple[Any, Any] | None:
    """glibc's recvmmsg and sendmmsg as functions that keep the interpreter lock."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        # PyDLL, not CDLL: the call keeps the interpreter lock (the point of this module).
        libc = ctypes.PyDLL(name, use_errno=True)
        recvmmsg = libc.recvmmsg
        sendmmsg = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recvmmsg.argtypes = [
        ctypes.c_int, ctypes.POINTER(_MMsgHdr), ctypes.c_uint, ctypes.c_int, ctypes.c_void_p
    ]  # fmt: skip
    recvmmsg.restype = ctypes.c_int
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


_calls = _load()


def available() -> bool:
    return _calls is not None


def _decode_address(raw: bytes) -> tuple[Any, ...]:
    """A sockaddr as Python's `recvfrom` gives it: (host, port) or, for IPv6, (host, port,
    flowinfo, scope_id)."""
    family = int.from_bytes(raw[0:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == _AF_INET:
        return (socket.inet_ntop(_AF_INET, raw[4:8]), port)
    if family == _AF_INET6:
        flowinfo = int.from_bytes(raw[4:8], "big")
        scope_id = int.from_bytes(raw[24:28], sys.byteorder)
        host = socket.inet_ntop(_AF_INET6, raw[8:24])
        if scope_id:  # a link-local address names its interface, as Python's does
            host = socket.getnameinfo((host, port, flowinfo, scope_id), socket.NI_NUMERICHOST)[0]
        return (host, port, flowinfo, scope_id)
    raise OSError(errno.EAFNOSUPPORT, f"address family {family}")


def _encode_address(addr: tuple[Any, ...]) -> bytes:
    """The sockaddr bytes of an address as `recvfrom` gives it (the reverse of the above)."""
    host = addr[0].partition("%")[0]
    if len(addr) == 2:
        return (
            _AF_INET.to_bytes(2, sys.byteorder)
            + struct.pack("!H", addr[1])
            + socket.inet_pton(_AF_INET, host)
            + bytes(8)
        )
    flowinfo = addr[2] if len(addr) > 2 else 0
    scope_id = addr[3] if len(addr) > 3 else 0
    return (
        _AF_INET6.to_bytes(2, sys.byteorder)
        + struct.pack("!HI", addr[1], flowinfo)
        + socket.inet_pton(_AF_INET6, host)
        + scope_id.to_bytes(4, sys.byteorder)
    )


class Receiver:
    """`recv_many` for one non-blocking UDP socket, used by one thread.

    Its buffers are made once: `BATCH` slots of `size` bytes in an anonymous mapping, so
    only the pages datagrams were written to are ever resident (a slot must hold the
    largest datagram, 64 KiB, for an oversize one to be seen whole).
    """

    def __init__(self, sock: socket.socket, size: int) -> None:
        assert _calls is not None
        self._fd = sock.fileno()
        self._size = size
        self._memory = mmap.mmap(-1, BATCH * size)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._memory))
        self._names = (ctypes.c_char * (_SOCKADDR_SPACE * BATCH))()
        names = ctypes.addressof(self._names)
        self._iovecs = (_IoVec * BATCH)()
        self._headers = (_MMsgHdr * BATCH)()
        iovecs = ctypes.addressof(self._iovecs)
        for k in range(BATCH):
            self._iovecs[k].iov_base = base + k * size
            self._iovecs[k].iov_len = size
            header = self._headers[k].msg_hdr
            header.msg_name = names + k * _SOCKADDR_SPACE
            header.msg_iov = iovecs + k * _IOVEC_SIZE
            header.msg_iovlen = 1

    def recv_many(self) -> list[tuple[bytes, tuple[Any, ...]]]:
        """The datagrams waiting now (at most `BATCH`), as (data, address); [] when none.
        Raises OSError as `recvfrom` would (e.g. an ICMP error of an earlier send)."""
        assert _calls is not None
        headers = self._headers
        for k in range(BATCH):
            headers[k].msg_hdr.msg_namelen = _SOCKADDR_SPACE
        count = _calls[0](self._fd, headers, BATCH, socket.MSG_DONTWAIT, None)
        if count < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return []
            raise OSError(code, errno.errorcode.get(code, "recvmmsg failed"))
        memory = self._memory
        names = self._names
        size = self._size
        out = []
        for k in range(count):
            try:
                address = _decode_address(names[k * _SOCKADDR_SPACE : k * _SOCKADDR_SPACE + 28])
            except OSError:
                continue  # not an IP sender (cannot happen on a UDP/IP socket): ignored
            length = headers[k].msg_len
            out.append((memory[k * size : k * size + length], address))
        return out

    def close(self) -> None:
        del self._iovecs, self._headers
        self._memory.close()


class Sender:
    """`send_many` for one non-blocking UDP socket. Any thread may call it: each call builds
    its own arrays, and the address cache is a dict (one get or set at a time)."""

    def __init__(self, sock: socket.socket) -> None:
        assert _calls is not None
        self._fd = sock.fileno()
        # sockaddr bytes by address: sessions send to the same few thousand addresses.
        self._names: dict[tuple[Any, ...], bytes] = {}

    def send_many(self, datagrams: list[tuple[bytes, tuple[Any, ...]]]) -> list[OSError]:
        """Send each (data, address) as `sendto` with MSG_DONTWAIT would; returns the errors
        (a full buffer, an unreachable peer): the datagram that failed is skipped, as lost."""
        assert _calls is not None
        errors: list[OSError] = []
        count = len(datagrams)
        if not count:
            return errors
        names = self._names
        if len(names) > 16384:
            names.clear()
        headers = (_MMsgHdr * count)()
        iovecs = (_IoVec * count)()
        iovecs_at = ctypes.addressof(iovecs)
        keep = []  # the buffers must live until the call returns
        k = 0
        for data, addr in datagrams:
            name = names.get(addr)
            if name is None:
                try:
                    name = names[addr] = _encode_address(addr)
                except (OSError, ValueError, TypeError, IndexError, OverflowError) as problem:
                    errors.append(OSError(errno.EINVAL, f"bad address {addr!r}: {problem}"))
                    continue
            data_buffer = ctypes.c_char_p(data)
            name_buffer = ctypes.c_char_p(name)
            keep.append((data_buffer, name_buffer))
            iovecs[k].iov_base = ctypes.cast(data_buffer, ctypes.c_void_p)
            iovecs[k].iov_len = len(data)
            header = headers[k].msg_hdr
            header.msg_name = ctypes.cast(name_buffer, ctypes.c_void_p)
            header.msg_namelen = len(name)
            header.msg_iov = iovecs_at + k * _IOVEC_SIZE
            header.msg_iovlen = 1
            k += 1
        count = k  # those whose address could be encoded
        headers_at = ctypes.addressof(headers)
        start = 0
        while start < count:
            sent = _calls[1](
                self._fd, headers_at + start * _MMSGHDR_SIZE, count - start, socket.MSG_DONTWAIT
            )
            if sent > 0:
                start += sent
                continue
            code = ctypes.get_errno()
            if code == errno.EINTR:
                continue
            errors.append(OSError(code, errno.errorcode.get(code, "sendmmsg failed")))
            start += 1  # that datagram is lost, as with a failed sendto; go on with the rest
        return errors
