"""The SPF/DKIM/DMARC verdict reached for one inbound message, and its API form."""

from __future__ import annotations

from dataclasses import dataclass

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
