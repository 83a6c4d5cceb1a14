"""The relay's long-lived parts wired together once: engine, services, SMTP server, worker."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from relay.authentication import Authenticator
from relay.bounce_intake import BounceIntake
from relay.bounces import BounceAddresses
from relay.config import Settings
from relay.delivery import DeliveryWorker, RetryPolicy
from relay.dkim_signing import load_signer
from relay.dns import Resolver
from relay.housekeeping import Housekeeper
from relay.inbound import ConnectionLimiter, InboundHandler, RelaySMTP
from relay.mime_limits import MimeLimits
from relay.outgoing import Mailer
from relay.pipeline import InboundPipeline, InboundPolicy
from relay.rendering import Renderer
from relay.screening import ScreeningLimits
from relay.tickets import OpenLimits, TicketService
from relay.transport import Transport, make_transport
from relay.wakeup import OutboxListener
from storage.bounces import relay_secret
from storage.db import (
    PoolSize,
    SessionFactory,
    make_engine,
    make_read_sessions,
    make_sessions,
    transaction,
)
from storage.group_commit import GroupCommit
from storage.migrate import upgrade

log = logging.getLogger(__name__)


def mime_limits(settings: Settings) -> MimeLimits:
    return MimeLimits(
        max_depth=settings.max_mime_depth,
        max_parts=settings.max_mime_parts,
        max_header_bytes=settings.max_header_bytes,
        max_line_bytes=settings.max_line_bytes,
    )


def inbound_policy(settings: Settings) -> InboundPolicy:
    return InboundPolicy(
        screening=ScreeningLimits(
            mime=mime_limits(settings),
            max_attachments=settings.max_attachments,
            max_attachment_size=settings.max_attachment_size,
        ),
        reopen_window=timedelta(seconds=settings.reopen_window),
        loop_max_messages=settings.loop_max_messages,
        loop_window=timedelta(seconds=settings.loop_window),
        allow_remote_images=settings.allow_remote_images,
        auth_policy=settings.auth_policy,
        honor_dmarc_policy=settings.honor_dmarc_policy,
    )


def authenticator(settings: Settings) -> Authenticator:
    resolver = Resolver(
        settings.dns_server_list,
        timeout=settings.dns_timeout,
        cache_size=settings.dns_cache_size,
    )
    return Authenticator(
        resolver,
        trusted_front=settings.trusted_front_list,
        trusted_authserv_ids=settings.trusted_authserv_id_list,
        timeout=settings.auth_timeout,
        max_dkim_signatures=settings.dkim_max_signatures,
    )


class Relay:
    """Everything one relay process needs; `start_smtp` / `start_worker` pick its roles."""

    def __init__(self, settings: Settings, *, transport: Transport | None = None) -> None:
        self.settings = settings
        self.engine: AsyncEngine = make_engine(
            settings.database_url,
            settings.database_schema,
            pool=PoolSize(settings.database_pool_size, settings.database_max_overflow),
            ping_after_idle=settings.database_ping_after_idle,
        )
        self.sessions: SessionFactory = make_sessions(self.engine)
        # For code that only reads (lookups, GETs): never waits for SQLite's write lock.
        self.reads: SessionFactory = make_read_sessions(self.engine)
        self.transport = transport or make_transport(
            settings.outbound_target,
            pool_size=settings.delivery_pool_size,
            timeout=settings.delivery_timeout,
        )
        self.mailer = Mailer(settings, Renderer())
        self.worker = DeliveryWorker(
            self.sessions,
            self.transport,
            retry=RetryPolicy(settings.delivery_backoff_base, settings.delivery_backoff_max),
            concurrency=settings.delivery_concurrency,
            lease=timedelta(seconds=settings.delivery_lease),
            poll_interval=settings.delivery_poll_interval,
            # Raises ValueError for a missing or unusable key: no start beats unsigned mail.
            signer=load_signer(settings.dkim_selector, settings.dkim_key_file, settings.domain),
        )
        # Inbound messages and new tickets arriving together share a transaction.
        parallel = 1 if settings.is_sqlite else settings.database_commit_parallel
        self.commits = GroupCommit(self.sessions, settings.database_commit_group, parallel)
        self.tickets = TicketService(
            self.commits,
            self.mailer,
            default_contact_email=settings.default_contact_email,
            notify=self.worker.notify,
            limits=OpenLimits(
                per_trip=settings.max_open_tickets_per_trip,
                per_partner=settings.max_open_tickets_per_partner,
            ),
        )
        self.pipeline = InboundPipeline(
            self.commits,
            self.mailer,
            self.worker.notify,
            inbound_policy(settings),
            authenticator(settings),
        )
        self._smtp_server: asyncio.Server | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self.housekeeper = Housekeeper(self.sessions)
        self._housekeeping_task: asyncio.Task[None] | None = None
        self._listener: OutboxListener | None = None
        self.bounce_addresses: BounceAddresses | None = None

    async def migrate(self) -> None:
        await upgrade(self.engine)

    async def prepare(self) -> None:
        """What needs the database before the relay serves: the bounce-address secret."""
        secrets = self.settings.bounce_secrets
        if not secrets:
            async with transaction(self.sessions) as session:
                secrets = [await relay_secret(session, "bounce-address")]
        self.bounce_addresses = BounceAddresses(
            secrets,
            self.settings.domain,
            timedelta(seconds=self.settings.bounce_address_ttl),
        )
        self.worker.bounce_addresses = self.bounce_addresses

    async def start_smtp(self, *, reuse_port: bool = False) -> None:
        assert self.bounce_addresses is not None, "call prepare() first"
        bounces = BounceIntake(self.sessions, self.bounce_addresses, mime_limits(self.settings))
        handler = InboundHandler(self.settings, self.engine, self.pipeline, bounces)
        hostname = self.settings.smtp_hostname or self.settings.domain
        limiter = ConnectionLimiter(self.settings.max_connections_per_client)
        loop = asyncio.get_running_loop()
        self._smtp_server = await loop.create_server(
            lambda: RelaySMTP(
                handler,
                limiter=limiter,
                max_line_bytes=self.settings.max_line_bytes,
                data_size_limit=self.settings.max_message_size,
                hostname=hostname,
                ident="support-relay",
                enable_SMTPUTF8=True,
            ),
            host=self.settings.smtp_host,
            port=self.settings.smtp_port,
            reuse_address=True,
            reuse_port=reuse_port,
        )
        log.info("SMTP listening on %s:%s", self.settings.smtp_host, self.settings.smtp_port)

    def start_worker(self) -> None:
        if not self.settings.is_sqlite:
            self._listener = OutboxListener(
                self.settings.database_url, self.worker.notify, own_origin=self.mailer.origin
            )
            self._listener.start()
        self._worker_task = asyncio.create_task(self.worker.run(), name="delivery-worker")
        self._housekeeping_task = asyncio.create_task(self.housekeeper.run(), name="housekeeping")

    async def close(self) -> None:
        if self._smtp_server is not None:
            self._smtp_server.close()
            await self._smtp_server.wait_closed()
        await self.commits.close()
        if self._listener is not None:
            await self._listener.stop()
        if self._worker_task is not None:
            self.worker.stop()
            await self._worker_task
        if self._housekeeping_task is not None:
            self.housekeeper.stop()
            await self._housekeeping_task
        await self.transport.close()
        await self.engine.dispose()
