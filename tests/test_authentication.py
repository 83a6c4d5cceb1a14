"""SPF, DKIM and DMARC verdicts against a real DNS server on loopback, and the resolver itself."""

from __future__ import annotations

import dataclasses
import logging
import time
from email import policy
from email.message import EmailMessage
from typing import Any

import dkim
import pytest
import spf

from relay import dkim_check
from relay.auth_policy import decide
from relay.authentication import Authenticator, AuthVerdict
from relay.dkim_signing import DkimSigner, dkim_txt_value, generate_rsa_key
from relay.dmarc_check import organizational_domain
from relay.dns import DnsTemporaryError, Resolver
from relay.domain_names import ascii_domain
from relay.lookup_scope import LookupScope
from relay.spf_check import check_spf
from tests.dns_server import LocalDNS

pytest_plugins = ["tests.dns_fixtures"]

GOOD_IP = "192.0.2.10"  # inside a.example's SPF record
OTHER_IP = "198.51.100.7"  # outside every record
FRONT_IP = "192.0.2.200"  # the trusted front MTA in the trusted-front tests


Keys = dict[str, tuple[bytes, str]]


@pytest.fixture(scope="module")
def keys() -> Keys:
    """One 2048-bit key per signing domain, made once for the module."""
    return {name: generate_rsa_key(2048) for name in ("a", "other")}


def publish_key(server: LocalDNS, keys: Keys, name: str, domain: str) -> DkimSigner:
    server.add_txt(f"s1._domainkey.{domain}", dkim_txt_value(keys[name][1]))
    return DkimSigner("s1", domain, keys[name][0])


