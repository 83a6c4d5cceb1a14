"""Settings: read once from the environment at the process edge and passed down explicitly."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.db import PING_AFTER_IDLE_SECONDS, PoolSize

Role = Literal["api", "smtp", "worker"]
AuthPolicy = Literal["record", "quarantine", "reject"]
# Relay processes one `serve` may run (RELAY_PROCESSES and --processes alike).
MAX_PROCESSES = 64


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


def _csv(value: str) -> list[str]:
    """The non-empty, stripped entries of a comma-separated setting."""
    return [v.strip() for v in value.split(",") if v.strip()]


def _host_port(value: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest.removeprefix(":") or default_port)
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, default_port


class Settings(BaseSettings):
    """Every knob of the relay. Each field is the env variable `RELAY_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/relay.db"
    database_schema: str | None = Field(
        default=None, description="PostgreSQL schema (search_path) holding the relay's tables."
    )
    # Database connections one relay process keeps open, and how many more it may open
    # under load (closed again when returned). Every SMTP transaction and API write holds
    # one while it runs: with fewer kept than that, connections were opened and closed
    # all the time (on PostgreSQL each is a new server process). Mind the server's
    # max_connections: processes x (pool size + overflow).
    database_pool_size: int = Field(default=PoolSize.kept, ge=1)
    database_max_overflow: int = Field(default=PoolSize.overflow, ge=0)
    # A pooled PostgreSQL connection idle this long is pinged before use: keep it below any
    # idle timeout between the relay and the server (a proxy, a firewall, PgBouncer).
    database_ping_after_idle: float = Field(default=PING_AFTER_IDLE_SECONDS, gt=0)
    # Inbound messages and new tickets that arrive together share one database transaction,
    # each in a savepoint of its own, up to this many (storage.group_commit); 1 gives each
    # its own.
    database_commit_group: int = Field(default=16, ge=1)
    # PostgreSQL: how many such shared transactions may be open at once. Each statement is a
    # round trip that waits for the event loop's turn, so one at a time left most messages
    # waiting for it; SQLite has one writer at a time whatever this says.
    database_commit_parallel: int = Field(default=4, ge=1)
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
    # Relay processes sharing the HTTP and SMTP ports (SO_REUSEPORT): one per core uses
    # every core; each runs every role. 1 = one process, no supervisor.
    processes: int = Field(default=1, ge=1, le=MAX_PROCESSES)

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

    # Outbound signing and bounces. DKIM needs both a selector and a key file (from
    # `support-relay dkim generate`); without them mail leaves unsigned (development only).
    dkim_selector: str | None = None
    dkim_key_file: Path | None = None
    # Secrets that sign bounce addresses, comma-separated: the first signs, all verify (for
    # rotation). Unset: one is generated and kept in the database, shared by all instances.
    bounce_secret: SecretStr | None = None
    # How long after sending a bounce address still accepts delivery reports (seconds).
    bounce_address_ttl: int = Field(default=14 * 24 * 3600, ge=3600)

    # Inbound authentication (SPF, DKIM, DMARC). What a reply that fails it does, unless its
    # fleet says otherwise: "record" (store the verdicts), "quarantine" (store, do not
    # forward, tell the partner), "reject" (550 5.7.1).
    auth_policy: AuthPolicy = "record"
    # A From domain's own published DMARC policy (p=reject / p=quarantine) is applied to
    # mail failing DMARC even when the relay's policy is only "record".
    honor_dmarc_policy: bool = True
    # Time one message's checks may take in total before the missing ones are temperror.
    auth_timeout: float = Field(default=10.0, gt=0)
    # DKIM signatures of one message checked at most (each is a DNS lookup and RSA work).
    dkim_max_signatures: int = Field(default=8, ge=1, le=100)
    # Front MTAs (IPs or CIDRs, comma-separated) whose Authentication-Results header, under
    # one of `trusted_authserv_ids`, is believed instead of evaluating here.
    trusted_front_mtas: str = ""
    trusted_authserv_ids: str = ""
    # DNS: servers as host[:port], comma-separated (default: the system's resolv.conf).
    dns_servers: str = ""
    dns_timeout: float = Field(default=3.0, gt=0)
    dns_cache_size: int = Field(default=2000, ge=0)

    # Delivery.
    delivery_lifetime: int = Field(default=4 * 24 * 3600, ge=1)
    delivery_backoff_base: float = Field(default=30.0, gt=0)
    delivery_backoff_max: float = Field(default=3600.0, gt=0)
    # At least 1: a worker that may claim nothing would never sleep (relay.delivery).
    delivery_concurrency: int = Field(default=8, ge=1)
    delivery_pool_size: int = Field(default=4, ge=1)
    delivery_timeout: float = Field(default=30.0, gt=0)
    delivery_lease: int = Field(default=300, ge=1)
    delivery_poll_interval: float = Field(default=2.0, gt=0)

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

    @field_validator("dns_servers")
    @classmethod
    def _dns_servers_parse(cls, value: str) -> str:
        for server in _csv(value):
            try:
                host, port = _host_port(server, 53)
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(
                    f"{server!r} is not an IP address with an optional :port"
                ) from None
            if not 0 < port < 65536:
                raise ValueError(f"{server!r}: port out of range")
        return value

    @field_validator("trusted_front_mtas")
    @classmethod
    def _networks_parse(cls, value: str) -> str:
        for entry in _csv(value):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return value

    @field_validator("bounce_secret")
    @classmethod
    def _secrets_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secrets = _csv(value.get_secret_value())
            if not secrets or any(len(s.encode()) < 16 for s in secrets):
                raise ValueError("each bounce secret must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _dkim_complete(self) -> Settings:
        if (self.dkim_selector is None) != (self.dkim_key_file is None):
            raise ValueError("set both RELAY_DKIM_SELECTOR and RELAY_DKIM_KEY_FILE, or neither")
        return self

    @property
    def bounce_secrets(self) -> list[bytes]:
        if self.bounce_secret is None:
            return []
        return [s.encode() for s in _csv(self.bounce_secret.get_secret_value())]

    @property
    def dns_server_list(self) -> list[tuple[str, int]] | None:
        """(host, port) pairs, or None for the system resolver."""
        servers = _csv(self.dns_servers)
        return [_host_port(s, 53) for s in servers] if servers else None

    @property
    def trusted_front_list(self) -> list[str]:
        return _csv(self.trusted_front_mtas)

    @property
    def trusted_authserv_id_list(self) -> list[str]:
        return _csv(self.trusted_authserv_ids)

    @property
    def roles(self) -> list[Role]:
        if not self.only:
            return ["api", "smtp", "worker"]
        chosen = {r.strip() for r in self.only.split(",")}
        return [r for r in ("api", "smtp", "worker") if r in chosen]

    @property
    def allowed_upload_types(self) -> list[str]:
        return [t.lower() for t in _csv(self.upload_allowed_types)]

    @property
    def outbound_target(self) -> SMTPOutbound | MaildirOutbound:
        return parse_outbound(self.outbound)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
