"""Wire shapes: camelCase JSON in and out, validated by pydantic; storage models stay separate."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from relay.addresses import normalize_email, validate_sender_entry
from relay.config import AuthPolicy

Priority = Literal["low", "medium", "high", "urgent"]
Status = Literal["open", "processing", "closed"]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
# Ids are INTEGER columns: PostgreSQL's is 32-bit, so a larger number names no row (and
# must not reach the driver, which would refuse it as a fault of ours).
MAX_ID = 2**31 - 1
# A database id: a JSON integer in range, never true/1.0/"1".
RowId = Annotated[int, Field(gt=0, le=MAX_ID, strict=True)]
TagIds = Annotated[list[RowId], Field(max_length=50)]


def _phone(value: str) -> str:
    """International format only: a support agent in another country must be able to dial it."""
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("Enter the number in international format, e.g. +4930123456.") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError("This is not a possible phone number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_KEYWORD = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")


def _keyword(value: str) -> str:
    value = value.strip().lower()
    if not _KEYWORD.fullmatch(value):
        raise ValueError(
            "Use up to 100 letters, digits, '.', '_' or '-', starting with a letter or digit."
        )
    return value


Phone = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=40),
    AfterValidator(_phone),
]


def _email(value: str) -> str:
    return normalize_email(value)


def _senders(values: list[str]) -> list[str]:
    return list(dict.fromkeys(validate_sender_entry(v) for v in values))


Email = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=320), AfterValidator(_email)
]
Senders = Annotated[list[str], Field(max_length=100), AfterValidator(_senders)]


class WireModel(BaseModel):
    """A request body: unknown fields are an error, so typos do not pass silently."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class PublicModel(BaseModel):
    """A response body, built from storage rows; fields not declared here are never sent."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", from_attributes=True
    )

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class PartnerCreate(WireModel):
    name: Annotated[Text, Field(max_length=200)]
    contact_email: Email
    allowed_senders: Senders = []


class PartnerPublic(PublicModel):
    id: int
    name: str
    contact_email: str
    allowed_senders: list[str]
    created_at: datetime


class PartnerCreated(PartnerPublic):
    api_key: str
    api_key_id: int


class FleetCreate(WireModel):
    name: Annotated[Text, Field(max_length=200)]
    support_email: Email
    allowed_senders: Senders = []
    # What a reply failing SPF/DKIM/DMARC does; null follows the relay's RELAY_AUTH_POLICY.
    auth_policy: AuthPolicy | None = None


class FleetUpdate(WireModel):
    auth_policy: AuthPolicy | None


class FleetPublic(PublicModel):
    id: int
    name: str
    support_email: str
    allowed_senders: list[str]
    auth_policy: AuthPolicy | None
    created_at: datetime


class SuppressionPublic(PublicModel):
    address: str
    # The enhanced status code and the remote server's words from the hard bounce.
    status: str | None
    diagnostic: str | None
    created_at: datetime


class SuppressionList(PublicModel):
    suppressions: list[SuppressionPublic]


class KeyIssued(PublicModel):
    id: int
    partner_id: int
    api_key: str


class TripUpsert(WireModel):
    fleet_id: RowId
    pickup: Annotated[Text, Field(max_length=500)]
    dropoff: Annotated[Text, Field(max_length=500)]
    scheduled_at: datetime
    passenger_name: Annotated[Text, Field(max_length=200)] | None = None
    vehicle: Annotated[Text, Field(max_length=200)] | None = None
    driver_name: Annotated[Text, Field(max_length=200)] | None = None


class TripPublic(PublicModel):
    id: str
    partner_trip_id: str
    fleet_id: int
    pickup: str
    dropoff: str
    scheduled_at: datetime
    passenger_name: str | None
    vehicle: str | None
    driver_name: str | None
    created_at: datetime
    updated_at: datetime


class TicketCreate(WireModel):
    subject: Annotated[Text, Field(max_length=500)]
    comment: Text
    contact_email: Email | None = None
    attachments: Annotated[
        list[Annotated[str, StringConstraints(max_length=200)]], Field(max_length=50)
    ] = []
    category: RowId | None = None
    priority: Priority = "medium"
    tags: TagIds = []
    callback_phone: Phone | None = None


class TicketUpdate(WireModel):
    """Only the fields sent change; `category: null` removes the category, `tags` replaces
    the whole set (`[]` removes every tag)."""

    status: Status | None = None
    priority: Priority | None = None
    category: RowId | None = None
    tags: TagIds | None = None
    # Only null: acknowledges and clears the ticket's attention flag.
    attention: None = None


class MessageCreate(WireModel):
    comment: Text
    attachments: Annotated[
        list[Annotated[str, StringConstraints(max_length=200)]], Field(max_length=50)
    ] = []
    internal: bool = False


class TicketPublic(PublicModel):
    id: int
    trip_id: str
    partner_trip_id: str
    subject: str
    status: Status
    category: int | None
    category_title: str | None
    priority: Priority
    tags: list[int]
    contact_email: str
    callback_phone: str | None
    # Why the ticket needs a person's eye (mail held as a suspected loop); PATCH null clears.
    attention: str | None
    created_at: datetime
    updated_at: datetime


class AttachmentPublic(PublicModel):
    id: str
    message_id: int | None
    filename: str
    content_type: str
    size: int
    created_at: datetime


class MessageFlags(PublicModel):
    """What the reader of a forwarded email could not see."""

    # The email cited (In-Reply-To/References) a message of another ticket; it was filed here,
    # on the ticket whose address it was sent to.
    cites_other_ticket: bool = False
    # How many other people the sender addressed (To/Cc); the relay sent them nothing.
    omitted_recipients: int = 0


class MessageAuthentication(PublicModel):
    spf: str
    spf_domain: str | None
    dkim: str
    # The d= domains of the signatures that verified.
    dkim_domains: list[str]
    dmarc: str
    # The From domain's DMARC policy as it applies: p= (or sp= for a subdomain), one step
    # milder when its pct= is below 100; null: none.
    dmarc_policy: str | None
    from_domain: str
    # SPF or a DKIM pass aligned with the From domain: the sender is who From says.
    aligned: bool
    # "relay" (checked here) or "trusted:<authserv-id>" (a configured front MTA's header).
    source: str
    # The policy that applied (record, quarantine, reject) and its outcome (accept,
    # quarantine); refused mail is never stored.
    policy: str | None = None
    action: str | None = None


class MessagePublic(PublicModel):
    id: int
    author: Literal["partner", "fleet"]
    author_name: str | None
    via: str
    # What the person wrote: for email, without quoted history and signature.
    body: str
    # What was cut from an email's body (quoted history, signature); null if nothing was.
    quoted: str | None
    internal: bool
    # "forwarded" to the other side; "automatic" (an auto-reply), "held" (a suspected mail
    # loop) and "quarantined" (failed SPF/DKIM/DMARC under a quarantine policy) stay on the
    # ticket only.
    disposition: Literal["forwarded", "automatic", "held", "quarantined"]
    disposition_reason: str | None
    flags: MessageFlags
    # Of an email: what SPF, DKIM and DMARC said about it, and what the policy made of it.
    authentication: MessageAuthentication | None
    # For email: GET …/messages/{id}/raw returns the message as received, addresses redacted.
    has_raw: bool
    created_at: datetime
    attachments: list[str]


class EventPublic(PublicModel):
    id: int
    kind: str
    actor: str
    detail: dict[str, Any]
    created_at: datetime


class SideReachability(PublicModel):
    # False after a hard bounce from this side's address, until an operator clears it; mail
    # to that side is then not sent (event `delivery.suppressed`).
    reachable: bool
    since: datetime | None = None
    status: str | None = None


class TicketReachability(PublicModel):
    fleet: SideReachability
    partner: SideReachability


class TicketDetail(TicketPublic):
    fleet_name: str
    reachability: TicketReachability
    conversation: list[MessagePublic]
    attachments: list[AttachmentPublic]
    events: list[EventPublic]


class TicketList(PublicModel):
    tickets: list[TicketPublic]
    next_cursor: str | None


class UploadResult(PublicModel):
    resource_token: str
    filename: str
    content_type: str
    size: int
    expires_at: datetime


SortKey = Literal["created", "-created", "updated", "-updated"]


class TicketQuery(WireModel):
    """Query parameters of the ticket history. Several `tag` parameters: tickets with all."""

    status: Status | None = None
    category: Annotated[int, Field(gt=0, le=MAX_ID)] | None = None
    priority: Priority | None = None
    tag: Annotated[list[Annotated[int, Field(gt=0, le=MAX_ID)]], Field(max_length=10)] = []
    subject: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    trip_id: Annotated[str, StringConstraints(min_length=1, max_length=36)] | None = None
    partner_trip_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    created_after: AwareDatetime | None = None
    created_before: AwareDatetime | None = None
    updated_after: AwareDatetime | None = None
    updated_before: AwareDatetime | None = None
    sort: SortKey = "-created"
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, StringConstraints(max_length=500)] | None = None


class CategoryCreate(WireModel):
    name: Annotated[Text, Field(max_length=100)]
    description: Annotated[Text, Field(max_length=1000)] | None = None
    parent_id: RowId | None = None


class CategoryUpdate(WireModel):
    name: Annotated[Text, Field(max_length=100)] | None = None
    description: Annotated[Text, Field(max_length=1000)] | None = None


class CategoryPublic(PublicModel):
    id: int
    name: str
    description: str | None
    parent_id: int | None
    subcategories: list[CategoryPublic] = []


class CategoryList(PublicModel):
    categories: list[CategoryPublic]


class TagCreate(WireModel):
    name: Annotated[Text, Field(max_length=100)]
    keyword: Annotated[str, AfterValidator(_keyword)]


class TagPublic(PublicModel):
    id: int
    name: str
    keyword: str


class TagList(PublicModel):
    tags: list[TagPublic]


class OrderSessionCreate(WireModel):
    """Opening a session needs nothing; a subject and comment make the fleet's email clearer."""

    callback_phone: Phone | None = None
    subject: Annotated[Text, Field(max_length=500)] | None = None
    comment: Text | None = None


class OrderSessionUpdate(WireModel):
    callback_phone: Phone | None


class AgentUpdate(WireModel):
    name: Annotated[Text, Field(max_length=200)]
    phone: Phone | None = None


class AgentPublic(PublicModel):
    name: str
    phone: str | None
    # "fleet": taken from the fleet's latest reply; "partner": set through the API.
    source: Literal["fleet", "partner"]
    updated_at: datetime | None


class OrderSession(PublicModel):
    order_id: str
    callback_phone: str | None
    status: Status
    ticket_id: int
    agent: AgentPublic | None


class PartnerList(PublicModel):
    partners: list[PartnerPublic]


class FleetList(PublicModel):
    fleets: list[FleetPublic]


class Health(PublicModel):
    status: Literal["ok"]


class Problem(BaseModel):
    """An error, as RFC 9457 application/problem+json; validation adds per-field messages."""

    model_config = ConfigDict(extra="allow")

    type: str
    status: int
    title: str
    detail: str | None = None
    invalid_params: list[InvalidParam] | None = Field(default=None, alias="invalidParams")


class InvalidParam(BaseModel):
    name: str
    reason: str