def message(
    from_addr: str = "alice@a.example",
    body: str = "Hello from the fleet.\n",
    headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    msg = EmailMessage()
    for name, value in headers:
        msg[name] = value
    msg["From"] = from_addr
    msg["To"] = "support@relay.example"
    msg["Subject"] = "Ticket 42"
    msg["Message-ID"] = "<m1@a.example>"
    msg.set_content(body)
    return msg.as_bytes(policy=policy.SMTP)


def authenticator(server: LocalDNS, *, dns_timeout: float = 2.0, **options: Any) -> Authenticator:
    resolver = Resolver(server.servers, timeout=dns_timeout)
    return Authenticator(resolver, **options)


async def evaluate(
    auth: Authenticator,
    raw: bytes,
    *,
    client_ip: str = GOOD_IP,
    mail_from: str = "bounce@a.example",
    from_domain: str = "a.example",
    helo: str = "mx.a.example",
) -> AuthVerdict:
    return await auth.evaluate(
        raw, client_ip=client_ip, helo=helo, mail_from=mail_from, from_domain=from_domain
    )


# -- SPF -----------------------------------------------------------------------------------


async def test_spf_pass_fail_softfail_none(dns_server: LocalDNS) -> None:
    dns_server.add_txt("a.example", "v=spf1 ip4:192.0.2.0/25 -all")
    dns_server.add_txt("soft.example", "v=spf1 ip4:192.0.2.0/25 ~all")
    dns_server.add_txt("nospf.example", "some-site-verification=abc")
    auth = authenticator(dns_server)
    raw = message()

    passed = await evaluate(auth, raw)
    failed = await evaluate(auth, raw, client_ip=OTHER_IP)
    soft = await evaluate(auth, raw, client_ip=OTHER_IP, mail_from="x@soft.example")
    none = await evaluate(auth, raw, mail_from="x@nospf.example")

    assert (passed.spf, passed.spf_domain) == ("pass", "a.example")
    assert (failed.spf, failed.spf_domain) == ("fail", "a.example")
    assert (soft.spf, soft.spf_domain) == ("softfail", "soft.example")
    assert (none.spf, none.spf_domain) == ("none", "nospf.example")


async def test_spf_include_and_redirect(dns_server: LocalDNS) -> None:
    dns_server.add_txt("a.example", "v=spf1 include:_spf.esp.example -all")
    dns_server.add_txt("_spf.esp.example", "v=spf1 ip4:203.0.113.0/24 -all")
    dns_server.add_txt("c.example", "v=spf1 redirect=a.example")
    auth = authenticator(dns_server)

    via_include = await evaluate(auth, message(), client_ip="203.0.113.9")
    via_redirect = await evaluate(auth, message(), client_ip="203.0.113.9", mail_from="x@c.example")
    outside = await evaluate(auth, message(), client_ip=OTHER_IP, mail_from="x@c.example")

    assert via_include.spf == "pass"
    assert (via_redirect.spf, via_redirect.spf_domain) == ("pass", "c.example")
    assert outside.spf == "fail"
    assert dns_server.count("_spf.esp.example", "TXT") >= 1


async def test_spf_mx_and_ipv6_lookups_go_through_the_resolver(dns_server: LocalDNS) -> None:
    dns_server.add_txt("a.example", "v=spf1 mx a:out.a.example -all")
    dns_server.add_mx("a.example", "mx1.a.example", 10)
    dns_server.add_aaaa("mx1.a.example", "2001:db8::25")
    dns_server.add_a("out.a.example", "192.0.2.99")
    auth = authenticator(dns_server)

    over_v6 = await evaluate(auth, message(), client_ip="2001:db8::25")
    over_a = await evaluate(auth, message(), client_ip="::ffff:192.0.2.99")
    elsewhere = await evaluate(auth, message(), client_ip="2001:db8::26")

    assert over_v6.spf == "pass"
    assert over_a.spf == "pass"
    assert elsewhere.spf == "fail"
    assert dns_server.count("mx1.a.example", "AAAA") == 1  # the resolver cache answered again


async def test_spf_null_sender_checks_the_helo_domain(dns_server: LocalDNS) -> None:
    dns_server.add_txt("mx.a.example", "v=spf1 ip4:192.0.2.10 -all")
    auth = authenticator(dns_server)

    verdict = await evaluate(auth, message(), mail_from="", helo="mx.a.example")
    bracketed = await evaluate(auth, message(), mail_from="<>", client_ip=OTHER_IP)

    assert (verdict.spf, verdict.spf_domain) == ("pass", "mx.a.example")
    assert (bracketed.spf, bracketed.spf_domain) == ("fail", "mx.a.example")


async def test_spf_temperror_when_the_server_is_silent(dns_server: LocalDNS) -> None:
    dns_server.add_txt("a.example", "v=spf1 ip4:192.0.2.0/25 -all")
    dns_server.silent = True
    auth = authenticator(dns_server, dns_timeout=0.3)

    started = time.monotonic()
    verdict = await evaluate(auth, message())
    elapsed = time.monotonic() - started

    assert verdict.spf == "temperror"
    assert verdict.dkim == "none"  # unsigned: nothing to look up
    assert verdict.dmarc == "temperror"
    assert dns_server.query_count >= 2
    assert elapsed < 2.0


async def test_overall_timeout_bounds_the_evaluation(dns_server: LocalDNS, keys: Keys) -> None:
    signer = publish_key(dns_server, keys, "a", "a.example")
    dns_server.silent = True
    auth = authenticator(dns_server, dns_timeout=5.0, timeout=0.5)

    started = time.monotonic()
    verdict = await evaluate(auth, signer.sign(message()))
    elapsed = time.monotonic() - started

    assert (verdict.spf, verdict.dkim, verdict.dmarc) == ("temperror",) * 3
    assert elapsed < 1.5


async def test_bad_input_never_raises(dns_server: LocalDNS) -> None:
    auth = authenticator(dns_server)

    verdict = await auth.evaluate(
        b"\x00\xff not a message", client_ip="not-an-ip", helo="", mail_from="", from_domain=""
    )
    odd_domain = await evaluate(auth, message(), from_domain="a.example\r\nX-Evil: 1")

    assert verdict.spf == "permerror"
    assert verdict.dkim == "none"
    assert verdict.dmarc == "permerror"
    assert odd_domain.dmarc == "permerror"


def test_spf_and_dkim_log_under_their_own_module_names(
    dns_server: LocalDNS, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**_: object) -> None:
        raise RuntimeError("pyspf tripped")

    monkeypatch.setattr(spf, "check2", broken)
    scope = LookupScope(Resolver(dns_server.servers, timeout=1.0), time.monotonic() + 5)

    with caplog.at_level(logging.WARNING):
        assert check_spf(scope, GOOD_IP, "x@a.example", "mx.a.example") == "permerror"

    assert [r.name for r in caplog.records] == ["relay.spf_check"]
    assert dkim_check._dkimpy_log.name == "relay.dkim_check"


# -- DKIM ----------------------------------------------------------------------------------


async def test_dkim_pass_with_key_in_dns(dns_server: LocalDNS, keys: Keys) -> None:
    signer = publish_key(dns_server, keys, "a", "a.example")
    auth = authenticator(dns_server)

    verdict = await evaluate(auth, signer.sign(message()), client_ip=OTHER_IP)

    assert verdict.dkim == "pass"
    assert verdict.dkim_domains == ("a.example",)


async def test_dkim_fails_when_the_body_changes_after_signing(
    dns_server: LocalDNS, keys: Keys
) -> None:
    signer = publish_key(dns_server, keys, "a", "a.example")
    auth = authenticator(dns_server)
    signed = signer.sign(message(body="Pay invoice 100.\n"))

    verdict = await evaluate(auth, signed.replace(b"100", b"900"), client_ip=OTHER_IP)

    assert verdict.dkim == "fail"
    assert verdict.dkim_domains == ()


async def test_dkim_none_when_unsigned(dns_server: LocalDNS) -> None:
    auth = authenticator(dns_server)

    verdict = await evaluate(auth, message())

    assert verdict.dkim == "none"
    assert dns_server.count("s1._domainkey.a.example") == 0


async def test_dkim_permerror_when_the_key_is_missing(dns_server: LocalDNS, keys: Keys) -> None:
    signer = DkimSigner("s1", "a.example", keys["a"][0])  # key never published
    auth = authenticator(dns_server)

    verdict = await evaluate(auth, signer.sign(message()))

    assert verdict.dkim == "permerror"


async def test_dkim_multiple_signatures(dns_server: LocalDNS, keys: Keys) -> None:
    signer_a = publish_key(dns_server, keys, "a", "a.example")
    signer_other = publish_key(dns_server, keys, "other", "other.example")
    unpublished = DkimSigner("s2", "third.example", keys["other"][0])
    auth = authenticator(dns_server)
    both = signer_other.sign(signer_a.sign(message()))

    verdict = await evaluate(auth, both, client_ip=OTHER_IP)
    one_good = await evaluate(auth, unpublished.sign(signer_other.sign(message())))

    assert verdict.dkim == "pass"
    assert set(verdict.dkim_domains) == {"a.example", "other.example"}
    assert one_good.dkim == "pass"
    assert one_good.dkim_domains == ("other.example",)


async def test_dkim_checks_no_more_signatures_than_configured(
    dns_server: LocalDNS, keys: Keys
) -> None:
    signer_other = publish_key(dns_server, keys, "other", "other.example")
    unpublished = DkimSigner("s2", "third.example", keys["other"][0])
    # The good signature sits below one whose key is not published.
    raw = unpublished.sign(signer_other.sign(message()))

    verdict = await evaluate(authenticator(dns_server, max_dkim_signatures=1), raw)

    assert verdict.dkim == "permerror"
    assert dns_server.count("s1._domainkey.other.example") == 0


async def test_dkim_key_longer_than_a_udp_answer_comes_over_tcp(dns_server: LocalDNS, keys) -> None:
    signer = publish_key(dns_server, keys, "a", "a.example")
    dns_server.max_udp_size = 300  # a 2048-bit key record does not fit
    auth = authenticator(dns_server)

    verdict = await evaluate(auth, signer.sign(message()), client_ip=OTHER_IP)

    assert verdict.dkim == "pass"
    assert dns_server.protocols()["tcp"] >= 1


# -- DMARC ---------------------------------------------------------------------------------


async def test_dmarc_pass_via_aligned_dkim_only(dns_server: LocalDNS, keys: Keys) -> None:
    signer = publish_key(dns_server, keys, "a", "a.example")
    dns_server.add_txt("a.example", "v=spf1 -all")
    dns_server.add_txt("_dmarc.a.example", "v=DMARC1; p=reject; rua=mailto:d@a.example")
    auth = authenticator(dns_server)

    verdict = await evaluate(auth, signer.sign(message()))

    assert (verdict.spf, verdict.dkim) == ("fail", "pass")
    assert (verdict.dmarc, verdict.dmarc_policy, verdict.aligned) == ("pass", "reject", True)


async def test_dmarc_pass_via_aligned_spf_only(dns_server: LocalDNS) -> None:
    dns_server.add_txt("a.example", "v=spf1 ip4:192.0.2.0/25 -all")
    dns_server.add_txt("_dmarc.a.example", "v=DMARC1; p=quarantine")
    auth = authenticator(dns_server)

    verdict = await evaluate(auth, message())

    assert (verdict.spf, verdict.dkim) == ("pass", "none")
    assert (verdict.dmarc, verdict.dmarc_policy, verdict.aligned) == ("pass", "quarantine", True)


async def test_dmarc_fail_when_nothing_aligns(dns_server: LocalDNS, keys: Keys) -> None:
    signer = publish_key(dns_server, keys, "other", "other.example")
    dns_server.add_txt("other.example", "v=spf1 ip4:192.0.2.0/25 -all")
    dns_server.add_txt("_dmarc.a.example", "v=DMARC1; p=reject")
    auth = authenticator(dns_server)

    verdict = await evaluate(auth, signer.sign(message()), mail_from="bounce@other.example")

    assert (verdict.spf, verdict.dkim, verdict.dkim_domains) == ("pass", "pass", ("other.example",))
    assert (verdict.dmarc, verdict.dmarc_policy, verdict.aligned) == ("fail", "reject", False)


async def test_dmarc_relaxed_alignment_accepts_a_subdomain(
    dns_server: LocalDNS, keys: Keys
) -> None:
    signer = publish_key(dns_server, keys, "a", "a.example")
    dns_server.add_txt("_dmarc.a.example", "v=DMARC1; p=reject; sp=quarantine")
    auth = authenticator(dns_server)
    raw = signer.sign(message(from_addr="news@news.a.example"))

    verdict = await evaluate(auth, raw, client_ip=OTHER_IP, from_domain="news.a.example")

    assert (verdict.dkim, verdict.dmarc, verdict.aligned) == ("pass", "pass", True)
    assert verdict.dmarc_policy == "quarantine"  # sp= applies: found at the org domain


async def test_dmarc_strict_alignment_rejects_a_subdomain(dns_server: LocalDNS, keys: Keys) -> None:
    signer = publish_key(dns_server, keys, "a", "a.example")
    dns_server.add_txt("a.example", "v=spf1 ip4:192.0.2.0/25 -all")
    dns_server.add_txt("_dmarc.news.a.example", "v=DMARC1; p=reject; adkim=s; aspf=s")
    auth = authenticator(dns_server)
    raw = signer.sign(message(from_addr="news@news.a.example"))

    verdict = await evaluate(auth, raw, from_domain="news.a.example")

    assert (verdict.spf, verdict.dkim) == ("pass", "pass")
    assert (verdict.dmarc, verdict.dmarc_policy, verdict.aligned) == ("fail", "reject", False)


async def test_dmarc_falls_back_to_the_organizational_domain(
    dns_server: LocalDNS, keys: Keys
) -> None:
    signer = publish_key(dns_server, keys, "a", "example.com")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=none; sp=reject")
    auth = authenticator(dns_server)
    raw = signer.sign(message(from_addr="robot@mail.example.com"))

    verdict = await evaluate(
        auth, raw, client_ip=OTHER_IP, mail_from="", helo="", from_domain="mail.example.com"
    )

    assert dns_server.count("_dmarc.mail.example.com", "TXT") == 1
    assert dns_server.count("_dmarc.example.com", "TXT") == 1
    assert (verdict.dmarc, verdict.dmarc_policy, verdict.aligned) == ("pass", "reject", True)


async def test_dmarc_none_without_a_record_but_alignment_is_computed(
    dns_server: LocalDNS, keys
) -> None:
    signer = publish_key(dns_server, keys, "a", "a.example")
    auth = authenticator(dns_server)

    aligned = await evaluate(auth, signer.sign(message()), client_ip=OTHER_IP)
    unaligned = await evaluate(
        auth, signer.sign(message(from_addr="x@b.example")), from_domain="b.example"
    )

    assert (aligned.dmarc, aligned.dmarc_policy, aligned.aligned) == ("none", None, True)
    assert (unaligned.dmarc, unaligned.dmarc_policy, unaligned.aligned) == ("none", None, False)


async def test_dmarc_looks_up_an_internationalized_from_domain_as_a_labels(
    dns_server: LocalDNS,
) -> None:
    dns_server.add_txt("xn--bcher-kva.example", "v=spf1 ip4:192.0.2.0/25 -all")
    dns_server.add_txt("_dmarc.xn--bcher-kva.example", "V=DMARC1; p=quarantine")
    auth = authenticator(dns_server)

    verdict = await evaluate(
        auth, message(), mail_from="x@xn--bcher-kva.example", from_domain="Bücher.example"
    )

    assert verdict.from_domain == "xn--bcher-kva.example"
    assert (verdict.dmarc, verdict.dmarc_policy, verdict.aligned) == ("pass", "quarantine", True)


async def test_dmarc_aligns_a_sharp_s_domain_by_idna_2008(dns_server: LocalDNS) -> None:
    # IDNA 2003 would look up fass.de, another domain, whose record says nothing about faß.de.
    dns_server.add_txt("xn--fa-hia.de", "v=spf1 ip4:192.0.2.0/25 -all")
    dns_server.add_txt("_dmarc.xn--fa-hia.de", "v=DMARC1; p=reject")
    dns_server.add_txt("_dmarc.fass.de", "v=DMARC1; p=none")
    auth = authenticator(dns_server)

    verdict = await evaluate(
        auth, message(from_addr="x@faß.de"), mail_from="x@xn--fa-hia.de", from_domain="faß.de"
    )

    assert verdict.from_domain == "xn--fa-hia.de"
    assert (verdict.dmarc, verdict.dmarc_policy, verdict.aligned) == ("pass", "reject", True)
    assert dns_server.count("_dmarc.fass.de") == 0


def test_ascii_domain_is_idna_2008_with_uts46_mapping() -> None:
    assert ascii_domain("faß.de") == "xn--fa-hia.de"
    assert ascii_domain("Bücher.Example.") == "xn--bcher-kva.example"
    assert ascii_domain("A.Example") == "a.example"
    assert ascii_domain("a..ü") == "a..ü"  # does not convert: left as it was


async def test_dmarc_pct_below_100_applies_the_next_milder_policy_every_time(
    dns_server: LocalDNS,
) -> None:
    dns_server.add_txt("_dmarc.a.example", "v=DMARC1; p=reject; pct=0")
    dns_server.add_txt("_dmarc.b.example", "v=DMARC1; p=quarantine; pct=50")
    dns_server.add_txt("_dmarc.c.example", "v=DMARC1; p=reject; pct=100")
    dns_server.add_txt("_dmarc.d.example", "v=DMARC1; p=none; sp=reject; pct=99")
    auth = authenticator(dns_server)

    async def unauthenticated(domain: str) -> AuthVerdict:
        raw = message(from_addr=f"x@{domain}")
        return await evaluate(auth, raw, client_ip=OTHER_IP, mail_from="", from_domain=domain)

    testing = [await unauthenticated("a.example") for _ in range(5)]
    half = await unauthenticated("b.example")
    full = await unauthenticated("c.example")
    subdomain = await unauthenticated("news.d.example")

    assert {(v.dmarc, v.dmarc_policy) for v in testing} == {("fail", "quarantine")}
    assert (half.dmarc, half.dmarc_policy) == ("fail", "none")
    assert (full.dmarc, full.dmarc_policy) == ("fail", "reject")
    assert (subdomain.dmarc, subdomain.dmarc_policy) == ("fail", "quarantine")
    assert decide(testing[0], "record", honor_dmarc=True).action == "quarantine"
    assert decide(half, "record", honor_dmarc=True).action == "accept"
    assert decide(full, "record", honor_dmarc=True).action == "reject"


async def test_dmarc_permerror_for_a_broken_record(dns_server: LocalDNS) -> None:
    dns_server.add_txt("_dmarc.a.example", "v=DMARC1; p=maybe")
    dns_server.add_txt("_dmarc.b.example", "v=DMARC1; p=none")
    dns_server.add_txt("_dmarc.b.example", "v=DMARC1; p=reject")
    auth = authenticator(dns_server)

    broken = await evaluate(auth, message())
    doubled = await evaluate(auth, message(from_addr="x@b.example"), from_domain="b.example")

    assert (broken.dmarc, broken.dmarc_policy) == ("permerror", None)
    assert (doubled.dmarc, doubled.dmarc_policy) == ("permerror", None)


def test_organizational_domain_uses_the_bundled_public_suffix_list() -> None:
    assert organizational_domain("mail.example.com") == "example.com"
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("news.a.example") == "a.example"  # unknown TLD: "*" rule
    assert organizational_domain("co.uk") == "co.uk"


# -- Authentication-Results from outside ---------------------------------------------------

FORGED = b"Authentication-Results: x; spf=pass dkim=pass dmarc=pass\r\n"
TRUSTED = (
    b"Authentication-Results: front.example; spf=pass smtp.mailfrom=a.example;\r\n"
    b"\tdkim=pass header.d=a.example; dmarc=pass policy.dmarc=reject header.from=a.example\r\n"
)


async def test_forged_results_from_an_untrusted_ip_change_nothing(dns_server: LocalDNS) -> None:
    dns_server.add_txt("a.example", "v=spf1 ip4:192.0.2.0/25 -all")
    dns_server.add_txt("_dmarc.a.example", "v=DMARC1; p=reject")
    auth = authenticator(
        dns_server, trusted_front=["192.0.2.128/25"], trusted_authserv_ids=["x", "front.example"]
    )
    clean = message()

    honest = await evaluate(auth, clean, client_ip=OTHER_IP)
    forged = await evaluate(auth, FORGED + TRUSTED + clean, client_ip=OTHER_IP)

    assert forged == honest
    assert (forged.spf, forged.dkim, forged.dmarc, forged.source) == (
        "fail",
        "none",
        "fail",
        "relay",
    )


async def test_results_from_a_trusted_front_are_used(dns_server: LocalDNS) -> None:
    auth = authenticator(
        dns_server, trusted_front=["192.0.2.128/25"], trusted_authserv_ids=["Front.Example"]
    )
    mislabelled = TRUSTED.replace(b"spf=pass", b"spf=fail").replace(b"dkim=pass", b"dkim=fail")

    verdict = await evaluate(auth, TRUSTED + mislabelled + message(), client_ip=FRONT_IP)

    assert verdict == AuthVerdict(
        spf="pass",
        spf_domain="a.example",
        dkim="pass",
        dkim_domains=("a.example",),
        dmarc="pass",
        dmarc_policy="reject",
        from_domain="a.example",
        aligned=True,
        source="trusted:front.example",
    )
    assert dns_server.query_count == 0


async def test_trusted_front_with_another_authserv_id_is_ignored(dns_server: LocalDNS) -> None:
    dns_server.add_txt("a.example", "v=spf1 ip4:192.0.2.0/25 -all")
    auth = authenticator(
        dns_server, trusted_front=["192.0.2.128/25"], trusted_authserv_ids=["front.example"]
    )
    other_id = TRUSTED.replace(b"front.example;", b"elsewhere.example;")

    verdict = await evaluate(auth, other_id + message(), client_ip=FRONT_IP)

    assert verdict.source == "relay"
    assert (verdict.spf, verdict.dkim, verdict.dmarc) == ("fail", "none", "none")


async def test_unparseable_results_from_a_trusted_front_are_evaluated_here(
    dns_server: LocalDNS,
) -> None:
    auth = authenticator(
        dns_server, trusted_front=["192.0.2.200"], trusted_authserv_ids=["front.example"]
    )

    verdict = await evaluate(
        auth, b"Authentication-Results: ;;;\r\n" + TRUSTED + message(), client_ip=FRONT_IP
    )

    assert verdict.source == "relay"
    assert verdict.dkim == "none"


async def test_dkim_signature_covering_authentication_results_verifies(
    dns_server: LocalDNS, keys: Keys
) -> None:
    publish_key(dns_server, keys, "a", "a.example")
    received = (
        b"Authentication-Results: mx.a.example; spf=pass smtp.mailfrom=a.example\r\n"
        b"Received-SPF: pass (mx.a.example: 192.0.2.10 is allowed) receiver=mx.a.example\r\n"
        + message()
    )
    # A forwarding system signs the results it added, as mailing lists and ESPs do.
    signature = dkim.sign(
        received,
        b"s1",
        b"a.example",
        keys["a"][0],
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"subject", b"authentication-results", b"received-spf"],
    )
    auth = authenticator(dns_server)

    verdict = await evaluate(auth, signature + received, client_ip=OTHER_IP)

    assert b"authentication-results" in signature.lower()
    assert (verdict.dkim, verdict.dkim_domains) == ("pass", ("a.example",))


