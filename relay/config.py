"""Settings: read once from the environment at the process edge and passed down explicitly."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["api", "smtp", "worker"]


class SMTPOutbound(BaseModel):
    """An outbound smarthost parsed from `smtp://[user:pass@]host:port[?starttls=1]`."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False


class MaildirOutbound(BaseModel):
    """Outbound mail written to a local maildir instead of a server (the embedded default)."""

    path: Path


def parse_outbound(value: str) -> SMTPOutbound | MaildirOutbound:
    """Parse `RELAY_OUTBOUND`; raises ValueError with a readable message."""
    if value.startswith("maildir:"):
        path = value.removeprefix("maildir:").removeprefix("//")
        if not path:
            raise ValueError("maildir: needs a path, e.g. maildir:./var/outbox")
        return MaildirOutbound(path=Path(path))
    parts = urlsplit(value)
    if parts.scheme != "smtp" or not parts.hostname:
        raise ValueError("expected smtp://[user:pass@]host:port[?starttls=1] or maildir:PATH")
    query = parse_qs(parts.query)
    starttls = query.get("starttls", ["0"])[-1].lower() in {"1", "true", "yes"}
    return SMTPOutbound(
        host=parts.hostname,
        port=parts.port or 25,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        starttls=starttls,
    )


class Settings(BaseSettings):
    """Every knob of the relay. Each field is the env variable `RELAY_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/relay.db"
    database_schema: str | None = Field(
        default=None, description="PostgreSQL schema (search_path) holding the relay's tables."
    )
    domain: str = "relay.localhost"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    outbound: str = "maildir:./var/outbox"
    admin_key: str | None = None
    default_contact_email: str | None = None
    only: str | None = Field(
        default=None, description="Comma-separated roles to run: api, smtp, worker (default all)."
    )

    # What the relay calls itself in display names and the SMTP banner.
    brand: str = "support"
    smtp_hostname: str | None = None

    # Limits (sizes in bytes, durations in seconds).
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 20
    max_attachment_size: int = 10 * 1024 * 1024
    max_attachments: int = 10
    # Request bodies other than uploads (JSON); uploads take max_attachment_size plus framing.
    max_request_body: int = 1024 * 1024
    # Can only tighten the 500 the ticket.subject column holds.
    max_subject_length: int = Field(default=500, ge=1, le=500)
    max_comment_length: int = 20_000
    upload_token_ttl: int = 24 * 3600
    # Content types an upload may declare: exact types or `type/*`; `*/*` accepts anything.
    upload_allowed_types: str = (
        "image/png,image/jpeg,image/gif,image/webp,image/heic,application/pdf,text/plain,"
        "text/csv,message/rfc822,application/zip,application/msword,application/vnd.ms-excel,"
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document,"
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet,"
        "application/vnd.oasis.opendocument.text,application/vnd.oasis.opendocument.spreadsheet"
    )
    # Tickets a partner may have open (not closed) at once: on one trip, and in total.
    max_open_tickets_per_trip: int = Field(default=5, ge=1)
    max_open_tickets_per_partner: int = Field(default=10_000, ge=1)
    # How long a POST's Idempotency-Key is remembered (seconds).
    idempotency_ttl: int = Field(default=24 * 3600, ge=60)
    # Mail to a closed ticket reopens it within this many seconds of closing; later it is refused.
    reopen_window: int = 7 * 24 * 3600

    # Inbound mail. Structure limits are checked on the raw bytes before any MIME parsing.
    max_mime_depth: int = Field(default=20, ge=1)
    max_mime_parts: int = Field(default=500, ge=1)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_line_bytes: int = Field(default=10_000, ge=998)
    # SMTP connections one client IP may hold open at once.
    max_connections_per_client: int = Field(default=20, ge=1)
    # More than this many messages to one alias within loop_window seconds are held, not
    # forwarded, and the ticket is flagged: two auto-responders cannot ping-pong through us.
    loop_max_messages: int = Field(default=20, ge=1)
    loop_window: int = Field(default=3600, ge=1)
    # Remote (http/https) images in forwarded HTML load from their senders' servers and can
    # track the reader; off by default, inline (cid:) images are always kept.
    allow_remote_images: bool = False

    # Delivery.
    delivery_lifetime: int = 4 * 24 * 3600
    delivery_backoff_base: float = 30.0
    delivery_backoff_max: float = 3600.0
    delivery_concurrency: int = 8
    delivery_pool_size: int = 4
    delivery_timeout: float = 30.0
    delivery_lease: int = 300
    delivery_poll_interval: float = 2.0

    @field_validator("outbound")
    @classmethod
    def _outbound_parses(cls, value: str) -> str:
        parse_outbound(value)
        return value

    @field_validator("domain")
    @classmethod
    def _domain_lower(cls, value: str) -> str:
        value = value.strip().lower().rstrip(".")
        if not value or "@" in value or any(c.isspace() for c in value):
            raise ValueError("RELAY_DOMAIN must be a bare domain name")
        return value

    @field_validator("only")
    @classmethod
    def _roles_known(cls, value: str | None) -> str | None:
        if value:
            unknown = {r.strip() for r in value.split(",")} - {"api", "smtp", "worker"}
            if unknown:
                raise ValueError(f"unknown roles {sorted(unknown)}; use api, smtp, worker")
        return value

    @property
    def roles(self) -> list[Role]:
        if not self.only:
            return ["api", "smtp", "worker"]
        chosen = {r.strip() for r in self.only.split(",")}
        return [r for r in ("api", "smtp", "worker") if r in chosen]

    @property
    def allowed_upload_types(self) -> list[str]:
        return [t.strip().lower() for t in self.upload_allowed_types.split(",") if t.strip()]

    @property
    def outbound_target(self) -> SMTPOutbound | MaildirOutbound:
        return parse_outbound(self.outbound)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
