"""The SPF/DKIM/DMARC verdict reached for one inbound message, and its wire forms."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from relay.domain_names import domain_or_none, is_hostname

SPF_RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})
DKIM_RESULTS = frozenset({"pass", "fail", "none", "temperror", "permerror"})
DMARC_RESULTS = DKIM_RESULTS
DMARC_POLICIES = frozenset({"none", "quarantine", "reject"})


@dataclass(frozen=True)
class AuthVerdict:
    spf: str
    spf_domain: str | None
    dkim: str
    dkim_domains: tuple[str, ...]
    dmarc: str
    dmarc_policy: str | None
    from_domain: str
    aligned: bool
    source: str

    def __post_init__(self) -> None:
        if self.spf not in SPF_RESULTS:
            raise ValueError(f"unknown SPF result {self.spf!r}")
        if self.dkim not in DKIM_RESULTS:
            raise ValueError(f"unknown DKIM result {self.dkim!r}")
        if self.dmarc not in DMARC_RESULTS:
            raise ValueError(f"unknown DMARC result {self.dmarc!r}")
        if self.dmarc_policy is not None and self.dmarc_policy not in DMARC_POLICIES:
            raise ValueError(f"unknown DMARC policy {self.dmarc_policy!r}")

    def as_dict(self) -> dict[str, object]:
        return {
            "spf": self.spf,
            "spfDomain": self.spf_domain,
            "dkim": self.dkim,
            "dkimDomains": list(self.dkim_domains),
            "dmarc": self.dmarc,
            "dmarcPolicy": self.dmarc_policy,
            "fromDomain": self.from_domain,
            "aligned": self.aligned,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> AuthVerdict:
        """The inverse of `as_dict`; ValueError when a member is missing or of the wrong type."""

        def text(key: str) -> str:
            value = data.get(key)
            if not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
            return value

        def optional_text(key: str) -> str | None:
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key} must be a string or null")
            return value

        domains = data.get("dkimDomains")
        if not isinstance(domains, list | tuple) or not all(isinstance(d, str) for d in domains):
            raise ValueError("dkimDomains must be a list of strings")
        aligned = data.get("aligned")
        if not isinstance(aligned, bool):
            raise ValueError("aligned must be a boolean")
        return cls(
            spf=text("spf"),
            spf_domain=optional_text("spfDomain"),
            dkim=text("dkim"),
            dkim_domains=tuple(str(d) for d in domains),
            dmarc=text("dmarc"),
            dmarc_policy=optional_text("dmarcPolicy"),
            from_domain=text("fromDomain"),
            aligned=aligned,
            source=text("source"),
        )

    def header_value(self, authserv_id: str) -> str:
        """An RFC 8601 Authentication-Results value; only valid host names are carried over."""
        if not is_hostname(authserv_id):
            raise ValueError(f"authserv-id must be a host name, got {authserv_id!r}")
        parts = [authserv_id.lower()]
        spf_domain = domain_or_none(self.spf_domain)
        parts.append(f"spf={self.spf}" + (f" smtp.mailfrom={spf_domain}" if spf_domain else ""))
        dkim_domains = [d for d in map(domain_or_none, self.dkim_domains) if d]
        if self.dkim == "pass" and dkim_domains:
            parts.extend(f"dkim=pass header.d={domain}" for domain in dkim_domains)
        else:
            parts.append(f"dkim={self.dkim}")
        dmarc_part = f"dmarc={self.dmarc}"
        if self.dmarc_policy is not None:
            dmarc_part += f" (p={self.dmarc_policy})"
        from_domain = domain_or_none(self.from_domain)
        if from_domain:
            dmarc_part += f" header.from={from_domain}"
        parts.append(dmarc_part)
        return "; ".join(parts)


def unavailable_verdict(
    from_domain: str, spf_domain: str | None, source: str = "relay"
) -> AuthVerdict:
    """Every check temperror: what the relay says when it could not finish the evaluation."""
    return AuthVerdict(
        spf="temperror",
        spf_domain=spf_domain,
        dkim="temperror",
        dkim_domains=(),
        dmarc="temperror",
        dmarc_policy=None,
        from_domain=from_domain,
        aligned=False,
        source=source,
    )
