"""SPF, DKIM and DMARC on replies, end to end: a real DNS server on loopback publishes the
records, real SMTP carries the mail, the API shows what the relay concluded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email import policy
from typing import Any

import aiosmtplib
import pytest

from relay.dkim_signing import DkimSigner, dkim_txt_value, generate_rsa_key
from tests.conftest import Database
from tests.harness import FLEET_INBOX, PARTNER_INBOX, Accounts, LiveRelay, live_relay, reply_mail

FLEET_DOMAIN = "fleet.example"
SELECTOR = "s1"


@pytest.fixture(scope="module")
def fleet_key() -> tuple[bytes, str]:
    return generate_rsa_key(2048)


def publish_dkim(live: LiveRelay, key: tuple[bytes, str], domain: str = FLEET_DOMAIN) -> None:
    live.dns.add_txt(f"{SELECTOR}._domainkey.{domain}", dkim_txt_value(key[1]))


def signed(raw: bytes, key: tuple[bytes, str], domain: str = FLEET_DOMAIN) -> bytes:
    return DkimSigner(SELECTOR, domain, key[0]).sign(raw)


async def fleet_alias(live: LiveRelay, policy_name: str | None = None) -> tuple[Accounts, Any, str]:
    """A ticket whose fleet uses `policy_name`, and the alias the fleet answers to."""
    extra = {"authPolicy": policy_name} if policy_name else {}
    partner = await live.add_partner()
    fleet = await live.add_fleet(**extra)
    acc = Accounts(partner["id"], partner["apiKey"], fleet["id"])
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    [mail] = await live.sink.handler.wait_for(FLEET_INBOX)
    return acc, ticket, mail.message["Reply-To"].addresses[0].addr_spec


def reply_bytes(alias: str, text: str = "We found the umbrella.", **headers: str) -> bytes:
    return reply_mail(FLEET_INBOX, alias, text, **headers).as_bytes(policy=policy.SMTP)


async def refused(live: LiveRelay, raw: bytes, alias: str) -> aiosmtplib.SMTPResponseException:
    with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
        await live.send(raw, alias)
    return caught.value


async def last_message(live: LiveRelay, acc: Accounts, ticket_id: int) -> Any:
    return (await live.ticket(acc, ticket_id))["conversation"][-1]


async def test_an_aligned_dkim_signature_is_accepted_under_reject(
    live: LiveRelay, fleet_key: tuple[bytes, str]
) -> None:
    publish_dkim(live, fleet_key)
    acc, ticket, alias = await fleet_alias(live, "reject")

    await live.send(signed(reply_bytes(alias), fleet_key), alias)

    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    assert "We found the umbrella." in forward.text()
    message = await last_message(live, acc, ticket["id"])
    assert message["disposition"] == "forwarded"
    auth = message["authentication"]
    assert auth["dkim"] == "pass" and auth["dkimDomains"] == [FLEET_DOMAIN]
    assert auth["aligned"] is True
    assert auth["spf"] == "none"
    assert auth["policy"] == "reject" and auth["action"] == "accept"
    assert auth["source"] == "relay"


async def test_a_broken_signature_and_failing_spf_are_refused_under_reject(
    live: LiveRelay, fleet_key: tuple[bytes, str]
) -> None:
    publish_dkim(live, fleet_key)
    live.dns.add_txt(FLEET_DOMAIN, "v=spf1 ip4:192.0.2.1 -all")
    acc, ticket, alias = await fleet_alias(live, "reject")
    raw = signed(reply_bytes(alias), fleet_key).replace(b"We found", b"We lost")

    error = await refused(live, raw, alias)

    assert error.code == 550
    assert error.message.startswith("5.7.1")
    assert "spf=fail" in error.message and "dkim=fail" in error.message
    detail = await live.ticket(acc, ticket["id"])
    assert len(detail["conversation"]) == 1  # only the partner's opening message
    await asyncio.sleep(0.2)
    assert live.sink.handler.for_rcpt(PARTNER_INBOX) == []


async def test_a_forged_authentication_results_header_changes_nothing(live: LiveRelay) -> None:
    live.dns.add_txt(FLEET_DOMAIN, "v=spf1 -all")
    acc, ticket, alias = await fleet_alias(live, "reject")
    forged = (
        b"Authentication-Results: "
        + live.settings.domain.encode()
        + b"; spf=pass smtp.mailfrom=fleet.example; dkim=pass header.d=fleet.example;"
        + b" dmarc=pass header.from=fleet.example\r\n"
        + reply_bytes(alias)
    )
    error = await refused(live, forged, alias)
    assert error.code == 550 and "spf=fail" in error.message

    # Under "record" it is taken, and the stored verdict is the relay's own.
    await live.http.patch(
        f"/v1/admin/fleets/{acc.fleet_id}", headers=live.admin, json={"authPolicy": "record"}
    )
    await live.send(forged, alias)
    auth = (await last_message(live, acc, ticket["id"]))["authentication"]
    assert (auth["spf"], auth["dkim"], auth["dmarc"], auth["aligned"]) == (
        "fail",
        "none",
        "none",
        False,
    )


async def test_spf_pass_for_the_from_domain_is_enough(live: LiveRelay) -> None:
    live.dns.add_txt(FLEET_DOMAIN, "v=spf1 ip4:127.0.0.1 -all")
    live.dns.add_txt(f"_dmarc.{FLEET_DOMAIN}", "v=DMARC1; p=reject")
    acc, ticket, alias = await fleet_alias(live, "reject")
    await live.send(reply_bytes(alias), alias)
    auth = (await last_message(live, acc, ticket["id"]))["authentication"]
    assert auth["spf"] == "pass" and auth["spfDomain"] == FLEET_DOMAIN
    assert auth["dmarc"] == "pass" and auth["dmarcPolicy"] == "reject"


async def test_quarantine_keeps_the_message_and_tells_the_partner(live: LiveRelay) -> None:
    acc, ticket, alias = await fleet_alias(live, "quarantine")
    reply = await live.send(reply_bytes(alias), alias)
    assert "queued" in reply

    message = await last_message(live, acc, ticket["id"])
    assert message["disposition"] == "quarantined"
    assert "not authenticated" in message["dispositionReason"]
    assert message["body"] == "We found the umbrella."
    detail = await live.ticket(acc, ticket["id"])
    assert detail["attention"].startswith("mail quarantined")
    assert [e["kind"] for e in detail["events"]].count("mail.quarantined") == 1
    await asyncio.sleep(0.3)
    assert live.sink.handler.for_rcpt(PARTNER_INBOX) == []


async def test_the_from_domains_dmarc_reject_is_honoured_under_record(live: LiveRelay) -> None:
    live.dns.add_txt(f"_dmarc.{FLEET_DOMAIN}", "v=DMARC1; p=reject")
    acc, ticket, alias = await fleet_alias(live)  # the relay default: record
    error = await refused(live, reply_bytes(alias), alias)
    assert error.code == 550
    assert "DMARC policy of fleet.example" in error.message


async def test_unauthenticated_mail_under_record_is_forwarded_with_its_verdict(
    live: LiveRelay,
) -> None:
    acc, ticket, alias = await fleet_alias(live)
    await live.send(reply_bytes(alias), alias)
    await live.sink.handler.wait_for(PARTNER_INBOX)
    auth = (await last_message(live, acc, ticket["id"]))["authentication"]
    assert auth["aligned"] is False and auth["action"] == "accept"
    assert auth["policy"] == "record"


async def test_dns_failure_asks_the_sender_to_retry_under_reject(live: LiveRelay) -> None:
    acc, ticket, alias = await fleet_alias(live, "reject")
    live.dns.servfail = True
    error = await refused(live, reply_bytes(alias), alias)
    assert error.code == 451 and error.message.startswith("4.4.3")
    live.dns.servfail = False
    live.relay.pipeline.authenticator.resolver.clear_cache()  # type: ignore[union-attr]
    live.dns.add_txt(FLEET_DOMAIN, "v=spf1 ip4:127.0.0.1 -all")
    await live.send(reply_bytes(alias), alias)  # the retry gets through
    await live.sink.handler.wait_for(PARTNER_INBOX)


async def test_partner_mail_follows_the_default_not_the_fleets_policy(live: LiveRelay) -> None:
    live.dns.add_txt(FLEET_DOMAIN, "v=spf1 ip4:127.0.0.1 -all")
    acc, ticket, alias = await fleet_alias(live, "reject")
    await live.send(reply_bytes(alias), alias)
    [forward] = await live.sink.handler.wait_for(PARTNER_INBOX)
    partner_alias = forward.message["Reply-To"].addresses[0].addr_spec

    # partner.example publishes nothing: unauthenticated, but the relay default is record.
    answer = reply_mail(PARTNER_INBOX, partner_alias, "Thanks, we will pick it up.")
    await live.send(answer, partner_alias, mail_from=PARTNER_INBOX)

    await live.sink.handler.wait_for(FLEET_INBOX, count=2)
    auth = (await last_message(live, acc, ticket["id"]))["authentication"]
    assert auth["aligned"] is False
    assert (auth["policy"], auth["action"]) == ("record", "accept")


async def test_fleet_policy_is_validated_and_changeable(live: LiveRelay) -> None:
    fleet = await live.add_fleet()
    bad = await live.http.patch(
        f"/v1/admin/fleets/{fleet['id']}", headers=live.admin, json={"authPolicy": "drop"}
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert "authPolicy" in str(bad.json()["invalidParams"])
    good = await live.http.patch(
        f"/v1/admin/fleets/{fleet['id']}", headers=live.admin, json={"authPolicy": "quarantine"}
    )
    assert good.status_code == 200 and good.json()["authPolicy"] == "quarantine"
    missing = await live.http.patch(
        "/v1/admin/fleets/9999", headers=live.admin, json={"authPolicy": None}
    )
    assert missing.status_code == 404


@pytest.fixture
async def behind_front(database: Database) -> AsyncIterator[LiveRelay]:
    async with live_relay(
        database.url,
        database.schema,
        trusted_front_mtas="127.0.0.0/8",
        trusted_authserv_ids="mx.front.example",
        auth_policy="reject",
    ) as relay:
        yield relay


async def test_a_trusted_front_mtas_results_are_believed(behind_front: LiveRelay) -> None:
    live = behind_front
    acc, ticket, alias = await fleet_alias(live)
    header = (
        b"Authentication-Results: mx.front.example; spf=pass smtp.mailfrom=fleet.example;"
        b" dkim=pass header.d=fleet.example; dmarc=pass header.from=fleet.example\r\n"
    )
    await live.send(header + reply_bytes(alias), alias)
    auth = (await last_message(live, acc, ticket["id"]))["authentication"]
    assert auth["source"] == "trusted:mx.front.example"
    assert auth["dmarc"] == "pass"

    # The same header under a name the operator did not configure is nobody's word.
    other = header.replace(b"mx.front.example", b"mx.attacker.example")
    error = await refused(live, other + reply_bytes(alias, "Second"), alias)
    assert error.code == 550
