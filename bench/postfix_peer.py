"""A throwaway Postfix instance relaying from loopback to a smarthost: the relay's peer.

Its own configuration, queue and log live in a temporary directory; the machine's Postfix
(its /etc/postfix, its daemon) is neither read for settings nor started. The queue stays on
disk with Postfix's shipped durability (a queue file is fsynced before the 250), chroot is
off only because the temporary directory holds none of the files a chroot needs.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from relay.sink import free_port

SYSTEM_MASTER_CF = (Path("/etc/postfix/master.cf"), Path("/etc/postfix/master.cf.proto"))
INSTALL = "DEBIAN_FRONTEND=noninteractive apt-get install -y postfix (then: postfix stop)"


def main_cf(root: Path, relayhost_port: int) -> str:
    return f"""\
compatibility_level = 3.6
queue_directory = {root / "queue"}
data_directory = {root / "data"}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-peer.localhost
mydomain = localhost
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{relayhost_port}
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
maillog_file = {root / "maillog"}
maillog_file_prefixes = {root}
biff = no
"""


def master_cf(port: int) -> str:
    """The shipped master.cf with smtpd on our port and every service out of chroot."""
    source = next(p for p in SYSTEM_MASTER_CF if p.exists())
    lines = []
    for line in source.read_text().splitlines():
        fields = line.split()
        if line.startswith(("#", " ", "\t")) or len(fields) < 8:
            lines.append(line)
            continue
        if fields[0] == "smtp" and fields[1] == "inet":
            fields[0] = f"127.0.0.1:{port}"
        fields[4] = "n"
        lines.append(" ".join(fields))
    return "\n".join(lines) + "\n"


class PostfixPeer:
    """`postfix -c <tmp>/etc start`, listening on a free loopback port; its directory is
    removed again by `stop`."""

    def __init__(self, relayhost_port: int) -> None:
        # Its own directory, readable by the postfix user (mkdtemp's are not).
        self.root = Path(tempfile.mkdtemp(prefix="postfix-peer-"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.conf = self.root / "etc"
        self.relayhost_port = relayhost_port
        self.postfix = shutil.which("postfix") or "/usr/sbin/postfix"

    @staticmethod
    def available() -> bool:
        return Path(shutil.which("postfix") or "/usr/sbin/postfix").exists()

    def _postfix(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.postfix, "-c", str(self.conf), *command],
            capture_output=True,
            text=True,
            check=False,
        )

    async def start(self) -> PostfixPeer:
        self.conf.mkdir(parents=True, exist_ok=True)
        (self.root / "queue").mkdir(exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        shutil.chown(self.root / "data", "postfix")
        (self.conf / "main.cf").write_text(main_cf(self.root, self.relayhost_port))
        (self.conf / "master.cf").write_text(master_cf(self.port))
        done = await asyncio.to_thread(self._postfix, "start")
        if done.returncode != 0:
            raise RuntimeError(f"postfix did not start:\n{self.log_tail()}")
        await self._wait_listening()
        return self

    async def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError(f"postfix is not listening on {self.port}:\n{self.log_tail()}")

    async def stop(self) -> None:
        """Stop the instance and wait until its master process is gone."""
        pid = self.master_pid()
        await asyncio.to_thread(self._postfix, "stop")
        deadline = time.monotonic() + 30
        while pid is not None and Path(f"/proc/{pid}").exists():
            if time.monotonic() > deadline:
                await asyncio.to_thread(self._postfix, "abort")
                break
            await asyncio.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)

    def master_pid(self) -> int | None:
        pid_file = self.root / "queue" / "pid" / "master.pid"
        try:
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def queued(self) -> int:
        """Messages in the queue directories (incoming, active, deferred)."""
        queue = self.root / "queue"
        return sum(
            1
            for sub in ("incoming", "active", "deferred")
            for p in (queue / sub).rglob("*")
            if p.is_file()
        )

    def log_tail(self, lines: int = 20) -> str:
        path = self.root / "maillog"
        text = path.read_text(errors="replace") if path.exists() else "(no maillog)"
        return "\n".join(text.splitlines()[-lines:])

    def version(self) -> str:
        done = subprocess.run(
            ["postconf", "-c", str(self.conf), "-h", "mail_version"],
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.match(r"[\d.]+", done.stdout.strip())
        return f"Postfix {found[0]}" if found else "Postfix"
