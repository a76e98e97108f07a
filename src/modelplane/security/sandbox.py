"""What a model worker gives up before it loads a package, as far as this kernel allows.

:func:`apply_sandbox` runs inside the worker process, before any model code, in this order:

1. **environment**: only what runtimes need survives (``PATH``, locale, thread counts, …);
   database URLs, tokens and cloud credentials go, and so do their bytes in the process's
   original environment block (``/proc/self/environ`` still shows that block otherwise);
2. **filesystem view** (root only: a mount namespace): a private ``tmpfs`` on ``/tmp`` and
   ``/dev/shm``; ``/run``, ``/var/tmp``, ``MODELPLANE_HOME`` and every folder the worker's user
   could not cross are covered by empty ones, and the package (read-only), the Python
   installation and its ``sys.path`` are bound back at their own paths, so no path changes;
3. **network** (root only): a new, empty network namespace, unless the policy allows network;
4. **rlimits**: address space (declared memory plus headroom), open files, processes, no core;
5. **user**: root drops to a uid of its own (``UID_BASE + pid`` unless one is configured), so
   the process limit counts this worker alone and no other worker shares its files or signals;
   then no capabilities are left, nor can exec bring them back (root that cannot change its
   uid, in a container say, stays uid 0 without them);
6. **no_new_privs**, then **Landlock**: reads only below the package, the Python
   installation and a few system files; writes only in the private temporary folder; no TCP
   bind or connect (ABI 4+); no signals or abstract sockets outside the worker (ABI 6+);
7. **seccomp**: ``socket``/``socketpair`` for any family but ``AF_UNIX`` fail with ``EPERM``
   (unless the policy allows network), and so do ``ptrace`` and ``io_uring``, whose requests
   would slip past the socket rule; a foreign syscall ABI (x32, i386) gets ``EPERM`` for all.

A feature this kernel or user lacks is skipped and named in :class:`SandboxReport`, which the
worker logs and sends to the gateway; a feature the policy lists in ``required`` makes the
worker fail instead. :func:`probe` says, without changing anything, what this node can do.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import shutil
import stat
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from multiprocessing.util import Finalize
from pathlib import Path

from modelplane.errors import WorkerFailed

__all__ = [
    "NETWORK_LABEL",
    "UID_BASE",
    "Capabilities",
    "Feature",
    "SandboxPolicy",
    "SandboxReport",
    "apply_sandbox",
    "probe",
    "scrub_environment",
]

UID_BASE = 2_000_000_000
"""Workers started as root run as ``UID_BASE + pid``: no account has such a uid, and two
live workers never share one (pids are unique while both run)."""

NETWORK_LABEL = "modelplane.io/network"
"""The manifest label by which a package declares that it needs network access."""

_MIB = 1 << 20


class Feature(StrEnum):
    """One thing the sandbox takes away."""

    ENV = "env"
    """Secrets removed from the environment."""
    MOUNT_NS = "mount_ns"
    """A private filesystem view (needs root)."""
    NET_NS = "net_ns"
    """An empty network namespace (needs root)."""
    RLIMITS = "rlimits"
    """Address space, open files, processes, core dumps."""
    UID = "uid"
    """An unprivileged user instead of root."""
    CAPABILITIES = "capabilities"
    """None left, nor any to regain by exec (matters where root cannot change its uid)."""
    NO_NEW_PRIVS = "no_new_privs"
    """No privilege gained through exec (setuid binaries, file capabilities)."""
    LANDLOCK = "landlock"
    """Filesystem, TCP and signal rules enforced by the kernel (Linux 5.13+)."""
    SECCOMP = "seccomp"
    """Only ``AF_UNIX`` sockets, no ``ptrace``, no ``io_uring``."""


@dataclass(frozen=True, slots=True)
class SandboxPolicy:
    """What a worker may keep; built per package with :meth:`for_package`."""

    enabled: bool = True
    package_dir: str | None = None
    """The verified package folder: readable (never writable) inside the sandbox."""
    uid: int | None = None
    """The user to run as when started as root; ``None``: ``UID_BASE + pid``."""
    gid: int | None = None
    """The group; ``None``: the same number as the uid."""
    memory_mb: int | None = 512
    """The package's declared memory; ``None`` sets no address-space limit."""
    address_space_headroom_mb: int = 4096
    """Added to ``memory_mb``: interpreters and runtimes reserve far more than they touch."""
    open_files: int = 256
    processes: int = 128
    """``RLIMIT_NPROC``: threads count too. Per uid, so it binds only with the uid drop."""
    tmp_size_mb: int = 256
    network: bool = False
    """Network allowed: on a node policy, packages may ask for it; after
    :meth:`for_package`, this package asked and may have it."""
    gpu: bool = False
    """Allow the GPU device files (and no address-space limit: CUDA reserves terabytes)."""
    read_paths: tuple[str, ...] = ()
    """Further folders or files the worker may read (code a package imports, say)."""
    required: frozenset[Feature] = frozenset()
    """Features whose absence fails the worker instead of degrading it."""

    def for_package(
        self,
        package_dir: str | Path,
        *,
        memory_mb: int | None = 512,
        gpus: float = 0.0,
        labels: Mapping[str, str] | None = None,
        read_paths: Iterable[str] = (),
    ) -> SandboxPolicy:
        """This (node) policy applied to one package's declared resources and labels.

        A package asks for network with the label ``modelplane.io/network: "true"``; it gets
        it only where this policy's ``network`` allows it.
        """
        declared = (labels or {}).get(NETWORK_LABEL, "").lower() == "true"
        return replace(
            self,
            package_dir=str(package_dir),
            memory_mb=memory_mb,
            gpu=gpus > 0,
            network=declared and self.network,
            read_paths=(*self.read_paths, *read_paths),
        )

    @property
    def address_space_bytes(self) -> int | None:
        """The ``RLIMIT_AS`` value, or ``None`` where none is set."""
        if self.memory_mb is None or self.gpu:
            return None
        return (self.memory_mb + self.address_space_headroom_mb) * _MIB


