"""Client addresses as the keys of per-host limits (login failures, UDP hellos)."""

import ipaddress

# IPv6 hosts are handed at least a /64, so a per-host limit must count the whole prefix: one
# subscriber could otherwise take a fresh address for every attempt.
IPV6_HOST_PREFIX = 64


def host_key(host: str) -> str:
    """The key of `host` (an IP literal, no port) for per-host limits: an IPv6 address counts
    as its /64 and an IPv4-mapped one as the IPv4 address."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # not an IP literal (a test's symbolic address): the host itself is the key
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_HOST_PREFIX), strict=False))
    return str(ip)
