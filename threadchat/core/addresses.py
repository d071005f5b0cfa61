"""Client addresses as the keys of per-host limits (login failures, UDP hellos)."""

import functools
import ipaddress

# IPv6 hosts are handed at least a /64, so a per-host limit must count the whole prefix: one
# subscriber could otherwise take a fresh address for every attempt.
IPV6_HOST_PREFIX = 64


# Parsing an address is most of what admitting a client costs (twice per connection: admit
# and release); clients come back from the same addresses, so the keys are remembered.
@functools.lru_cache(maxsize=4096)
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