@dataclass(frozen=True, slots=True)
class SandboxReport:
    """What :func:`apply_sandbox` did and what it could not do (feature → why)."""

    applied: tuple[Feature, ...] = ()
    missing: Mapping[Feature, str] = field(default_factory=dict)
    uid: int = 0
    tmp_dir: str = ""
    landlock_abi: int = 0

    @property
    def degraded(self) -> bool:
        return bool(self.missing)

    def summary(self) -> str:
        """One line for the start log and the ready message."""
        have = " ".join(f.value for f in self.applied) or "nothing"
        line = f"sandbox: uid {self.uid}, {have}"
        if self.missing:
            line += "; missing: " + "; ".join(
                f"{f.value} ({why})" for f, why in self.missing.items()
            )
        return line


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What this node's kernel and user allow a worker to give up."""

    root: bool
    landlock_abi: int
    seccomp: bool
    namespaces: bool
    """``CAP_SYS_ADMIN`` and namespace support (a container's root often lacks the first)."""
    set_ids: bool = True
    """``CAP_SETUID`` and ``CAP_SETGID``."""

    def available(self) -> dict[Feature, str]:
        """Each feature, with ``""`` when available or why not."""
        root = "" if self.root else "the server does not run as root"
        spaces = root or ("" if self.namespaces else "no CAP_SYS_ADMIN or no namespaces")
        return {
            Feature.ENV: "",
            Feature.MOUNT_NS: spaces,
            Feature.NET_NS: spaces,
            Feature.RLIMITS: "",
            Feature.UID: root or ("" if self.set_ids else "no CAP_SETUID/CAP_SETGID"),
            Feature.CAPABILITIES: "",
            Feature.NO_NEW_PRIVS: "",
            Feature.LANDLOCK: "" if self.landlock_abi else "kernel without Landlock",
            Feature.SECCOMP: "" if self.seccomp else f"no seccomp filter for {platform.machine()}",
        }

    def missing(self) -> dict[str, str]:
        """The features a worker here cannot give up, by name, each with why."""
        return {f.value: why for f, why in self.available().items() if why}

    def label(self) -> str:
        """Node label value: the features present, ``-`` joined (label values allow no space)."""
        names = [
            f"landlock{self.landlock_abi}" if f is Feature.LANDLOCK else f.value
            for f, why in self.available().items()
            if not why
        ]
        return "-".join(n.replace("_", "") for n in names)


# ---------------------------------------------------------------------------- kernel calls

