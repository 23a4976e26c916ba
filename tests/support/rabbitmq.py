"""RabbitMQ for tests: a virtual host per stack (``rabbitmqctl``), and losing its queued messages (a purge)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterable

from kombu import Connection


def _ctl(*args: str) -> None:
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): "
                           f"{result.stdout}{result.stderr}; is RabbitMQ running (.ci/run starts it)?")


def reachable(host: str = "127.0.0.1", port: int = 5672) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def add_vhost(name: str) -> None:
    """A virtual host of its own for one stack, open to the guest user."""
    if not reachable():
        raise RuntimeError("RabbitMQ is not reachable on 127.0.0.1:5672; start it as .ci/run does "
                           "(rabbitmq-server -detached)")
    _ctl("add_vhost", name)
    _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def delete_vhost(name: str) -> None:
    _ctl("delete_vhost", name)


def purge(url: str, queues: Iterable[str]) -> int:
    """Drop the ready messages of ``queues``; returns how many there were (queues that do not exist count 0)."""
    purged = 0
    with Connection(url) as connection:
        for queue in queues:
            channel = connection.channel()
            try:
                purged += int(channel.queue_purge(queue) or 0)
            except connection.channel_errors:
                pass  # no such queue
            finally:
                channel.close()
    return purged
