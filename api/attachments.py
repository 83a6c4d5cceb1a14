"""Attachment downloads (`GET /v1/support/attachments/{id}`), safe to open from a browser."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from api.auth import current_partner, relay_of
from api.bodies import str_param
from api.contract import ApiRoute, Contract
from relay.errors import NotFound
from relay.filenames import safe_filename
from storage.attachments import attachment_for_partner
from storage.tickets import blob_data

OCTET_STREAM = "application/octet-stream"

# type/subtype made of RFC 6838 restricted-name characters; parameters are dropped.
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
# Types a browser may render or execute as part of our origin if someone opens the URL.
_ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "image/svg+xml",
        "application/xhtml+xml",
        "text/xsl",
        "application/x-shockwave-flash",
    }
)
_ACTIVE_WORDS = ("script", "xml", "html")
# RFC 5987 attr-char beyond what `quote` always keeps (letters, digits, "_.-~").
_ATTR_CHAR_EXTRA = "!#$&+^`|"


def served_media_type(stored: str) -> str:
    """The Content-Type to serve a stored file as: anything active or malformed is octets."""
    media = stored.partition(";")[0].strip().lower()
    if not _MEDIA_TYPE.fullmatch(media):
        return OCTET_STREAM
    if media in _ACTIVE_TYPES or media.startswith("multipart/"):
        return OCTET_STREAM
    if any(word in media for word in _ACTIVE_WORDS):
        return OCTET_STREAM
    return media


def _ascii_fallback(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    ascii_name = "".join(c if " " <= c <= "~" else "_" for c in kept)
    # A quoted-string ends at '"' and escapes with '\'; some clients percent-decode the
    # plain filename (RFC 6266 appendix D), so '%' is replaced too.
    ascii_name = ascii_name.replace('"', "").replace("\\", "").replace("%", "_")
    return ascii_name.strip(" .") or "attachment"


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII `filename` for old clients and the exact name in
    `filename*` (RFC 6266, RFC 5987): nothing in it can end the header or name a path."""
    name = safe_filename(filename)
    encoded = quote(name, safe=_ATTR_CHAR_EXTRA, encoding="utf-8")
    return f"attachment; filename=\"{_ascii_fallback(name)}\"; filename*=UTF-8''{encoded}"


async def download_attachment(request: Request) -> Response:
    partner = await current_partner(request)
    assert partner.id is not None
    attachment_id = str_param(request, "attachmentId", "attachment", max_length=36)
    async with relay_of(request).reads() as session:
        attachment = await attachment_for_partner(session, partner.id, attachment_id)
        if attachment is None:
            raise NotFound("attachment")
        data = await blob_data(session, attachment.blob_id)
    return download(data, served_media_type(attachment.content_type), attachment.filename)


def download(data: bytes, media_type: str, filename: str) -> Response:
    """A file for a browser to save, never to render in our origin."""
    headers = {
        # Set here rather than as media_type: Starlette would append a charset to text/*
        # types, claiming an encoding we do not know.
        "Content-Type": media_type,
        "Content-Disposition": content_disposition(filename),
        "X-Content-Type-Options": "nosniff",
        # Should a browser render it anyway, it runs with no scripts and no origin.
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-cache",
    }
    return Response(data, headers=headers)


routes = [
    ApiRoute(
        "/v1/support/attachments/{attachmentId}",
        download_attachment,
        "GET",
        Contract(
            "Download an attachment of one of your tickets",
            tag="attachments",
            binary=True,
            description=(
                "The stored bytes with a safe Content-Disposition. Types a browser would run"
                " (HTML, SVG, scripts) are served as application/octet-stream."
            ),
        ),
    ),
]
