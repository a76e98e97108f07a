"""What the suite reads from ``/proc``: a process's descendants and their names, resident
memory, and which of a process's TCP connections go to a given port. Linux only, like the
worker sandbox; nothing here needs more than read access to ``/proc``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "alive",
    "children_of",
    "command_of",
    "descendants",
    "local_ports_to",
    "name_of",
    "rss_bytes",
]

PROC = Path("/proc")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the name (which may hold spaces and parens)."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def children_of() -> dict[int, list[int]]:
    """Every process's children, by parent pid, from one pass over ``/proc``."""
    tree: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or fields[0] == "Z":  # gone, or a zombie: nothing to signal
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    tree = children_of()
    found: list[int] = []
    todo = list(tree.get(pid, ()))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, ()))
    return found


def name_of(pid: int) -> str:
    """The process's name (``comm``), or ``""`` once it is gone."""
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def command_of(pid: int) -> str:
    """The process's command line, arguments joined by spaces (``""`` once it is gone)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident memory summed over ``pids`` (those gone count 0)."""
    total = 0
    for pid in pids:
        try:
            resident = (PROC / str(pid) / "statm").read_text().split()[1]
        except (OSError, IndexError):
            continue
        total += int(resident) * PAGE
    return total


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        fds = list((PROC / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def local_ports_to(pid: int, remote_port: int) -> set[int]:
    """Local ports of ``pid``'s IPv4 TCP connections to ``remote_port``."""
    inodes = _socket_inodes(pid)
    ports: set[int] = set()
    try:
        lines = (PROC / str(pid) / "net" / "tcp").read_text().splitlines()[1:]
    except OSError:
        return ports
    for line in lines:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
            ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports
