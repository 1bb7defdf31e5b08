"""What a host name or address given on the command line or in a URL stands for."""
import ipaddress


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name, an address, with or without brackets) is this machine: ``localhost``,
    127.0.0.0/8 or ::1."""
    if host is None:
        return False
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_unspecified(host: str) -> bool:
    """Whether ``host`` listens on every address (``0.0.0.0``, ``::``)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False
