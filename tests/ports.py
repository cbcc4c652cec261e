"""A free TCP port on the loopback interface, for tests that start servers (Ray, Slurm, dashboards)."""

import socket


def free_port() -> int:
    """A port nothing listens on now (the OS's pick for 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
