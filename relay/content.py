"""Pure: what the other side is shown of an email — the new text, the rest, safe HTML — masked."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from urllib.parse import quote

from relay.compose import FilePart
from relay.html import sanitize_html
from relay.masking import mask_addresses
from relay.parsing import ParsedMessage
from relay.quotes import split_reply


@dataclass(frozen=True)
class ReplyContent:
    new: str  # the text the person wrote: shown first in the forward and in the API
    quoted: str  # quoted history and signature: shown collapsed below it, never dropped
    html: str | None  # the sanitised original HTML, citing `inline` by the relay's Content-IDs
    attachments: list[FilePart]  # attached emails already redacted (`redact_email`)
    inline: list[FilePart]

    def masked(self, masker: Masker) -> ReplyContent:
        """This content as one reader sees it: every real address replaced by its alias."""
        return ReplyContent(
            masker(self.new),
            masker(self.quoted),
            masker(self.html) if self.html else None,
            [replace(f, filename=masker(f.filename, whole=False)) for f in self.attachments],
            [replace(f, filename=masker(f.filename, whole=False)) for f in self.inline],
        )


class Masker:
    """Replaces every real address by an alias: as written, and percent-encoded as in a
    mailto: link (which the text made from HTML shows too)."""

    def __init__(self, real_addresses: Iterable[str], alias: str) -> None:
        self.addresses = sorted({a.lower() for a in real_addresses if a and "@" in a})
        self.alias = alias

    def __call__(self, value: str, *, whole: bool = True) -> str:
        value = mask_addresses(value, self.addresses, self.alias, whole=whole)
        if "%40" not in value:  # no percent-encoded address can be in it
            return value
        for address in self.addresses:
            encoded = quote(address, safe="")
            if encoded != address:
                value = re.sub(re.escape(encoded), quote(self.alias, safe=""), value, flags=re.I)
        return value


def read_content(
    parsed: ParsedMessage,
    *,
    new_content_id: Callable[[], str],
    redact_email: Callable[[bytes], bytes],
    allow_remote_images: bool = False,
) -> ReplyContent:
    """Split the reply text, sanitise the HTML, give inline images fresh Content-IDs and
    redact attached emails: the work that is the same for every reader, done once per
    message. `ReplyContent.masked` then fits it to each reader.

    The sender's Content-IDs are replaced rather than kept: they often name the sending host
    (`image001.png@01DA…` or `…@mail.fleet.example`), and the forward must not.
    """
    split = split_reply(parsed.text)
    attachments = [_redacted(f, redact_email) for f in parsed.attachments]
    if not parsed.html:
        files = [_redacted(inline.file, redact_email) for inline in parsed.inline]
        return ReplyContent(split.new, split.quoted, None, attachments + files, [])
    markup = parsed.html
    inline: list[FilePart] = []
    for part in parsed.inline:
        content_id = new_content_id()
        cited = re.compile(r"cid:\s*<?" + re.escape(part.content_id) + r">?", re.IGNORECASE)
        markup = cited.sub(f"cid:{content_id}", markup)
        inline.append(replace(_redacted(part.file, redact_email), content_id=content_id))
    safe = sanitize_html(
        markup,
        inline_cids=[f.content_id for f in inline if f.content_id],
        allow_remote_images=allow_remote_images,
    )
    return ReplyContent(split.new, split.quoted, safe or None, attachments, inline)


def _redacted(file: FilePart, redact_email: Callable[[bytes], bytes]) -> FilePart:
    if file.content_type != "message/rfc822":
        return file
    return replace(file, data=redact_email(file.data))
