"""Outbound DKIM signing: keys, the published record, signatures checked through our resolver."""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from relay.dkim_signing import (
    SIGNED_HEADERS,
    DkimSigner,
    dns_txt_record,
    generate_rsa_key,
    load_signer,
)
from relay.dns import Resolver
from tests.dns_server import LocalDNS

pytest_plugins = ["tests.dns_fixtures"]

SHORT_KEY = (  # 768 bits: cryptography refuses to generate keys this small
    b"-----BEGIN RSA PRIVATE KEY-----\n"
    b"MIIBygIBAAJhAMkx80kNzSW13GWb2XpWA9kX4OY0EljERnvLbW8EaIeTvo0mv7Fg\n"
    b"vjsKzaLe/oSBVyOdp+Lh5fCXH2PQgj3y83tFok4xHXJLAz42C2AYsQSRMxqz92Sq\n"
    b"FrYmqjERcmuZ+QIDAQABAmEAlc6plbW/ENsu9kFrV5oAV39eKEqRdqL+0GKSY11m\n"
    b"77xk3/kANvUP8CqFH0bnQIaEpbSJX1FbOYFzXdiCVoTbJyvWfuaivA5jvkns/Nvf\n"
    b"gVlRlxdFVDjXYSTrkoTXo5CZAjEA/SbHPL7ySCEyQdAA6VF426ZGcLRMhy7Bmzhk\n"
    b"YuozIwswcBTJg9oOEvw1x2oTquZ/AjEAy3WCBTE9RwwWKUC0yiM06blUMQVSa5+0\n"
    b"QsH/TEndMkyCD6BB+TTIQdE8Su4rv3OHAjAvwELQuIvnAywBsgSZ/h44AHNFCx1s\n"
    b"Wmt2pfp5lgezUob+fU1Nq7H/7scOKHoxQG0CMBNPV8O+ZJ51mzTXG1GD/eWg3Ui5\n"
    b"xJTKV4VufBh1ejTn5gAtqZVJWShF/37tE+HbyQIwXH4f5qLE1LUGGKsKyxPWCrj4\n"
    b"pItobtvJzlIZrI/fhSoSnJib2FAgRiDScIBiRalI\n"
    b"-----END RSA PRIVATE KEY-----\n"
)


@pytest.fixture(scope="module")
def key() -> tuple[bytes, str]:
    return generate_rsa_key(2048)


def outbound_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Support <support@relay.example>"
    msg["To"] = "customer@b.example"
    msg["Subject"] = "Re: [#42] Printer on fire"
    msg["Message-ID"] = "<t42.1@relay.example>"
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content("We are on it.\nLine two.\n")
    return msg.as_bytes(policy=policy.SMTP)


def publish(server: LocalDNS, record_line: str) -> None:
    """Load a zone-file TXT line the way a DNS server would: quoted strings, concatenated."""
    owner = record_line.split()[0]
    strings = re.findall(r'"([^"]*)"', record_line)
    server.add_txt(owner, "".join(strings))


def verify(raw: bytes, resolver: Resolver) -> bool:
    def lookup(name: bytes, timeout: float = 5.0) -> bytes | None:
        records = resolver.txt_bytes(name.decode("ascii"))
        return records[0] if records else None

    return bool(dkim.verify(raw, dnsfunc=lookup))


def test_signature_verifies_against_the_published_record(
    dns_server: LocalDNS, key: tuple[bytes, str]
) -> None:
    private_pem, public_b64 = key
    publish(dns_server, dns_txt_record("relay2024", "relay.example", public_b64))
    signer = DkimSigner("relay2024", "relay.example", private_pem)

    signed = signer.sign(outbound_message())

    assert signed.startswith(b"DKIM-Signature: ")
    assert b"\n" not in signed.replace(b"\r\n", b"")
    header = signed.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"")
    assert b"a=rsa-sha256" in header and b"c=relaxed/relaxed" in header
    signed_fields = re.search(rb"h=([^;]+);", header)
    assert signed_fields is not None
    listed = [name.strip().decode() for name in signed_fields.group(1).split(b":")]
    assert listed == [name.lower() for name in SIGNED_HEADERS]
    assert verify(signed, Resolver(dns_server.servers, timeout=2.0))
    assert dns_server.count("relay2024._domainkey.relay.example", "TXT") == 1


