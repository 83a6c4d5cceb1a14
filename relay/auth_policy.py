"""What an inbound message's SPF/DKIM/DMARC verdict means for it: accept, quarantine,
reject, or ask the sender to retry.

A message is *authenticated* when SPF or a DKIM signature passes for a domain aligned with
its From domain (DMARC's test, applied whether or not the domain publishes a record). The
From address alone proves nothing: anyone can write any From.

The policy (per fleet, else the relay's default) says what an unauthenticated message does:
`record` keeps and forwards it with its verdicts, `quarantine` keeps it without forwarding
and flags the ticket, `reject` refuses it with 550 5.7.1. A domain's own DMARC `p=` is
applied on top (when the operator keeps `honor_dmarc_policy`): a domain that asks for
rejection is never forwarded.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.authentication import AuthVerdict

RECORD = "record"
QUARANTINE = "quarantine"
REJECT = "reject"

ACCEPT = "accept"
TEMPFAIL = "tempfail"

_SEVERITY = {RECORD: 0, ACCEPT: 0, QUARANTINE: 1, REJECT: 2}


@dataclass(frozen=True)
class AuthDecision:
    action: str  # accept | quarantine | reject | tempfail
    policy: str  # the policy that applied (record | quarantine | reject)
    reason: str | None = None


def authenticated(verdict: AuthVerdict) -> bool:
    return verdict.aligned or verdict.dmarc == "pass"


def decide(verdict: AuthVerdict, policy: str, *, honor_dmarc: bool) -> AuthDecision:
    if authenticated(verdict):
        return AuthDecision(ACCEPT, policy)
    summary = summarize(verdict)
    action = ACCEPT if policy == RECORD else policy
    reason = f"not authenticated ({summary})" if action != ACCEPT else None
    if honor_dmarc and verdict.dmarc == "fail" and verdict.dmarc_policy in (QUARANTINE, REJECT):
        published = verdict.dmarc_policy
        assert published is not None
        if _SEVERITY[published] > _SEVERITY[action]:
            action = published
            reason = f"the DMARC policy of {verdict.from_domain} says {published} ({summary})"
    if action != ACCEPT and _temporary(verdict):
        # DNS failed us: the message may well be genuine. Its sender retries; a quarantine
        # or refusal now would be a guess.
        return AuthDecision(TEMPFAIL, policy, f"checks incomplete ({summary})")
    return AuthDecision(action, policy, reason)


def summarize(verdict: AuthVerdict) -> str:
    return f"spf={verdict.spf} dkim={verdict.dkim} dmarc={verdict.dmarc}"


def _temporary(verdict: AuthVerdict) -> bool:
    return "temperror" in (verdict.spf, verdict.dkim, verdict.dmarc)