_LIBC = ctypes.CDLL(None, use_errno=True)
_ARCH = platform.machine()
# x86_64 and aarch64: landlock (444-446) is in the generic range; the rest differ
_NR: dict[str, dict[str, int]] = {
    "x86_64": {"seccomp": 317, "socket": 41, "socketpair": 53, "ptrace": 101},
    "aarch64": {"seccomp": 277, "socket": 198, "socketpair": 199, "ptrace": 117},
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_NR_LANDLOCK_CREATE, _NR_LANDLOCK_ADD, _NR_LANDLOCK_RESTRICT = 444, 445, 446
_NR_IO_URING = (425, 426, 427)
_CLONE_NEWNS, _CLONE_NEWNET = 0x00020000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV = 1, 2, 4
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_PR_SET_NO_NEW_PRIVS, _PR_GET_SECCOMP = 38, 21
_CAP_SYS_ADMIN, _CAP_SET_IDS = 21, (1 << 6) | (1 << 7)  # CAP_SETGID, CAP_SETUID
_PR_CAPBSET_DROP, _CAP_VERSION_3 = 24, 0x20080522
_M_ARENA_MAX = -8


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def _syscall(number: int, *args: object) -> int:
    return int(_LIBC.syscall(ctypes.c_long(number), *args))


def _bytes(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    result = _LIBC.mount(_bytes(source), _bytes(target), _bytes(fstype), ctypes.c_ulong(flags),
                         _bytes(data or None))  # fmt: skip
    _check(result, f"mount {target}")


def _landlock_abi() -> int:
    result = _syscall(_NR_LANDLOCK_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(result, 0)


def probe() -> Capabilities:
    """What a worker started by this process could give up; changes nothing."""
    seccomp = _ARCH in _NR and int(_LIBC.prctl(_PR_GET_SECCOMP, 0, 0, 0, 0)) >= 0
    caps = _effective_capabilities()
    ns = Path("/proc/self/ns/mnt").exists() and Path("/proc/self/ns/net").exists()
    return Capabilities(
        root=os.geteuid() == 0,
        landlock_abi=_landlock_abi(),
        seccomp=seccomp,
        namespaces=ns and bool(caps & (1 << _CAP_SYS_ADMIN)),
        set_ids=caps & _CAP_SET_IDS == _CAP_SET_IDS,
    )


def _effective_capabilities() -> int:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    found = next((line for line in status.splitlines() if line.startswith("CapEff:")), "")
    return int(found.split()[1], 16) if found else 0


# ---------------------------------------------------------------------------- environment

_KEEP_NAMES = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
     "PYTHONUNBUFFERED", "CUDA_VISIBLE_DEVICES", "VIRTUAL_ENV"}
)  # fmt: skip
_KEEP_PREFIXES = ("LC_", "OMP_", "OPENBLAS_", "MKL_", "KMP_", "NUMEXPR_", "MALLOC_", "NVIDIA_")
_SECRET_MARKS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")


def scrub_environment(environ: Mapping[str, str], tmp_dir: str) -> dict[str, str]:
    """The environment model code gets: an allowlist, minus anything that looks secret.

    An allowlist, not a denylist: a secret under a name nobody thought of stays out too.
    """
    kept = {
        name: value
        for name, value in environ.items()
        if (name in _KEEP_NAMES or name.startswith(_KEEP_PREFIXES))
        and not any(mark in name.upper() for mark in _SECRET_MARKS)
    }
    kept.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    kept.update(HOME=tmp_dir, TMPDIR=tmp_dir, TMP=tmp_dir, TEMP=tmp_dir,
                PYTHONDONTWRITEBYTECODE="1")  # fmt: skip
    return kept


def _replace_environment(tmp_dir: str) -> None:
    wanted = scrub_environment(os.environ, tmp_dir)
    for name in list(os.environ):
        del os.environ[name]
    for name, value in wanted.items():
        os.environ[name] = value  # setenv copies: nothing points into the old block now
    _wipe_original_block()


def _wipe_original_block() -> None:
    """Zero the environment the process started with, which ``/proc/self/environ`` shows."""
    try:
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        # fields 50 and 51 of stat(5), counted from the state field (3)
        start, end = int(fields[50 - 3]), int(fields[51 - 3])
    except (OSError, IndexError, ValueError):
        return
    if 0 < start < end:
        ctypes.memset(start, 0, end - start)


# ---------------------------------------------------------------------------- filesystem view


def _code_paths(policy: SandboxPolicy) -> list[str]:
    """What the worker must read: the package, the Python installation and ``sys.path``.

    Not the working folder, which ``sys.path`` holds when the server was started with
    ``python -m`` (a home folder, say), unless the installation itself is there.
    """
    prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    cwd = os.path.realpath(os.getcwd())
    inside = any(_under(os.path.realpath(p), cwd) for p in prefixes)
    candidates = [*prefixes, *sys.path, *policy.read_paths]
    if policy.package_dir:
        candidates.append(policy.package_dir)
    found: list[str] = []
    for candidate in candidates:
        if candidate in sys.path and os.path.realpath(candidate) == cwd and not inside:
            continue
        if candidate and os.path.exists(candidate):
            real = os.path.realpath(candidate)
            if real not in found:
                found.append(real)
    return found


def _blocking_ancestor(path: str) -> str | None:
    """The highest folder above ``path`` that a stranger cannot cross (no ``o+x``)."""
    parts = Path(path).parts
    for depth in range(2, len(parts)):
        folder = os.path.join(*parts[:depth])
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            return folder
    return None


def _outermost(paths: Iterable[str]) -> list[str]:
    ordered = sorted(set(paths), key=len)
    kept: list[str] = []
    for path in ordered:
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _private_view(
    policy: SandboxPolicy, code: list[str], uid: int, gid: int, home: str | None
) -> str:
    """A mount namespace where only what the worker needs is visible; returns its tmp."""
    needed = _outermost(code)
    _check(_LIBC.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    try:
        _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
        # opened in the new namespace: a bind source must belong to it
        handles = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in needed}
        private = [p for p in ("/tmp", "/dev/shm") if os.path.isdir(p) and not os.path.islink(p)]
        empty = [p for p in ("/run", "/var/tmp", home or "") if p and os.path.isdir(p)]
        empty += [a for p in needed if (a := _blocking_ancestor(p)) is not None]
        masks = _outermost(os.path.realpath(p) for p in private + empty)
        for mask in masks:
            options = (
                f"mode=0700,uid={uid},gid={gid},size={policy.tmp_size_mb}m"
                if mask in private
                else "mode=0755,size=1m"
            )
            _mount("modelplane-sandbox", mask, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
        for path in needed:
            if any(_under(path, mask) for mask in masks):
                _bind_back(handles[path], path)
        for handle in handles.values():
            os.close(handle)
    except OSError as exc:
        # half a view may hide what the worker needs or show what it must not: no way back
        raise WorkerFailed(f"the worker's filesystem view could not be built: {exc}") from exc
    return "/tmp" if "/tmp" in masks else tempfile.gettempdir()


def _bind_back(handle: int, path: str) -> None:
    """Bind what ``handle`` names at ``path`` again, read-only, below a covering tmpfs."""
    if os.path.isdir(f"/proc/self/fd/{handle}"):
        os.makedirs(path, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        Path(path).touch()
    _mount(f"/proc/self/fd/{handle}", path, None, _MS_BIND | _MS_REC)
    _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _own_tmp(owner: tuple[int, int] | None) -> str:
    """Without a mount namespace: a folder of its own, removed when the worker exits."""
    folder = tempfile.mkdtemp(prefix="modelplane-worker-")
    if owner is not None:  # the uid the worker is about to become
        os.chown(folder, *owner)
    # multiprocessing runs its finalizers when a worker returns; a killed one leaves it
    Finalize(None, shutil.rmtree, args=(folder,), kwargs={"ignore_errors": True}, exitpriority=0)
    return folder


# ---------------------------------------------------------------------------- limits and user


def _set_rlimits(policy: SandboxPolicy, own_uid: bool) -> None:
    limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, policy.open_files)]
    if own_uid:  # per uid: under a shared uid it would count the server's threads too
        limits.append((resource.RLIMIT_NPROC, policy.processes))
    if (address_space := policy.address_space_bytes) is not None:
        limits.append((resource.RLIMIT_AS, address_space))
        # glibc reserves 64 MiB of address space per malloc arena, up to 8 per core: on a
        # big machine the arenas of a threaded runtime alone would reach the limit
        _LIBC.mallopt(_M_ARENA_MAX, 4)
    for which, wanted in limits:
        _soft, hard = resource.getrlimit(which)
        value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(which, (value, value))


def _drop_user(uid: int, gid: int) -> None:
    _drop_bounding_set()  # before the uid changes: that takes CAP_SETPCAP with it
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise WorkerFailed("the worker could take root back after dropping it")


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32))  # fmt: skip


