"""Pure: split a reply body into what the person newly wrote and the quoted history."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, auto

# Marker lines are short. Longer lines skip every pattern below, which keeps the work per line
# bounded and the whole split linear on hostile input (a megabyte on one line).
_MAX_MARKER_LINE = 400
# Phone and app signatures are one short line; a long line starting "Sent from…" is prose.
_MAX_SIGNATURE_LINE = 120
# Gmail wraps a long attribution ("On …, Name <address> wrote:") over two lines, rarely three.
_MAX_ATTRIBUTION_LINES = 3
# An Outlook header block is From, Sent/Date, To, Cc, Subject; long To/Cc lists wrap.
_HEADER_BLOCK_LOOKAHEAD = 8

_I = re.IGNORECASE

# "On <date>, <name> wrote:" in each language: the opening word names the language, whose verb
# must then appear. German and Dutch put the name after the verb ("Am … schrieb Name <x>:").
_ATTRIBUTION_OPENING = re.compile(
    r"(?:(?P<en>on)|(?P<de>am)|(?P<fr>le)|(?P<es>el)|(?P<nl>op)|(?P<pt>em)|(?P<it>il|in\s+data))\b",
    _I,
)
_ATTRIBUTION_VERB = {
    "en": re.compile(r"\bwrote\s*:$", _I),
    "de": re.compile(r"\bschrieb\b", _I),
    "fr": re.compile(r"\ba\s+écrit\s*:$", _I),
    "es": re.compile(r"\bescribió\s*:$", _I),
    "nl": re.compile(r"\bschreef\b|\bhet\s+volgende\s+geschreven\s*:$", _I),
    "pt": re.compile(r"\bescreveu\s*:$", _I),
    "it": re.compile(r"\bha\s+scritto\s*:$", _I),
}
# "Name wrote:" with no date is an attribution only when quoted lines follow it.
_BARE_ATTRIBUTION_VERB = re.compile(
    r"\b(?:wrote|a\s+écrit|escribió|escreveu|ha\s+scritto|geschreven)\s*:$|\b(?:schrieb|schreef)\b",
    _I,
)
# A real attribution carries a date or an address; "On Monday the driver wrote:" does not.
_DIGIT_OR_AT = re.compile(r"[\d@]")

# Possessive quantifiers: a line of 400 dashes must not be re-scanned from every position.
_DASHED_MARKER = re.compile(r"-{2,}+\s*+(?P<label>[^-]{1,60}?)\s*+-{2,}+", _I)
_ORIGINAL_MESSAGE_LABEL = re.compile(
    r"original\s+message|ursprüngliche\s+nachricht|message\s+d['’]origine|mensaje\s+original"
    r"|oorspronkelijk\s+bericht|mensagem\s+original|messaggio\s+originale",
    _I,
)
_FORWARD_LABEL = re.compile(
    r"forwarded\s+message|weitergeleitete\s+nachricht|message\s+transféré|mensaje\s+reenviado"
    r"|doorgestuurd\s+bericht|mensagem\s+encaminhada|messaggio\s+inoltrato",
    _I,
)
_FORWARD_INTRO = re.compile(
    r"(?:begin\s+forwarded\s+message|anfang\s+der\s+weitergeleiteten\s+nachricht"
    r"|début\s+du\s+message\s+réexpédié|inicio\s+del\s+mensaje\s+reenviado"
    r"|begin\s+doorgestuurd\s+bericht|início\s+da\s+mensagem\s+encaminhada"
    r"|inizio\s+messaggio\s+inoltrato)\s*:$",
    _I,
)

# Outlook header keys in the languages fleets write in; "*From:*" is how Gmail renders bold.
# Alternation backtracks across groups, so "Data:" (a date) is not taken for "Da:" (from).
_HEADER_KEY = re.compile(
    r"\*?(?:(?P<from>from|von|de|van|da)"
    r"|(?P<date>sent|date|gesendet|datum|envoyé|enviado(?:\s+el|\s+em)?|enviada(?:\s+em)?"
    r"|fecha|data|verzonden|verstuurd|inviato)"
    r"|(?P<subject>subject|betreff|objet|asunto|onderwerp|oggetto|assunto))"
    r"\*?[ \t\u00a0]{0,3}:(?:\s|\*|$)",
    _I,
)

# One-line signatures that phones and mail apps append. Each names a device after a possessive
# ("my", "meinem", "mon"…) or a known app, so "Sent from the airport." stays the person's text.
_DEVICE = r"[\w .()\-]{1,40}"
_APP = (
    r"(?:iphone|ipad|android|outlook|mail|yahoo|gmail|proton|samsung|galaxy|huawei|xiaomi"
    r"|pixel|blackberry|aol|windows|thunderbird|bluemail|spark|smartphone)\b[\w .()\-]{0,40}"
)
_MOBILE_SIGNATURE = re.compile(
    rf"""(?:
        sent\s+(?:from|with|via)\s+(?:my\s+{_DEVICE}|{_APP})
      | get\s+outlook\s+for\s+(?:ios|android)
      | von\s+meinem\s+{_DEVICE}\s+gesendet
      | gesendet\s+(?:von|mit)\s+(?:meinem\s+{_DEVICE}|{_APP})
      | holen\s+sie\s+sich\s+outlook\s+für\s+(?:ios|android)
      | envoyé\s+(?:de|depuis|avec)\s+(?:mon\s+{_DEVICE}|ma\s+{_DEVICE}|{_APP})
      | obtenir\s+outlook\s+pour\s+(?:ios|android)
      | enviado\s+(?:desde|de|do|con|com)\s+(?:mi\s+{_DEVICE}|(?:o\s+)?meu\s+{_DEVICE}|{_APP})
      | obtener\s+outlook\s+para\s+(?:ios|android)
      | obter\s+o\s+outlook\s+para\s+(?:ios|android)
      | (?:verzonden|verstuurd)\s+(?:vanaf|vanuit|met)\s+(?:mijn\s+{_DEVICE}|{_APP})
      | outlook\s+voor\s+(?:ios|android)\s+downloaden
      | inviato\s+(?:da|dal|con)\s+(?:il\s+mio\s+{_DEVICE}|(?:mio\s+)?{_APP})
      | scarica\s+outlook\s+per\s+(?:ios|android)
    )\s*(?:<[^<>\s]{{1,200}}>)?\s*[.!]?\s*$""",
    _I | re.VERBOSE,
)

# A necessary condition for any line not to be the person's own text, checked on the whole
# text at once: it starts (after blanks) like a quote, a dashed marker or rule, an Outlook
# "From:" or a phone signature, or it ends with ":" (every attribution and forward intro
# does; a rule of underscores counts only before a "From:" line). Text without such a line
# is all new text, and split_reply skips reading it line by line (~1.5 µs a line, 2 ms on
# 100 KB). Keep it in step with the patterns above: test_quotes compares both readings on
# text made of their words. The blanks are possessive (*+): every choice after them starts
# with a non-blank, so giving blanks back cannot help, and backtracking through them made
# a megabyte of blank lines cost 135 ms.
_MAYBE_MARKER_START = re.compile(
    r"\n[^\S\n]*+(?:[>*]|--|(?:from|von|de|van|da)\*?[ \t\u00a0]{0,3}:"
    r"|sent|get|von|gesendet|holen|envoy|obtenir|enviado|obtener|obter|verzonden|verstuurd"
    r"|outlook|inviato|scarica)",
    _I,
)
_MAYBE_MARKER_END = re.compile(r":[^\S\n]*+(?:\n|\Z)")


@dataclass(frozen=True)
class ReplyText:
    new: str  # what the person wrote, without quoted history and signature
    quoted: str  # everything removed (history, signature), "" if nothing removed


class _Kind(Enum):
    BLANK = auto()
    CONTENT = auto()  # a line the person wrote
    QUOTE = auto()  # a ">" line, or the attribution line that introduces one
    SIGNATURE = auto()


def split_reply(text: str) -> ReplyText:
    """Separate a plain-text reply into its new text and what was quoted or signed below it.

    Lines are classified down to the first hard break (an Outlook header block, "-----Original
    Message-----", an attribution followed by unquoted history); the new text ends at the last
    line the person wrote. When that text sits between quoted lines (an inline answer) it is
    kept from the top, so each answer keeps its question; when it only follows a quote (a
    bottom-posted answer) the quote above goes to `quoted`. A deliberate forward is the
    person's content: from its marker on, nothing is removed.

    Signatures are removed only when marked: a "-- " line or a phone/app line ("Sent from my
    iPhone"). Sign-offs and unmarked signature blocks stay in `new`; they cannot be told from
    prose reliably, and forwarding a name too many is the safer mistake than cutting an answer.
    """
    lines = text.splitlines()
    joined = "\n".join(lines)
    if not _MAYBE_MARKER_END.search(joined) and not _MAYBE_MARKER_START.search("\n" + joined):
        return ReplyText(joined.strip(), "")
    return _split_lines(text, lines)


def _split_lines(text: str, lines: list[str]) -> ReplyText:
    """split_reply's reading of each line, which the whole-text check above may spare."""
    kinds = _classify(lines)
    content = [i for i, kind in enumerate(kinds) if kind is _Kind.CONTENT]
    if not content:
        # Stripping would leave nothing: the person sent only a quote or only a signature.
        return ReplyText(text.strip(), "")
    first, last = content[0], content[-1]
    inline = any(kinds[i] is _Kind.QUOTE for i in range(first, last))
    start = 0 if inline else first
    new = "\n".join(lines[start : last + 1]).strip()
    quoted = "\n".join([*lines[:start], *lines[last + 1 :]]).strip()
    return ReplyText(new, quoted)


def _classify(lines: list[str]) -> list[_Kind]:
    """The kind of each line down to the first hard break; the list stops there."""
    n = len(lines)
    quoted = [line.lstrip(" \t").startswith(">") for line in lines]
    bodies = [line.strip() for line in lines]
    next_filled = [n] * (n + 1)
    for i in range(n - 1, -1, -1):
        next_filled[i] = i if bodies[i] else next_filled[i + 1]
    header_keys = [_header_key(body) for body in bodies]

    kinds: list[_Kind] = []
    in_signature = False
    i = 0
    while i < n:
        body = bodies[i]
        if quoted[i]:
            kinds.append(_Kind.QUOTE)
            in_signature = False
            i += 1
            continue
        if not body:
            kinds.append(_Kind.BLANK)
            i += 1
            continue
        if len(body) > _MAX_MARKER_LINE:
            kinds.append(_Kind.SIGNATURE if in_signature else _Kind.CONTENT)
            i += 1
            continue
        label = _dashed_label(body)
        if _is_forward_marker(body, label):
            # The person forwarded this on purpose: all of it, to the end, is what they sent.
            return kinds + [_Kind.CONTENT if bodies[j] else _Kind.BLANK for j in range(i, n)]
        if label is not None and _ORIGINAL_MESSAGE_LABEL.fullmatch(label):
            return kinds
        if _is_underscore_rule(body) and _starts_header_block(header_keys, next_filled[i + 1]):
            return kinds
        if _starts_header_block(header_keys, i):
            return kinds
        span, dated = _attribution(bodies, quoted, i)
        if span:
            after = next_filled[i + span]
            if after < n and quoted[after]:
                kinds.extend([_Kind.QUOTE] * span)
                in_signature = False
                i += span
                continue
            if dated:
                # History that follows unquoted (Yahoo, some webmails) still starts here.
                return kinds
        if body == "--" or (len(body) <= _MAX_SIGNATURE_LINE and _MOBILE_SIGNATURE.match(body)):
            in_signature = True
        kinds.append(_Kind.SIGNATURE if in_signature else _Kind.CONTENT)
        i += 1
    return kinds


def _attribution(bodies: list[str], quoted: list[bool], i: int) -> tuple[int, bool]:
    """How many lines (0: none) an attribution starting at line i covers, and whether it is a
    known form carrying a date or address, which marks history even without quoted lines.
    """
    first = bodies[i]
    opening = _ATTRIBUTION_OPENING.match(first)
    if opening is not None and opening.lastgroup is not None:
        verb = _ATTRIBUTION_VERB[opening.lastgroup]
        joined = first
        for span in range(1, _MAX_ATTRIBUTION_LINES + 1):
            if span > 1:
                k = i + span - 1
                if k >= len(bodies) or not bodies[k] or quoted[k]:
                    break
                if len(bodies[k]) > _MAX_MARKER_LINE:
                    break
                joined = f"{joined} {bodies[k]}"
            if joined.endswith(":") and verb.search(joined):
                return span, bool(_DIGIT_OR_AT.search(joined))
            if joined.endswith(":"):
                break
    if first.endswith(":") and _BARE_ATTRIBUTION_VERB.search(first):
        return 1, False
    return 0, False


def _dashed_label(body: str) -> str | None:
    """The words inside a "-----Label-----" line, if the line is one."""
    if not (body.startswith("--") and body.endswith("--")):
        return None
    match = _DASHED_MARKER.fullmatch(body)
    return match.group("label") if match else None


def _is_forward_marker(body: str, label: str | None) -> bool:
    if label is not None:
        return _FORWARD_LABEL.fullmatch(label) is not None
    return body.endswith(":") and _FORWARD_INTRO.match(body) is not None


def _is_underscore_rule(body: str) -> bool:
    return len(body) >= 10 and not body.strip("_")


def _header_key(body: str) -> str | None:
    """Which Outlook header a line starts with: "from", "date", "subject"; "" if blank."""
    if not body:
        return ""
    if len(body) > _MAX_MARKER_LINE:
        return None
    match = _HEADER_KEY.match(body)
    return match.lastgroup if match else None


def _starts_header_block(header_keys: list[str | None], i: int) -> bool:
    """Whether line i opens an Outlook-style header block: From, then Sent/Date and Subject."""
    if i >= len(header_keys) or header_keys[i] != "from":
        return False
    following = header_keys[i + 1 : i + 1 + _HEADER_BLOCK_LOOKAHEAD]
    if "" in following:
        # A header block has no blank line inside it.
        following = following[: following.index("")]
    return "date" in following and "subject" in following
