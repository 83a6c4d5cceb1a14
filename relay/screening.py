"""Whole-message checks before any ticket is looked at: structure, parse, size of files.

They run once per SMTP transaction, cheapest first: the byte-level structure scan refuses
abusive MIME before Python's parser ever sees it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from relay.errors import InboundRefused, MalformedMessage
from relay.mime_limits import MimeLimits, structure_refusal
from relay.parsing import ParsedMessage, parse_message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScreeningLimits:
    mime: MimeLimits
    max_attachments: int
    max_attachment_size: int


class AttachmentRefused(InboundRefused):
    """Too many files, or one too big: the sender learns which limit, and can send less."""


# A CR not followed by LF. SMTP delivers lines ending in CRLF; a bare CR inside one is not a
# line end to a mail client, but Python's parser splits on it, so "Subject: a\rb" would end
# the header section there and serve the headers below it (Received, X-Originating-IP…)
# as body text to forward.
_BARE_CR = re.compile(rb"\r(?!\n)")


def screen(raw: bytes, limits: ScreeningLimits) -> ParsedMessage:
    """The parsed message, or an `InboundRefused` saying what is wrong with it. The parse
    reads `raw` with bare CRs as spaces; `raw` itself is stored unchanged."""
    readable = _BARE_CR.sub(b" ", raw)
    refusal = structure_refusal(readable, limits.mime)
    if refusal is not None:
        raise InboundRefused(refusal)
    try:
        parsed = parse_message(readable)
    except Exception:
        log.exception("unparseable message refused")
        raise MalformedMessage() from None
    files = [*parsed.attachments, *(inline.file for inline in parsed.inline)]
    if len(files) > limits.max_attachments:
        raise AttachmentRefused(
            f"552 5.3.4 Too many attachments: {len(files)}, at most {limits.max_attachments}"
        )
    for file in files:
        if len(file.data) > limits.max_attachment_size:
            raise AttachmentRefused(
                f"552 5.3.4 An attachment is larger than {limits.max_attachment_size} bytes"
            )
    return parsed
