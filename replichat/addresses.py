"""Facts about network addresses that several parts of a replica decide on (which listeners may
go without TLS, where the local cluster's controls may be offered)."""
import ipaddress


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback IP addresses (IPv6 with or without brackets)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
