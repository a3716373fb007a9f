"""Which process owns a task, and whether that process still lives.

A task row and each spool or journal file name the process that made them: host, boot,
pid and the process's start time (a pid alone is reused). On the same host and boot the
process can be looked up in ``/proc``; a process of another boot is gone; a process of
another host cannot be judged from here.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


@dataclass(frozen=True, slots=True)
class Owner:
    host: str
    boot: str
    pid: int
    start: int

    @classmethod
    def current(cls) -> Owner:
        """This process (a forked child is a new owner: ask again after a fork)."""
        pid = os.getpid()
        return cls(_UNSAFE.sub("-", socket.gethostname()) or "host", _boot_id(), pid, _start_time(pid))

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        parts = text.split("_")
        if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), int(parts[3]))

    def __str__(self) -> str:
        return f"{self.host}_{self.boot}_{self.pid}_{self.start}"

    @property
    def machine(self) -> str:
        """Host and boot: what all processes of this machine since its last start share."""
        return f"{self.host}_{self.boot}_"

    def is_gone(self, here: Owner) -> bool:
        """True only when this owner is known to be dead, judged from process ``here``."""
        if self.host != here.host:
            return False  # another host: not ours to judge
        if self.boot != here.boot:
            return True  # this host has rebooted since
        return _start_time(self.pid) != self.start


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:12]
    except OSError:
        return "boot"


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot; -1 when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return -1
    except OSError:  # no /proc here: a live pid is all that can be known
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return -1
        except PermissionError:
            pass
        return 0
    # Field 22, counted after the command name, which may hold spaces and parentheses.
    return int(stat.rpartition(")")[2].split()[19])