# -- the verdict as data ------------------------------------------------------------------


def test_verdict_as_dict_keeps_the_values_found() -> None:
    verdict = AuthVerdict(
        spf="pass",
        spf_domain="a.example",
        dkim="pass",
        dkim_domains=("a.example", "bad domain\r\nX-Injected: 1"),
        dmarc="fail",
        dmarc_policy="reject",
        from_domain="évil.example",
        aligned=True,
        source="relay",
    )

    assert verdict.as_dict()["dkimDomains"] == ["a.example", "bad domain\r\nX-Injected: 1"]
    with pytest.raises(ValueError):
        dataclasses.replace(verdict, spf="totally")


# -- the resolver --------------------------------------------------------------------------


async def test_two_evaluations_send_the_dkim_and_dmarc_queries_once(
    dns_server: LocalDNS, keys
) -> None:
    signer = publish_key(dns_server, keys, "a", "a.example")
    dns_server.add_txt("a.example", "v=spf1 ip4:192.0.2.0/25 -all")
    dns_server.add_txt("_dmarc.a.example", "v=DMARC1; p=reject")
    auth = authenticator(dns_server)
    raw = signer.sign(message())

    first = await evaluate(auth, raw)
    sent = auth.resolver.network_queries
    second = await evaluate(auth, raw)

    assert first == second
    assert first.dmarc == "pass"
    assert dns_server.count("s1._domainkey.a.example", "TXT") == 1
    assert dns_server.count("_dmarc.a.example", "TXT") == 1
    assert sent == 3  # SPF, DKIM key, DMARC
    assert auth.resolver.network_queries == sent


def test_resolver_caches_negative_answers_and_joins_long_txt(dns_server: LocalDNS) -> None:
    dns_server.add_txt("long.example", "k" * 1500)
    dns_server.add_cname("alias.example", "long.example")
    resolver = Resolver(dns_server.servers, timeout=1.0)

    assert resolver.txt("nothing.example") == []
    assert resolver.txt("nothing.example") == []
    assert resolver.txt("alias.example") == ["k" * 1500]  # 6 strings on the wire, via TCP
    assert dns_server.count("nothing.example") == 1
    assert dns_server.protocols()["tcp"] == 1
    assert resolver.network_queries == 3


def test_resolver_turns_servfail_and_silence_into_temporary_errors(dns_server: LocalDNS) -> None:
    resolver = Resolver(dns_server.servers, timeout=0.3)
    dns_server.servfail = True
    with pytest.raises(DnsTemporaryError):
        resolver.txt("a.example")

    dns_server.servfail, dns_server.silent = False, True
    started = time.monotonic()
    with pytest.raises(DnsTemporaryError):
        resolver.a("b.example")
    assert time.monotonic() - started < 1.0

    dns_server.silent = False
    assert resolver.a("b.example") == []  # failures are not cached