def test_changed_subject_or_added_from_breaks_the_signature(
    dns_server: LocalDNS, key: tuple[bytes, str]
) -> None:
    private_pem, public_b64 = key
    publish(dns_server, dns_txt_record("s1", "relay.example", public_b64))
    signed = DkimSigner("s1", "relay.example", private_pem).sign(outbound_message())
    resolver = Resolver(dns_server.servers, timeout=2.0)

    resubjected = signed.replace(b"Printer on fire", b"Printer is fine")
    head, body = signed.split(b"\r\n\r\n", 1)
    second_from = head + b"\r\nFrom: mallory@evil.example\r\n\r\n" + body

    assert verify(signed, resolver)
    assert not verify(resubjected, resolver)
    assert not verify(second_from, resolver)


def test_lf_input_comes_out_with_crlf(key: tuple[bytes, str]) -> None:
    signer = DkimSigner("s1", "relay.example", key[0])

    signed = signer.sign(outbound_message().replace(b"\r\n", b"\n"))

    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert signed.endswith(b"Line two.\r\n")


def test_dns_txt_record_splits_into_255_character_strings(key: tuple[bytes, str]) -> None:
    line = dns_txt_record("s1", "relay.example", key[1])

    assert line.startswith('s1._domainkey.relay.example. IN TXT ( "v=DKIM1; k=rsa; p=')
    strings = re.findall(r'"([^"]*)"', line)
    assert len(strings) == 2
    assert all(len(s) <= 255 for s in strings)
    assert "".join(strings) == f"v=DKIM1; k=rsa; p={key[1]}"


def test_pkcs8_and_crlf_keys_are_accepted(dns_server: LocalDNS, key: tuple[bytes, str]) -> None:
    loaded = serialization.load_pem_private_key(key[0], password=None)
    pkcs8 = loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).replace(b"\n", b"\r\n")
    publish(dns_server, dns_txt_record("s1", "relay.example", key[1]))

    signed = DkimSigner("s1", "relay.example", pkcs8).sign(outbound_message())

    assert verify(signed, Resolver(dns_server.servers, timeout=2.0))


def test_bad_keys_are_refused_with_a_readable_message() -> None:
    not_rsa = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    with pytest.raises(ValueError, match="768 bits"):
        DkimSigner("s1", "relay.example", SHORT_KEY)
    with pytest.raises(ValueError, match="RSA"):
        DkimSigner("s1", "relay.example", not_rsa)
    with pytest.raises(ValueError, match="PEM"):
        DkimSigner("s1", "relay.example", b"-----BEGIN RSA PRIVATE KEY-----\nnope\n")
    with pytest.raises(ValueError, match="selector"):
        DkimSigner("bad selector", "relay.example", SHORT_KEY)
    with pytest.raises(ValueError):
        generate_rsa_key(512)


def test_load_signer_variants(tmp_path: Path, key: tuple[bytes, str]) -> None:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(key[0])
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key")

    signer = load_signer("s1", key_file, "relay.example")

    assert signer is not None
    assert (signer.selector, signer.domain) == ("s1", "relay.example")
    assert load_signer(None, None, "relay.example") is None
    assert load_signer("", None, "relay.example") is None
    with pytest.raises(ValueError, match="key file is not"):
        load_signer("s1", None, "relay.example")
    with pytest.raises(ValueError, match="selector is not"):
        load_signer(None, key_file, "relay.example")
    with pytest.raises(ValueError, match="cannot read"):
        load_signer("s1", tmp_path / "missing.pem", "relay.example")
    with pytest.raises(ValueError, match="garbage.pem"):
        load_signer("s1", garbage, "relay.example")
