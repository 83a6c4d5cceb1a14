"""Outbound DKIM: `support-relay dkim generate` makes the key and the record; the relay signs
every message with it; a receiver that looks the record up in DNS finds the signature good."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from api.cli import main
from relay.authentication import Authenticator
from relay.dns import Resolver
from tests.conftest import Database
from tests.harness import FLEET_INBOX, PARTNER_INBOX, live_relay, reply_mail


def record_value(printed: str) -> tuple[str, str]:
    """(owner name, TXT value) from the zone-file line the command printed."""
    line = next(ln for ln in printed.splitlines() if " IN TXT " in ln)
    owner = line.split()[0].rstrip(".")
    value = "".join(re.findall(r'"([^"]*)"', line))
    return owner, value


def generate(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(
        ["dkim", "generate", "--selector", "relay2026", "--key-file", str(tmp_path / "dkim.pem")]
        + list(extra)
    )
    return code, capsys.readouterr().out


async def test_generated_key_signs_every_message_and_verifies_from_dns(
    database: Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELAY_DOMAIN", "relay.example")
    code, printed = generate(tmp_path, capsys)
    assert code == 0
    key_file = tmp_path / "dkim.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    owner, value = record_value(printed)
    assert owner == "relay2026._domainkey.relay.example"
    assert value.startswith("v=DKIM1; k=rsa; p=")
    assert f"RELAY_DKIM_KEY_FILE={key_file.resolve()}" in printed
    # A second run never overwrites the key silently.
    again, _ = generate(tmp_path, capsys)
    assert again == 1

    async with live_relay(
        database.url,
        database.schema,
        domain="relay.example",
        dkim_selector="relay2026",
        dkim_key_file=key_file,
    ) as live:
        live.dns.add_txt(owner, value)
        receiver = Authenticator(Resolver(live.dns.servers, timeout=2.0))
        acc = await live.accounts()
        await live.put_trip(acc)
        await live.open_ticket(acc)
        [to_fleet] = await live.sink.handler.wait_for(FLEET_INBOX)
        alias = to_fleet.message["Reply-To"].addresses[0].addr_spec
        await live.send(reply_mail(FLEET_INBOX, alias, "Found it."), alias)
        [to_partner] = await live.sink.handler.wait_for(PARTNER_INBOX)

        for mail in (to_fleet, to_partner):
            signature = mail.message["DKIM-Signature"]
            assert signature is not None
            assert "d=relay.example" in signature and "s=relay2026" in signature
            verdict = await receiver.evaluate(
                mail.raw,
                client_ip="127.0.0.1",
                helo="relay.example",
                mail_from=mail.mail_from,
                from_domain="relay.example",
            )
            assert verdict.dkim == "pass", verdict
            assert verdict.dkim_domains == ("relay.example",)
            assert verdict.aligned  # DMARC-aligned: From is an alias on the relay domain

            # Any change on the way breaks it.
            tampered = mail.raw.replace(b"Found it.", b"Lost it.").replace(
                b"Lost umbrella", b"Lost wallet"
            )
            broken = await receiver.evaluate(
                tampered,
                client_ip="127.0.0.1",
                helo="relay.example",
                mail_from=mail.mail_from,
                from_domain="relay.example",
            )
            assert broken.dkim == "fail"


def test_a_half_configured_or_unreadable_key_stops_the_relay_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_DKIM_SELECTOR", "s1")
    assert main(["migrate"]) == 2
    assert "RELAY_DKIM_SELECTOR and RELAY_DKIM_KEY_FILE" in capsys.readouterr().err

    monkeypatch.setenv("RELAY_DKIM_KEY_FILE", str(tmp_path / "missing.pem"))
    assert main(["serve"]) == 2
    assert "cannot read DKIM key file" in capsys.readouterr().err

    (tmp_path / "bad.pem").write_text("not a key")
    monkeypatch.setenv("RELAY_DKIM_KEY_FILE", str(tmp_path / "bad.pem"))
    assert main(["serve"]) == 2
    assert "DKIM key file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("RELAY_BOUNCE_SECRET", "short", "at least 16 characters"),
        ("RELAY_DNS_SERVERS", "dns.example:53", "not an IP address"),
        ("RELAY_TRUSTED_FRONT_MTAS", "10.0.0.0/33", "not an IP address or CIDR"),
        ("RELAY_AUTH_POLICY", "drop", "RELAY_AUTH_POLICY"),
    ],
)
def test_bad_trust_settings_are_configuration_errors(
    name: str,
    value: str,
    said: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error") and said in err
    assert "Traceback" not in err


async def test_a_message_that_cannot_be_signed_fails_at_once(
    database: Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Signing is deterministic: bytes dkimpy cannot parse fail on the first attempt, as a
    permanent failure, instead of being retried until the row expires."""
    from datetime import timedelta

    from storage import outbox
    from storage.db import transaction
    from storage.models import OutboxItem

    monkeypatch.setenv("RELAY_DOMAIN", "relay.example")
    assert generate(tmp_path, capsys)[0] == 0
    async with live_relay(
        database.url,
        database.schema,
        domain="relay.example",
        dkim_selector="relay2026",
        dkim_key_file=tmp_path / "dkim.pem",
    ) as live:
        acc, ticket_id, _ = await live.fleet_ticket()
        async with transaction(live.relay.sessions) as session:
            item = await outbox.enqueue(
                session,
                ticket_id=ticket_id,
                message_id=None,
                recipient_side="fleet",
                mail_from="bounces@relay.example",
                rcpt_to=FLEET_INBOX,
                raw=b"not a header line\r\n\r\nbody\r\n",
                lifetime=timedelta(days=4),
            )
            await session.flush()
            item_id = item.id
        live.relay.worker.notify()
        [failed] = await live.events(acc, ticket_id, "delivery.failed")
        assert failed["detail"]["outboxId"] == item_id
        assert "cannot DKIM-sign" in failed["detail"]["error"]
        async with live.relay.sessions() as session:
            row = await session.get(OutboxItem, item_id)
            assert row is not None and (row.status, row.attempts) == ("failed", 1)
        events = (await live.ticket(acc, ticket_id))["events"]
        assert not [e for e in events if e["kind"] == "delivery.deferred"]
