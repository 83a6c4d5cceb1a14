"""`POST /v1/support/upload-attachment`: a file in, a single-use expiring resourceToken out."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.auth import current_partner, relay_of
from api.contract import ApiRoute, Contract
from api.idempotency import idempotency_of, once, partner_scope, respond
from api.limits import MULTIPART_FRAMING
from api.schemas import UploadResult
from relay.errors import InvalidInput
from relay.headers import header_text
from storage.db import transaction
from storage.tickets import add_upload
from storage.types import utcnow

# Types whose first bytes are fixed: a file declared as one of them must start that way, so
# an HTML page cannot be stored as "image/png" and later mistaken for one.
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "application/pdf": (b"%PDF-",),
    "application/zip": (b"PK\x03\x04", b"PK\x05\x06"),
}


def human_size(size: int) -> str:
    """2MiB, 512KiB, 100B: the unit in which the limit reads as a whole number if possible."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f}{unit}" if value.is_integer() else f"{value:.1f}{unit}"
    return f"{size}B"


def safe_filename(name: str) -> str:
    name = header_text(name, 200).replace("\\", "/").rsplit("/", 1)[-1].lstrip(".")
    return name or "attachment"


def type_allowed(content_type: str, allowed: list[str]) -> bool:
    major = content_type.split("/", 1)[0]
    return any(p in ("*/*", content_type, f"{major}/*") for p in allowed)


_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def check_upload_type(content_type: str, data: bytes, allowed: list[str]) -> None:
    if not _MEDIA_TYPE.fullmatch(content_type):
        raise InvalidInput({"file": f"{content_type!r} is not a media type such as image/png."})
    if not type_allowed(content_type, allowed):
        accepted = ", ".join(allowed)
        message = f"Files of type {content_type} are not accepted. Allowed: {accepted}."
        raise InvalidInput({"file": message})
    signatures = _MAGIC.get(content_type)
    if signatures and not data.startswith(signatures):
        raise InvalidInput({"file": f"The file's content is not {content_type}."})


async def upload_attachment(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    relay = relay_of(request)
    settings = relay.settings
    limit = settings.max_attachment_size
    too_big = {"file": f"File is too big. Max filesize: {human_size(limit)}."}
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit + MULTIPART_FRAMING:  # refused before a byte of the body is read
        raise InvalidInput(too_big)
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise HTTPException(415, "Send the file as multipart/form-data in a field named 'file'.")
    async with request.form(max_files=1, max_fields=5) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput({"file": "This field is required."})
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise InvalidInput(too_big)
        if not data:
            raise InvalidInput({"file": "The file is empty."})
        filename = safe_filename(upload.filename or "attachment")
        content_type = (upload.content_type or "application/octet-stream").split(";")[0]
        content_type = content_type.strip().lower()
    check_upload_type(content_type, data, settings.allowed_upload_types)
    # A retried upload carries new multipart boundaries; what identifies it is the file.
    identity = f"{filename}\0{content_type}\0{hashlib.sha256(data).hexdigest()}".encode()
    idempotency = await idempotency_of(
        request, partner_scope(partner.id), settings.idempotency_ttl, identity
    )
    partner_id = partner.id

    async def create() -> Response:
        expires = utcnow() + timedelta(seconds=settings.upload_token_ttl)
        async with transaction(relay.sessions) as session:
            attachment, token = await add_upload(
                session,
                partner_id,
                filename=filename,
                content_type=content_type,
                data=data,
                expires_at=expires,
            )
            body = UploadResult(
                resource_token=token,
                filename=attachment.filename,
                content_type=attachment.content_type,
                size=attachment.size,
                expires_at=expires,
            ).dump()
            return await respond(idempotency, session, body)

    return await once(idempotency, relay.reads, create)


routes = [
    ApiRoute(
        "/v1/support/upload-attachment",
        upload_attachment,
        "POST",
        Contract(
            "Upload a file; the resourceToken attaches it to a ticket or message once",
            tag="attachments",
            upload=True,
            ok={201: UploadResult},
            idempotent=True,
            description=(
                "Size (RELAY_MAX_ATTACHMENT_SIZE) and type (RELAY_UPLOAD_ALLOWED_TYPES) limits"
                " are field errors on `file`; the token expires after RELAY_UPLOAD_TOKEN_TTL."
            ),
        ),
    )
]
