"""systemd's service notifications (sd_notify(3)), sent by solgate itself.

Under `Type=notify` systemd starts the service with `$NOTIFY_SOCKET` naming a unix
datagram socket (a path, or an abstract name written with a leading '@'). The service
sends one datagram of newline-separated assignments per notification:

* `READY=1` once it serves: systemd holds `systemctl start` and units ordered after it
  until then, so "started" means the consoles are running and the web server listens;
* `RELOADING=1` (with `MONOTONIC_USEC`) when SIGHUP starts a reload, `READY=1` when it
  is done, so `systemctl reload` returns after the new configuration is in effect;
* `STOPPING=1` when SIGTERM starts the graceful stop (SOL deactivated, logs flushed);
* `WATCHDOG=1` every half `$WATCHDOG_USEC` when the unit sets `WatchdogSec=`: the pings
  come from a task on the event loop, so a loop that hangs stops them and systemd
  restarts the service.

Without `$NOTIFY_SOCKET` every call does nothing, so solgate behaves the same outside
systemd. The variable is taken out of the environment once read, as `sd_notify`'s
`unset_environment` does, so programs solgate runs (panic hooks) do not inherit it. A
notification that cannot be sent is logged once and never stops the daemon. It is one
`sendto` on an AF_UNIX socket; no library is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import MutableMapping

__all__ = ["Notifier"]

logger = logging.getLogger("solgate.sdnotify")


class Notifier:
    """Sends notifications to `address` (None: to nobody)."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        self.address = address or None
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """Read (and remove) $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID."""
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", None)
        usec_text = env.pop("WATCHDOG_USEC", None)
        pid_text = env.pop("WATCHDOG_PID", None)
        usec: int | None = None
        with contextlib.suppress(ValueError, TypeError):
            usec = int(usec_text) if usec_text else None
        if pid_text and pid_text.strip() != str(os.getpid()):
            usec = None  # the watchdog is meant for another process
        return cls(address, usec if usec and usec > 0 else None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half the unit's WatchdogSec, as systemd advises."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def notify(self, *assignments: str) -> bool:
        """Send `assignments` ("READY=1", "STATUS=...") in one datagram; False if not sent."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                logger.warning("cannot notify systemd at %r (%s); systemd will not see "
                               "readiness or watchdog pings: check NotifyAccess= and "
                               "the unit's sandboxing", self.address, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    async def watchdog(self) -> None:
        """Ping the watchdog until cancelled (returns at once when none is configured)."""
        interval = self.watchdog_interval
        if interval is None or self.address is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
