"""The `support-relay` console script, run for real in a subprocess against a SQLite file."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from relay.sink import free_port
from tests.harness import live_relay

SCRIPT = Path(sys.executable).with_name("support-relay")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "api.cli"]
TIMEOUT = 30.0


@dataclass
class Cli:
    """Runs the console script with a clean RELAY_* environment in its own directory."""

    root: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.root / "relay.db"

    @property
    def db_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db_path}"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env.update(
            RELAY_DATABASE_URL=self.db_url,
            RELAY_OUTBOUND=f"maildir:{self.outbox}",
            RELAY_HTTP_PORT=str(free_port()),
            RELAY_SMTP_PORT=str(free_port()),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)  # a test's own settings win
        env.update(extra)
        return env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMMAND, *args],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def ok(self, *args: str) -> Any:
        """Run a command that must succeed and print JSON; return the parsed JSON."""
        done = self.run(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return json.loads(done.stdout)

    @contextmanager
    def serving(self, *args: str) -> Iterator[Served]:
        stderr_path = self.root / "serve.stderr"
        with (
            open(stderr_path, "w") as stderr,
            subprocess.Popen(
                [*COMMAND, "serve", *args],
                cwd=self.root,
                env=self.env(),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            ) as proc,
        ):
            served = Served(proc, stderr_path)
            try:
                yield served
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(TIMEOUT)
                served.reader.join(TIMEOUT)


class Served:
    """A running `support-relay serve`: its stdout lines, read by a thread, and its exit."""

    def __init__(self, proc: subprocess.Popen[str], stderr_path: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_line(self, matches: Callable[[str], bool]) -> str:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out; stdout so far: {self.output}") from None
            if line is None:
                raise AssertionError(
                    f"exited {self.proc.wait()}; stdout {self.output}; "
                    f"stderr {self.stderr_path.read_text()}"
                )
            self.output.append(line)
            if matches(line):
                return line

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(TIMEOUT)


def wait_for_files(directory: Path, count: int = 1) -> list[Path]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        files = sorted(directory.glob("*")) if directory.is_dir() else []
        if len(files) >= count:
            return files
        time.sleep(0.05)
    raise AssertionError(f"no {count} file(s) in {directory}")


def test_partner_and_fleet_commands(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    partner = cli.ok(
        "partner",
        "add",
        "--name",
        "Acme Travel",
        "--contact-email",
        "HelpDesk@Partner.example",
        "--allowed-sender",
        "@Partner.example",
    )
    assert isinstance(partner["id"], int) and isinstance(partner["apiKeyId"], int)
    assert partner["apiKey"].startswith("sr_") and len(partner["apiKey"]) > 32
    assert partner["name"] == "Acme Travel"
    assert partner["contactEmail"] == "helpdesk@partner.example"
    assert partner["allowedSenders"] == ["@partner.example"]

    [listed] = cli.ok("partner", "list")
    assert listed["id"] == partner["id"] and listed["contactEmail"] == "helpdesk@partner.example"
    assert "apiKey" not in listed and "apiKeyId" not in listed

    fleet = cli.ok(
        "fleet", "add", "--name", "City Cabs", "--support-email", "dispatch@fleet.example"
    )
    assert isinstance(fleet["id"], int) and fleet["supportEmail"] == "dispatch@fleet.example"
    assert cli.ok("fleet", "list") == [fleet]
    assert cli.db_path.is_file()
    assert not (tmp_path / "var").exists()  # the configured database was used, not the default


async def test_keys_issued_and_revoked_by_cli_work_over_http(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    partner = cli.ok("partner", "add", "--name", "Acme", "--contact-email", "desk@acme.example")
    issued = cli.ok("key", "issue", "--partner", str(partner["id"]))
    assert issued["partnerId"] == partner["id"] and issued["apiKey"] != partner["apiKey"]
    assert cli.ok("key", "revoke", str(partner["apiKeyId"])) == {"revoked": partner["apiKeyId"]}

    async with live_relay(cli.db_url, None) as live:
        for key, status in ((issued["apiKey"], 200), (partner["apiKey"], 401)):
            response = await live.http.get(
                "/v1/support/tickets", headers={"Authorization": f"ApiKey {key}"}
            )
            assert response.status_code == status, response.text
        # The admin API sees what the CLI created.
        listed = await live.http.get("/v1/admin/partners", headers=live.admin)
        assert [p["id"] for p in listed.json()["partners"]] == [partner["id"]]


async def test_category_and_tag_commands_mirror_the_admin_api(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    lost = cli.ok("category", "add", "--name", "Lost item", "--description", "Left in a car")
    umbrella = cli.ok("category", "add", "--name", "Umbrella", "--parent", str(lost["id"]))
    assert umbrella["parentId"] == lost["id"]
    nested = cli.run("category", "add", "--name", "Blue", "--parent", str(umbrella["id"]))
    assert nested.returncode == 1 and "cannot have subcategories" in nested.stderr
    twice = cli.run("category", "add", "--name", "Lost item")
    assert twice.returncode == 1 and "already exists" in twice.stderr
    vip = cli.ok("tag", "add", "--name", "VIP", "--keyword", "VIP")
    assert vip["keyword"] == "vip"  # keywords are lower-case slugs
    bad = cli.run("tag", "add", "--name", "Bad", "--keyword", "two words")
    assert bad.returncode == 2 and "keyword" in bad.stderr and "Traceback" not in bad.stderr
    assert cli.ok("category", "archive", str(umbrella["id"])) == {"archived": umbrella["id"]}
    assert cli.run("category", "archive", str(umbrella["id"])).returncode == 1
    partner = cli.ok("partner", "add", "--name", "Acme", "--contact-email", "desk@acme.example")

    async with live_relay(cli.db_url, None) as live:
        auth = {"Authorization": f"ApiKey {partner['apiKey']}"}
        categories = (await live.http.get("/v1/support/categories", headers=auth)).json()
        assert categories == {
            "categories": [
                {
                    "id": lost["id"],
                    "name": "Lost item",
                    "description": "Left in a car",
                    "parentId": None,
                    "subcategories": [],  # the archived subcategory is gone
                }
            ]
        }
        tags = (await live.http.get("/v1/support/tags", headers=auth)).json()
        assert tags == {"tags": [{"id": vip["id"], "name": "VIP", "keyword": "vip"}]}
    assert [t["id"] for t in cli.ok("tag", "list")] == [vip["id"]]


def test_invalid_input_exits_2_and_changes_nothing(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    bad = cli.run("partner", "add", "--name", "X", "--contact-email", "not-an-email")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "error:" in bad.stderr and "contact_email" in bad.stderr
    assert "Traceback" not in bad.stderr

    bad_fleet = cli.run(
        "fleet", "add", "--name", "X", "--support-email", "a@b.example", "--allowed-sender", "nope"
    )
    assert bad_fleet.returncode == 2 and "allowed_senders" in bad_fleet.stderr
    assert "Traceback" not in bad_fleet.stderr

    # None of the refused commands left anything behind.
    assert cli.ok("partner", "list") == []


def test_unknown_ids_exit_1(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    no_partner = cli.run("key", "issue", "--partner", "4242")
    assert no_partner.returncode == 1 and no_partner.stdout == ""
    assert "no partner 4242" in no_partner.stderr and "Traceback" not in no_partner.stderr

    no_key = cli.run("key", "revoke", "4242")
    assert no_key.returncode == 1 and no_key.stdout == ""
    assert "no key 4242" in no_key.stderr and "Traceback" not in no_key.stderr


def test_migrate_on_an_empty_database(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    assert not cli.db_path.exists()
    first = cli.run("migrate")
    assert first.returncode == 0, first.stderr
    assert "database is up to date" in first.stdout
    assert cli.db_path.is_file()
    again = cli.run("migrate")
    assert again.returncode == 0 and "database is up to date" in again.stdout


def test_only_serving_needs_the_dkim_key(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "dkim.pem"
    dkim = {"RELAY_DKIM_SELECTOR": "relay2026", "RELAY_DKIM_KEY_FILE": str(key_file)}
    cli = Cli(tmp_path, dkim)
    # Configured first, generated second: the key the settings point at does not exist yet.
    made = cli.run("dkim", "generate", "--selector", "relay2026", "--key-file", str(key_file))
    assert made.returncode == 0, made.stderr
    assert key_file.is_file() and " IN TXT " in made.stdout

    # The admin commands send no mail: a missing or unreadable key does not stop them.
    # (A directory stands in for an unreadable file: the tests may run as root.)
    (tmp_path / "a-directory.pem").mkdir()
    for unusable in (tmp_path / "missing.pem", tmp_path / "a-directory.pem"):
        admin = Cli(tmp_path, {**dkim, "RELAY_DKIM_KEY_FILE": str(unusable)})
        migrated = admin.run("migrate")
        assert migrated.returncode == 0, migrated.stderr
        assert admin.ok("partner", "list") == []
        assert admin.ok("suppression", "list") == []

        # Serving does: one clear line and no start.
        served = admin.run("serve")
        assert served.returncode == 2, (served.stdout, served.stderr)
        assert served.stderr.startswith("configuration error: cannot read DKIM key file")
        assert served.stderr.count("\n") == 1 and "Traceback" not in served.stderr
        assert "support-relay serving" not in served.stdout


def test_dkim_generate_refuses_a_selector_the_signer_would_refuse(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "dkim.pem"
    for selector in ("relay_2026", "-relay", "relay..2026", "relay2026."):
        done = Cli(tmp_path).run(
            "dkim", "generate", f"--selector={selector}", "--key-file", str(key_file)
        )
        assert done.returncode == 2, (selector, done.stdout, done.stderr)
        assert done.stderr.startswith("error: the selector must be DNS labels"), done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert done.stdout == ""
        assert not key_file.exists() and not key_file.parent.exists()


@dataclass(frozen=True)
class DemoBanner:
    text: str
    key: str
    http: str  # base URL
    smtp_port: int


def read_demo_banner(served: Served) -> DemoBanner:
    """Wait for `serve --demo`'s banner (it ends with the curl example) and read it."""
    served.wait_for_line(lambda line: "curl" in line)
    served.wait_for_line(lambda line: "-d '" in line)
    text = "".join(served.output)
    key = re.search(r"Demo key\s+(\S+)", text)
    http = re.search(r"HTTP API\s+(http://\S+)", text)
    smtp = re.search(r"SMTP\s+127\.0\.0\.1:(\d+)", text)
    assert key and http and smtp, text
    return DemoBanner(text, key[1], http[1], int(smtp[1]))


