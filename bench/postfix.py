"""A private Postfix instance for the SMTP benchmarks: started, measured against, removed.

The instance is never the system one: its config, queue and data directories live under a
fresh temporary directory, its smtpd listens only on ``127.0.0.1:PORT`` (a port the caller
chooses), it does no local delivery and no DNS, and ``mydestination`` is empty. Postfix's
``postfix`` command is reserved for the superuser, so the instance runs as root with the
usual unprivileged ``mail_owner`` (``postfix``) and ``setgid_group`` (``postdrop``);
anything else raises ``PostfixUnavailable`` with the reason, so a caller can report
"n/a" and carry on.

Two modes, and what each measures:

- ``accept``: mail for the bench domain is accepted into Postfix's durable queue —
  ``250`` after DATA only once the cleanup daemon has written and fsynced the queue file —
  then the queue manager hands it to a ``discard:`` transport, so the queue does not grow.
  Timing smtp-source against this measures durable queue acceptance, the baseline for
  MultiMail's inbound "250 only after commit".
- ``relay``: everything received is queued durably as above and then relayed by Postfix's
  smtp client to ``relayhost = [127.0.0.1]:SINK_PORT``. Timing until the sink holds every
  message measures store-and-forward relaying, the baseline for MultiMail's outbound path.

Rule 1: ``start()`` returns only when the smtpd answers ``220`` on its port.
Rule 2: ``stop()`` always runs ``postfix -c DIR stop`` and removes the directory, even after
a failed start; the context manager guarantees it.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

Mode = Literal["accept", "relay"]

POSTFIX = "/usr/sbin/postfix"
MAIL_OWNER = "postfix"
SETGID_GROUP = "postdrop"

# Services a queue-and-forward instance needs; chroot off everywhere (column 5) so no
# copies of /etc are needed inside the queue directory.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup     unix  n - n 60   1 pickup
cleanup    unix  n - n -    0 cleanup
qmgr       unix  n - n 300  1 qmgr
rewrite    unix  - - n -    - trivial-rewrite
bounce     unix  - - n -    0 bounce
defer      unix  - - n -    0 bounce
trace      unix  - - n -    0 bounce
verify     unix  - - n -    1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -    - proxymap
proxywrite unix  - - n -    1 proxymap
smtp       unix  - - n -    - smtp
relay      unix  - - n -    - smtp
showq      unix  n - n -    - showq
error      unix  - - n -    - error
retry      unix  - - n -    - error
discard    unix  - - n -    - discard
anvil      unix  - - n -    1 anvil
scache     unix  - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


class PostfixUnavailable(RuntimeError):
    """The private instance cannot run here; ``str()`` says why (for an "n/a" cell)."""


@dataclass(frozen=True)
class PostfixSpec:
    """What to start: the mode, the smtpd port and, for ``relay``, where to relay to."""

    mode: Mode
    port: int
    domain: str = "bench.test"
    sink_port: int | None = None

    def __post_init__(self) -> None:
        if self.mode == "relay" and self.sink_port is None:
            raise ValueError("relay mode needs sink_port")


def main_cf(spec: PostfixSpec, root: Path) -> str:
    """The main.cf of a private instance rooted at ``root`` (pure; see the module rules)."""
    common = [
        "compatibility_level = 3.6",
        f"queue_directory = {root / 'queue'}",
        f"data_directory = {root / 'data'}",
        f"mail_owner = {MAIL_OWNER}",
        f"setgid_group = {SETGID_GROUP}",
        f"maillog_file = {root / 'maillog'}",
        f"maillog_file_prefixes = {root}",
        "myhostname = postfix.bench.localhost",
        "mydomain = bench.localhost",
        "myorigin = $myhostname",
        "mydestination =",
        "inet_interfaces = 127.0.0.1",
        "inet_protocols = ipv4",
        "mynetworks = 127.0.0.0/8",
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
        "local_transport = error:5.1.1 local delivery is disabled",
        "alias_maps =",
        "alias_database =",
        "local_recipient_maps =",
        "smtp_dns_support_level = disabled",
        "lmtp_dns_support_level = disabled",
        "biff = no",
        "append_dot_mydomain = no",
        "smtputf8_enable = no",
    ]
    if spec.mode == "accept":
        mode = [
            f"relay_domains = {spec.domain}",
            f"transport_maps = inline:{{{spec.domain}=discard:bench}}",
            "default_transport = error:5.7.1 relaying is disabled in accept mode",
        ]
    else:
        mode = [f"relayhost = [127.0.0.1]:{spec.sink_port}"]
    return "\n".join(common + mode) + "\n"


def is_available() -> str | None:
    """None when a private instance can start here, else the reason it cannot."""
    if not Path(POSTFIX).exists():
        return f"{POSTFIX} not installed"
    if os.geteuid() != 0:
        return "the postfix command is reserved for the superuser"
    try:
        pwd.getpwnam(MAIL_OWNER)
        grp.getgrnam(SETGID_GROUP)
    except KeyError as exc:
        return f"missing Postfix account: {exc}"
    return None


class PrivatePostfix:
    """Context manager around one private Postfix instance (see the module docstring)."""

    def __init__(
        self, spec: PostfixSpec, *, base_dir: str | None = None, ready_timeout: float = 30.0
    ) -> None:
        self.spec = spec
        self.base_dir = base_dir
        self.ready_timeout = ready_timeout
        self.root: Path | None = None

    @property
    def config_dir(self) -> Path:
        if self.root is None:
            raise PostfixUnavailable("instance not started")
        return self.root / "etc"

    @property
    def maillog(self) -> Path:
        return self.config_dir.parent / "maillog"

    def __enter__(self) -> PrivatePostfix:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        reason = is_available()
        if reason:
            raise PostfixUnavailable(reason)
        self.root = Path(tempfile.mkdtemp(prefix="bench-postfix-", dir=self.base_dir))
        # Daemons run as mail_owner and must traverse to the queue and log file.
        self.root.chmod(0o755)
        for sub in ("etc", "queue", "data"):
            (self.root / sub).mkdir(mode=0o755)
        os.chown(self.root / "data", pwd.getpwnam(MAIL_OWNER).pw_uid, -1)
        (self.config_dir / "main.cf").write_text(main_cf(self.spec, self.root))
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(port=self.spec.port))
        # `check` creates the queue subdirectories with their owners and modes.
        self._postfix("check")
        self._postfix("start")
        self._wait_ready()

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.root / "queue" / "pid" / "master.pid").exists():
            subprocess.run(
                [POSTFIX, "-c", str(self.config_dir), "stop"],
                capture_output=True,
                check=False,
            )
            self._wait_stopped()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def queue_size(self) -> int:
        """Messages still in the instance's queue (incoming, active, deferred)."""
        assert self.root is not None
        return sum(
            len(files)
            for sub in ("incoming", "active", "deferred", "maildrop")
            for _, _, files in os.walk(self.root / "queue" / sub)
        )

    def _postfix(self, command: str) -> None:
        done = subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), command],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise PostfixUnavailable(
                f"postfix {command} failed ({done.returncode}): {done.stderr.strip()[-500:]}"
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.spec.port), timeout=2) as s:
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return
            except OSError:
                time.sleep(0.05)
        raise PostfixUnavailable(f"smtpd never answered on 127.0.0.1:{self.spec.port}")

    def _wait_stopped(self, timeout: float = 20.0) -> None:
        assert self.root is not None
        pid_file = self.root / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, 0)
            except (OSError, ValueError, IndexError):
                return
            time.sleep(0.05)