def _drop_bounding_set() -> None:
    """Uid 0 regains the bounding set on exec; emptying it needs CAP_SETPCAP, so root only."""
    if os.geteuid() != 0:
        return
    for cap in range(64):
        if _LIBC.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) < 0:
            break  # EINVAL: past the last capability this kernel knows


def _drop_capabilities() -> None:
    """Empty the bounding set while that is allowed, then every other set."""
    _drop_bounding_set()
    header = _CapHeader(_CAP_VERSION_3, 0)
    _check(_LIBC.capset(ctypes.byref(header), (_CapData * 2)()), "capset")


# ---------------------------------------------------------------------------- landlock

_FS_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read_file, read_dir
_FS_FILE_ONLY = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_TCP = (1 << 0) | (1 << 1)  # bind_tcp, connect_tcp
_SCOPES = (1 << 0) | (1 << 1)  # abstract unix sockets, signals
_SYSTEM_READ = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/usr/share/zoneinfo",
                "/etc/ld.so.cache", "/etc/localtime", "/proc/self", "/proc/cpuinfo",
                "/proc/meminfo", "/sys/devices", "/sys/bus/pci", "/sys/fs/cgroup",
                "/dev/urandom", "/dev/random", "/dev/zero")  # fmt: skip
_NETWORK_READ = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf",
                 "/etc/host.conf", "/etc/services", "/etc/ssl", "/etc/ca-certificates",
                 "/usr/share/ca-certificates")  # fmt: skip