def test_serve_demo_takes_a_ticket_and_writes_the_fleets_mail(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    with cli.serving("--demo") as served:
        banner = read_demo_banner(served)
        assert "DEMO-1001" in banner.text and f"ApiKey {banner.key}" in banner.text
        assert f"{banner.http}/v1/support/demand/trips/DEMO-1001/tickets" in banner.text

        with httpx.Client(base_url=banner.http, timeout=10) as client:
            response = client.post(
                "/v1/support/demand/trips/DEMO-1001/tickets",
                headers={"Authorization": f"ApiKey {banner.key}"},
                json={"subject": "Lost umbrella", "comment": "A blue umbrella, back seat."},
            )
            assert response.status_code == 201, response.text
            ticket = response.json()
            assert ticket["partnerTripId"] == "DEMO-1001"

        [path] = wait_for_files(cli.outbox / "new")
        raw = path.read_bytes()
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        assert message["To"].addresses[0].addr_spec == "dispatch@citycabs.example"
        assert f"[Ticket #{ticket['id']}]" in message["Subject"]
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        text = body.get_content()
        assert "A blue umbrella, back seat." in text and "DEMO-1001" in text
        assert b"partner@acme.example" not in raw.lower()

        assert served.stop() == 0


def test_plain_serve_creates_no_demo_data(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    with cli.serving() as served:
        line = served.wait_for_line(lambda line: "support-relay serving" in line)
        assert "api" in line and "smtp" in line and "worker" in line
        assert served.stop() == 0
    assert "Demo key" not in "".join(served.output)
    assert cli.ok("partner", "list") == []


def test_demo_command_runs_the_round_trip(tmp_path: Path) -> None:
    done = Cli(tmp_path).run("demo")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "no byte sent to one side contains the other side's address" in done.stdout
    assert "FAILED" not in done.stdout


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def _wait_for_children(pid: int, count: int, other_than: set[int] = frozenset()) -> set[int]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        children = _children(pid)
        if len(children) == count and not children & other_than:
            return children
        time.sleep(0.1)
    raise AssertionError(f"children of {pid}: {_children(pid)}, wanted {count}")


def _open_ticket(base: str, key: str, comment: str) -> int:
    # A new connection each time: the kernel spreads connections, not requests.
    with httpx.Client(base_url=base, timeout=10) as client:
        response = client.post(
            "/v1/support/demand/trips/DEMO-1001/tickets",
            headers={"Authorization": f"ApiKey {key}"},
            json={"subject": "Lost umbrella", "comment": comment},
        )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_processes_share_the_ports_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    cli = Cli(tmp_path, {"RELAY_MAX_OPEN_TICKETS_PER_TRIP": "100"})
    with cli.serving("--demo", "--processes", "2") as served:
        banner = read_demo_banner(served)
        first = _wait_for_children(served.proc.pid, 2)

        tickets = [_open_ticket(banner.http, banner.key, f"Comment {n}") for n in range(12)]
        wait_for_files(cli.outbox / "new", len(tickets))
        time.sleep(1.0)  # time for a duplicate to show, were a row sent twice
        mails = sorted((cli.outbox / "new").glob("*"))
        subjects = sorted(
            message_from_bytes(p.read_bytes(), policy=policy.default)["Subject"] for p in mails
        )
        # Each ticket's mail once: two workers never send one outbox row twice.
        assert len(subjects) == len(tickets) == len(set(subjects))
        alias = message_from_bytes(mails[0].read_bytes(), policy=policy.default)["Reply-To"]

        replies = 8
        for n in range(replies):  # a connection each, spread over both processes
            with smtplib.SMTP("127.0.0.1", banner.smtp_port, timeout=10) as client:
                client.sendmail(
                    "dispatch@citycabs.example",
                    [str(alias.addresses[0].addr_spec)],
                    (
                        "From: dispatch@citycabs.example\r\nTo: x@y.example\r\n"
                        f"Subject: Re: umbrella\r\nMessage-ID: <r{n}@citycabs.example>\r\n\r\n"
                        f"Reply number {n}.\r\n"
                    ).encode(),
                )
        wait_for_files(cli.outbox / "new", len(tickets) + replies)
        time.sleep(1.0)
        forwarded = list((cli.outbox / "new").glob("*"))
        assert len(forwarded) == len(tickets) + replies

        # A relay process that dies is replaced; the relay keeps answering meanwhile.
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        replaced = _wait_for_children(served.proc.pid, 2, other_than={victim})
        assert victim not in replaced and len(replaced & first) == 1
        _open_ticket(banner.http, banner.key, "After the restart")

        assert served.stop() == 0
    assert not any(_alive(pid) for pid in first | replaced)


def _alive(pid: int) -> bool:
    """Running, not exited (an exited child nobody has reaped yet is a zombie)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def test_relay_processes_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    with cli.serving("--processes", "2") as served:
        line = served.wait_for_line(lambda line: "support-relay serving" in line)
        assert "in 2 processes" in line
        children = _wait_for_children(served.proc.pid, 2)
        served.proc.kill()  # no chance to stop them: they must notice on their own
        served.proc.wait(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while any(_alive(pid) for pid in children):
            assert time.monotonic() < deadline, f"orphaned relay processes {children}"
            time.sleep(0.1)


def test_a_relay_process_that_cannot_start_stops_the_relay(tmp_path: Path) -> None:
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: nobody can share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = Cli(tmp_path, {"RELAY_SMTP_PORT": str(port)}).run("serve", "--processes", "2")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "before it was ready" in done.stderr
    assert "support-relay serving" not in done.stdout
    assert f"cannot listen for SMTP on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_processes_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    # RELAY_PROCESSES=2 must not stand in for a given but refused --processes 0.
    cli = Cli(tmp_path, {"RELAY_PROCESSES": "2"})
    for count in ("0", "65", "two"):
        done = cli.run("serve", "--processes", count)
        assert done.returncode == 2, (count, done.stdout, done.stderr)
        assert "argument --processes: must be a whole number from 1 to 64" in done.stderr
        assert "support-relay serving" not in done.stdout and "Traceback" not in done.stderr


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = Cli(tmp_path, {"RELAY_HTTP_PORT": str(port)}).run("serve")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"error: cannot listen for HTTP on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
