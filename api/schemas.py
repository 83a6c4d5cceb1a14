"""Wire shapes: camelCase JSON in and out, validated by pydantic; storage models stay separate."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from relay.addresses import normalize_email, validate_sender_entry

Priority = Literal["low", "medium", "high", "urgent"]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


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


class FleetPublic(PublicModel):
    id: int
    name: str
    support_email: str
    allowed_senders: list[str]
    created_at: datetime


class KeyIssued(PublicModel):
    id: int
    partner_id: int
    api_key: str


class TripUpsert(WireModel):
    fleet_id: Annotated[int, Field(gt=0, lt=2**63, strict=True)]  # a database id: no true/1.0
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
    category: Annotated[Text, Field(max_length=100)] | None = None
    priority: Priority = "medium"


class TicketUpdate(WireModel):
    status: Literal["open", "processing", "closed"] | None = None
    priority: Priority | None = None
    category: Annotated[Text, Field(max_length=100)] | None = None


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
    status: str
    category: str | None
    priority: str
    contact_email: str
    created_at: datetime
    updated_at: datetime


class AttachmentPublic(PublicModel):
    id: str
    message_id: int | None
    filename: str
    content_type: str
    size: int
    created_at: datetime


class MessagePublic(PublicModel):
    id: int
    author: Literal["partner", "fleet"]
    author_name: str | None
    via: str
    body: str
    internal: bool
    created_at: datetime
    attachments: list[str]


class EventPublic(PublicModel):
    id: int
    kind: str
    actor: str
    detail: dict[str, Any]
    created_at: datetime


class TicketDetail(TicketPublic):
    fleet_name: str
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