_GPU_WRITE = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/dri",
              *(f"/dev/nvidia{i}" for i in range(16)))  # fmt: skip
_GPU_READ = ("/proc/driver/nvidia", "/sys/module/nvidia")


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _landlock(
    policy: SandboxPolicy, code: list[str], abi: int, tmp_dir: str, private_shm: bool
) -> None:
    handled_fs = _FS_BY_ABI[max(k for k in _FS_BY_ABI if k <= abi)]
    handled_net = _NET_TCP if abi >= 4 and not policy.network else 0
    scoped = _SCOPES if abi >= 6 else 0
    attr = struct.pack("<QQQ", handled_fs, handled_net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    buffer = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _check(_syscall(_NR_LANDLOCK_CREATE, buffer, ctypes.c_size_t(size), 0), "landlock")
    try:
        rules = [(p, _FS_READ) for p in (*code, *_SYSTEM_READ)]
        rules += [(tmp_dir, handled_fs), ("/dev/null", handled_fs)]
        rules += [("/dev/shm", handled_fs)] if private_shm else []
        rules += [(p, _FS_READ) for p in _NETWORK_READ] if policy.network else []
        if policy.gpu:
            rules += [(p, handled_fs) for p in _GPU_WRITE] + [(p, _FS_READ) for p in _GPU_READ]
        for path, access in rules:
            _add_rule(ruleset, path, access & handled_fs)
        _check(_syscall(_NR_LANDLOCK_RESTRICT, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _add_rule(ruleset: int, path: str, access: int) -> None:
    try:
        handle = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # absent on this machine: nothing to allow
    try:
        if not stat.S_ISDIR(os.fstat(handle).st_mode):
            access &= _FS_FILE_ONLY
        rule = _PathBeneath(access, handle)
        _check(_syscall(_NR_LANDLOCK_ADD, ruleset, 1, ctypes.byref(rule), 0), f"landlock {path}")
    finally:
        os.close(handle)


# ---------------------------------------------------------------------------- seccomp

_BPF_LD_ABS, _BPF_JEQ, _BPF_JGE, _BPF_RET = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _AF_UNIX, _X32_BIT = 1, 1, 0x40000000


class _SockFilter(ctypes.Structure):
    _fields_ = (("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32))  # fmt: skip


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def seccomp_program(arch: str, network: bool) -> list[tuple[int, int, int, int]]:
    """The BPF program (code, jt, jf, k): checks the ABI, then the denied calls."""
    nr = _NR[arch]
    deny = [nr["ptrace"], *_NR_IO_URING]
    sockets = [] if network else [nr["socket"], nr["socketpair"]]
    errno = _RET_ERRNO | _EPERM
    program = [(_BPF_LD_ABS, 0, 0, 4), (_BPF_JEQ, 1, 0, _AUDIT_ARCH[arch]), (_BPF_RET, 0, 0, errno)]
    program.append((_BPF_LD_ABS, 0, 0, 0))
    if arch == "x86_64":  # x32 calls reuse the native arch with this bit set
        program += [(_BPF_JGE, 0, 1, _X32_BIT), (_BPF_RET, 0, 0, errno)]
    for number in deny:
        program += [(_BPF_JEQ, 0, 1, number), (_BPF_RET, 0, 0, errno)]
    for number in sockets:
        # the domain is args[0]: offset 16, its low 32 bits first on little-endian
        program += [(_BPF_JEQ, 0, 4, number), (_BPF_LD_ABS, 0, 0, 16),
                    (_BPF_JEQ, 1, 0, _AF_UNIX), (_BPF_RET, 0, 0, errno),
                    (_BPF_RET, 0, 0, _RET_ALLOW)]  # fmt: skip
    program.append((_BPF_RET, 0, 0, _RET_ALLOW))
    return program


def _seccomp(network: bool) -> None:
    program = seccomp_program(_ARCH, network)
    filters = (_SockFilter * len(program))(*(_SockFilter(*step) for step in program))
    fprog = _SockFprog(len(program), filters)
    # SECCOMP_SET_MODE_FILTER with TSYNC: every thread of the worker, not only this one
    result = _syscall(_NR[_ARCH]["seccomp"], 1, 1, ctypes.byref(fprog))
    _check(result, "seccomp")


# ---------------------------------------------------------------------------- apply


def apply_sandbox(policy: SandboxPolicy) -> SandboxReport:
    """Drop what model code must not have; call once in the worker, before loading.

    Raises :class:`~modelplane.errors.WorkerFailed` when a feature in ``policy.required``
    cannot be had; every other missing feature is named in the report.
    """
    if not policy.enabled:
        return SandboxReport(missing=dict.fromkeys(Feature, "disabled by policy"), uid=os.getuid())
    caps = probe()
    available = caps.available()
    applied: list[Feature] = []
    missing: dict[Feature, str] = {f: why for f, why in available.items() if why}
    uid = policy.uid if policy.uid is not None else UID_BASE + os.getpid()
    gid = policy.gid if policy.gid is not None else uid
    home = os.environ.get("MODELPLANE_HOME") or os.path.join(os.path.expanduser("~"), ".modelplane")

    def step(feature: Feature, action: Callable[[], object]) -> object:
        if feature in missing:
            return None
        try:
            result = action()
        except (OSError, ValueError) as exc:
            missing[feature] = str(exc)
            return None
        applied.append(feature)
        return result

    code = _code_paths(policy)
    tmp_dir = step(Feature.MOUNT_NS, lambda: _private_view(policy, code, uid, gid, home))
    if Feature.MOUNT_NS not in applied and Feature.UID not in missing:
        hidden = next((a for p in code if (a := _blocking_ancestor(p)) is not None), None)
        if hidden is not None:  # another uid could not load the package or import Python
            missing[Feature.UID] = f"{hidden} is closed to other users and no mount namespace"
    own_uid = Feature.UID not in missing
    if not isinstance(tmp_dir, str):
        tmp_dir = _own_tmp((uid, gid) if own_uid else None)
    os.chdir(tmp_dir)
    step(Feature.ENV, lambda: _replace_environment(tmp_dir))
    if policy.network:
        missing[Feature.NET_NS] = "network allowed by policy"
    step(Feature.NET_NS, lambda: _check(_LIBC.unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)"))
    step(Feature.RLIMITS, lambda: _set_rlimits(policy, own_uid))
    step(Feature.UID, lambda: _drop_user(uid, gid))
    step(Feature.CAPABILITIES, _drop_capabilities)
    step(Feature.NO_NEW_PRIVS, lambda: _check(_LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "nnp"))
    shm = Feature.MOUNT_NS in applied
    step(Feature.LANDLOCK, lambda: _landlock(policy, code, caps.landlock_abi, tmp_dir, shm))
    step(Feature.SECCOMP, lambda: _seccomp(policy.network))
    report = SandboxReport(tuple(applied), missing, os.getuid(), tmp_dir, caps.landlock_abi)
    lacking = sorted(f.value for f in policy.required if f not in applied)
    if lacking:
        raise WorkerFailed(f"required sandbox features unavailable: {', '.join(lacking)}; "
                           + report.summary())  # fmt: skip
    return report
