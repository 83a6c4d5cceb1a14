"""Outbound DKIM: sign messages with the relay's key, make keys and the DNS record to publish."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.domain_names import is_hostname

MIN_KEY_BITS = 1024
TXT_STRING_MAX = 255

# From twice: the second, empty instance forbids adding another From below the signed one.
SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Auto-Submitted",
)

_LINE_ENDING = re.compile(rb"\r?\n")


def is_selector(value: str) -> bool:
    """A DKIM selector the relay signs with: DNS labels of letters, digits and '-' joined
    by '.', without a final dot (it stands before "._domainkey.")."""
    return is_hostname(value) and not value.endswith(".")


class DkimSigner:
    """Signs with rsa-sha256, relaxed/relaxed, as `selector._domainkey.domain`."""

    def __init__(self, selector: str, domain: str, private_key_pem: bytes) -> None:
        if not is_selector(selector):
            raise ValueError(f"DKIM selector must be a DNS label sequence, got {selector!r}")
        if not is_hostname(domain):
            raise ValueError(f"DKIM domain must be a host name, got {domain!r}")
        self.selector = selector.lower()
        self.domain = domain.lower().rstrip(".")
        self._key_pem = _dkimpy_private_key(private_key_pem)

    def sign(self, raw: bytes) -> bytes:
        """The message (CRLF line endings) with a DKIM-Signature field on top.

        ValueError when dkimpy cannot parse the message's header section.
        """
        message = _LINE_ENDING.sub(b"\r\n", raw)
        try:
            signature = dkim.DKIM(message, linesep=b"\r\n").sign(
                self.selector.encode("ascii"),
                self.domain.encode("ascii"),
                self._key_pem,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=[name.lower().encode("ascii") for name in SIGNED_HEADERS],
            )
        except dkim.DKIMException as exc:
            raise ValueError(f"cannot DKIM-sign this message: {exc}") from exc
        return bytes(signature) + message


def _dkimpy_private_key(pem: bytes) -> bytes:
    """Check the key and re-encode it as the LF-only PKCS#1 PEM that dkimpy parses reliably."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # TypeError: the key is encrypted; ValueError: not a PEM private key at all.
        raise ValueError(f"DKIM private key is not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("DKIM private key must be an RSA key")
    if key.key_size < MIN_KEY_BITS:
        raise ValueError(
            f"DKIM private key has {key.key_size} bits; at least {MIN_KEY_BITS} are required"
        )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def generate_rsa_key(bits: int = 2048) -> tuple[bytes, str]:
    """A new (PKCS#1 PEM private key, base64 SubjectPublicKeyInfo for the p= tag)."""
    if bits < MIN_KEY_BITS:
        raise ValueError(f"DKIM keys need at least {MIN_KEY_BITS} bits")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, base64.b64encode(public_der).decode("ascii")


def dkim_txt_value(public_key_b64: str) -> str:
    """The TXT value to publish, as one string."""
    if not re.fullmatch(r"[A-Za-z0-9+/]+=*", public_key_b64):
        raise ValueError("public key must be base64")
    return f"v=DKIM1; k=rsa; p={public_key_b64}"


def dns_txt_record(selector: str, domain: str, public_key_b64: str) -> str:
    """The zone-file line, the value cut into quoted strings of at most 255 characters."""
    if not is_selector(selector) or not is_hostname(domain):
        raise ValueError("the selector must be DNS labels and the domain a host name")
    value = dkim_txt_value(public_key_b64)
    chunks = [value[i : i + TXT_STRING_MAX] for i in range(0, len(value), TXT_STRING_MAX)]
    quoted = " ".join(f'"{chunk}"' for chunk in chunks)
    owner = f"{selector.lower()}._domainkey.{domain.lower().rstrip('.')}."
    return f"{owner} IN TXT ( {quoted} )"


def load_signer(selector: str | None, key_file: Path | None, domain: str) -> DkimSigner | None:
    """The configured signer; None when neither selector nor key file is set (no signing)."""
    if not selector and key_file is None:
        return None
    if not selector:
        raise ValueError("DKIM key file is set but the DKIM selector is not; set both or neither")
    if key_file is None:
        raise ValueError("DKIM selector is set but the DKIM key file is not; set both or neither")
    try:
        pem = key_file.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read DKIM key file {key_file}: {exc.strerror or exc}") from exc
    try:
        return DkimSigner(selector, domain, pem)
    except ValueError as exc:
        raise ValueError(f"DKIM key file {key_file}: {exc}") from exc
