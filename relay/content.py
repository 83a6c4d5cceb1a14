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
    attachments: list[FilePart]  # names masked; attached emails redacted (`redact_email`)
    inline: list[FilePart]


class Masker:
    """Replaces every real address by an alias: as written, and percent-encoded as in a
    mailto: link (which the text made from HTML shows too)."""

    def __init__(self, real_addresses: Iterable[str], alias: str) -> None:
        self.addresses = sorted({a.lower() for a in real_addresses if a and "@" in a})
        self.alias = alias

    def __call__(self, value: str, *, whole: bool = True) -> str:
        value = mask_addresses(value, self.addresses, self.alias, whole=whole)
        for address in self.addresses:
            encoded = quote(address, safe="")
            if encoded != address:
                value = re.sub(re.escape(encoded), quote(self.alias, safe=""), value, flags=re.I)
        return value


def read_content(
    parsed: ParsedMessage,
    masker: Masker,
    *,
    new_content_id: Callable[[], str],
    redact_email: Callable[[bytes], bytes],
    allow_remote_images: bool = False,
) -> ReplyContent:
    """Split the reply text, sanitise the HTML, give inline images fresh Content-IDs, and
    mask every file name (and every attached email, through `redact_email`).

    The sender's Content-IDs are replaced rather than kept: they often name the sending host
    (`image001.png@01DA…` or `…@mail.fleet.example`), and the forward must not.
    """
    split = split_reply(parsed.text)
    attachments = [_masked_file(f, masker, redact_email) for f in parsed.attachments]
    if not parsed.html:
        files = [_masked_file(inline.file, masker, redact_email) for inline in parsed.inline]
        return ReplyContent(masker(split.new), masker(split.quoted), None, attachments + files, [])
    markup = parsed.html
    inline: list[FilePart] = []
    for part in parsed.inline:
        content_id = new_content_id()
        cited = re.compile(r"cid:\s*<?" + re.escape(part.content_id) + r">?", re.IGNORECASE)
        markup = cited.sub(f"cid:{content_id}", markup)
        inline.append(replace(_masked_file(part.file, masker, redact_email), content_id=content_id))
    safe = sanitize_html(
        markup,
        inline_cids=[f.content_id for f in inline if f.content_id],
        allow_remote_images=allow_remote_images,
    )
    return ReplyContent(
        masker(split.new), masker(split.quoted), masker(safe) or None, attachments, inline
    )


def _masked_file(
    file: FilePart, masker: Masker, redact_email: Callable[[bytes], bytes]
) -> FilePart:
    data = redact_email(file.data) if file.content_type == "message/rfc822" else file.data
    return replace(file, filename=masker(file.filename, whole=False), data=data)
