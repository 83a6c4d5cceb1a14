"""The byte-level MIME pre-scan: exact limits, the parser's reading of structure, linear cost.

The property at the end is the one that matters for safety: on any input, the scan counts at
least the nesting and the parts that Python's own parser then builds, so no syntax trick
can hide structure from it.
"""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.mime_limits import (
    MimeLimits,
    MimeShape,
    _LimitBroken,
    _Scan,
    measure,
    structure_refusal,
)

LIMITS = MimeLimits()
REPLY = re.compile(r"^5\d\d 5\.\d{1,3}\.\d{1,3} [^\r\n]+$")
CORPUS = Path(__file__).parent / "corpus" / "malformed"


def nested(levels: int, eol: bytes = b"\r\n") -> bytes:
    """A multipart nested `levels` deep, each level with one part, all closed properly."""
    lines = [b"From: a@example.org", b"Content-Type: multipart/mixed; boundary=b0", b""]
    for i in range(1, levels):
        lines += [b"--b%d" % (i - 1), b"Content-Type: multipart/mixed; boundary=b%d" % i, b""]
    lines += [b"--b%d" % (levels - 1), b"Content-Type: text/plain", b"", b"deepest"]
    lines += [b"--b%d--" % i for i in reversed(range(levels))]
    return eol.join(lines) + eol


def with_parts(count: int, eol: bytes = b"\r\n") -> bytes:
    head = b"From: a@example.org" + eol + b'Content-Type: multipart/mixed; boundary="p"' + eol
    part = b"--p" + eol + b"Content-Type: text/plain" + eol + eol + b"x" + eol
    return head + eol + part * count + b"--p--" + eol


def python_shape(raw: bytes) -> tuple[int, int]:
    """(nesting depth, entities below the root) of what email's parser builds."""
    msg = message_from_bytes(raw, policy=policy.default)

    def depth(node: Message) -> int:
        if not node.is_multipart():
            return 0
        children = node.get_payload()
        assert isinstance(children, list)
        nested = [depth(child) for child in children if isinstance(child, Message)]
        return 1 + max(nested, default=0)

    return depth(msg), sum(1 for _ in msg.walk()) - 1


def test_ordinary_mail_passes_and_is_measured() -> None:
    raw = (
        b"From: a@example.org\r\nSubject: hi\r\n"
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        b"preamble\r\n--outer\r\n"
        b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"
        b"--inner\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--inner\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n--inner--\r\n"
        b"--outer\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nforwarded\r\n"
        b"--outer--\r\nepilogue\r\n"
    )
    assert structure_refusal(raw, LIMITS) is None
    shape = measure(raw)
    assert (shape.depth, shape.parts) == (2, 5) == python_shape(raw)
    assert shape.line_bytes == len(b"Content-Type: multipart/alternative; boundary=inner")


def test_every_refusal_is_one_readable_line_with_an_enhanced_code() -> None:
    cases = {
        nested(21): "554 5.6.0 MIME nesting deeper than 20 levels",
        with_parts(501): "552 5.3.4 More than 500 MIME parts",
        b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n": "552 5.3.4 A header section exceeds 65536 bytes",
        b"Subject: x\r\n\r\n" + b"y" * 10_001 + b"\r\n": "554 5.6.0 A line exceeds 10000 bytes",
    }
    roomy_lines = MimeLimits(max_line_bytes=1_000_000)
    for raw, expected in cases.items():
        limits = roomy_lines if expected.startswith("552 5.3.4 A header") else LIMITS
        reply = structure_refusal(raw, limits)
        assert reply == expected
        assert REPLY.match(reply)


def test_depth_limit_is_exact() -> None:
    assert structure_refusal(nested(20), LIMITS) is None
    assert measure(nested(20)).depth == 20
    assert structure_refusal(nested(21), LIMITS) == "554 5.6.0 MIME nesting deeper than 20 levels"
    assert structure_refusal(nested(3), MimeLimits(max_depth=2)) is not None


def test_parts_limit_is_exact() -> None:
    assert structure_refusal(with_parts(500), LIMITS) is None
    assert measure(with_parts(500)).parts == 500 == python_shape(with_parts(500))[1]
    assert structure_refusal(with_parts(501), LIMITS) == "552 5.3.4 More than 500 MIME parts"


def test_header_limit_applies_to_every_section() -> None:
    limits = MimeLimits(max_header_bytes=1000)
    fill = b"X-Fill: " + b"f" * 900 + b"\r\n"
    top = b"From: a@example.org\r\n" + fill + b"X-More: " + b"m" * 100 + b"\r\n\r\nbody\r\n"
    assert structure_refusal(top, limits) is not None
    part = (
        b"Content-Type: multipart/mixed; boundary=p\r\n\r\n--p\r\n"
        + fill
        + b"X-Folded: a\r\n"
        + b"\tcontinued\r\n" * 20
        + b"\r\nbody\r\n--p--\r\n"
    )
    assert structure_refusal(part, limits) is not None
    inner = b"Content-Type: message/rfc822\r\n\r\n" + fill * 2 + b"\r\nbody\r\n"
    assert structure_refusal(inner, limits) is not None
    # The same bytes in a body are not a header section.
    body = b"Subject: x\r\n\r\n" + fill * 50
    assert structure_refusal(body, limits) is None


def test_exactly_at_the_header_limit_passes() -> None:
    head = b"X-Fill: " + b"f" * 90 + b"\r\n"  # 100 bytes
    assert structure_refusal(head * 10 + b"\r\nbody", MimeLimits(max_header_bytes=1000)) is None
    assert structure_refusal(head * 11 + b"\r\nbody", MimeLimits(max_header_bytes=1000))


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r"], ids=["crlf", "lf", "cr"])
def test_lines_end_where_the_parser_ends_them(eol: bytes) -> None:
    assert structure_refusal(nested(21, eol), LIMITS) is not None
    assert measure(nested(5, eol)).depth == 5 == python_shape(nested(5, eol))[0]
    line = b"y" * 10_000
    assert structure_refusal(b"Subject: x" + eol + eol + (line + eol) * 5, LIMITS) is None
    assert structure_refusal(b"Subject: x" + eol + eol + line + b"y" + eol, LIMITS) is not None


def test_line_limit_excludes_the_line_break() -> None:
    limits = MimeLimits(max_line_bytes=998)
    assert structure_refusal(b"S: x\r\n\r\n" + b"a" * 998 + b"\r\n", limits) is None
    assert structure_refusal(b"S: x\r\n\r\n" + b"a" * 999, limits) is not None


def test_folded_case_insensitive_and_quoted_content_types_are_read() -> None:
    variants = [
        b"Content-Type: multipart/mixed;\r\n\tboundary=%b",
        b'Content-Type: multipart/mixed;\r\n boundary="%b"',
        b'CONTENT-TYPE: MULTIPART/MIXED; BOUNDARY="%b"',
        b"content-type:multipart/related;type=text/html;boundary=%b",
        b'Content-Type: multipart/mixed; charset="a;boundary=no"; boundary = "%b" ',
        b"Content-Type: multipart/signed; boundary*=us-ascii''%b",
    ]
    for header in variants:
        lines = [b"From: a@example.org"]
        for i in range(3):
            lines += [header % (b"lvl%d" % i), b"", b"--lvl%d" % i]
        lines += [b"Content-Type: text/plain", b"", b"leaf"]
        raw = b"\r\n".join(lines) + b"\r\n"
        assert measure(raw).depth == 3 == python_shape(raw)[0], header
        assert structure_refusal(raw, MimeLimits(max_depth=2)) is not None, header


def test_an_outer_boundary_ends_every_level_inside_it() -> None:
    # 40 siblings, each an unterminated multipart: depth stays 2 because the next outer
    # boundary closes the sibling, as it does in the parser.
    sibling = b"--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nt\r\n"
    raw = b"Content-Type: multipart/mixed; boundary=o\r\n\r\n" + sibling * 40 + b"--o--\r\n"
    assert structure_refusal(raw, LIMITS) is None
    assert measure(raw).depth == 2 == python_shape(raw)[0]


def test_the_same_boundary_nested_is_claimed_by_the_outer_level() -> None:
    part = b"--x\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
    raw = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + part * 100 + b"--x--\r\n"
    assert structure_refusal(raw, LIMITS) is None
    assert measure(raw).depth == 2 and python_shape(raw)[0] <= 2


def test_nested_messages_count_as_levels() -> None:
    raw = b"Content-Type: message/rfc822\r\n\r\n" * 21 + b"Subject: x\r\n\r\nbody\r\n"
    assert structure_refusal(raw, LIMITS) == "554 5.6.0 MIME nesting deeper than 20 levels"
    short = b"Content-Type: message/rfc822\r\n\r\n" * 5 + b"Subject: x\r\n\r\nbody\r\n"
    assert measure(short).depth == 5 == python_shape(short)[0]


def test_digest_parts_default_to_messages() -> None:
    raw = (
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n"
        b"--d\r\n\r\nContent-Type: multipart/mixed; boundary=e\r\n\r\n--e\r\n\r\nx\r\n--e--\r\n"
        b"--d--\r\n"
    )
    assert measure(raw).depth == 3 == python_shape(raw)[0]


def test_delivery_status_blocks_are_parts() -> None:
    blocks = b"Reporting-MTA: dns; mx.example\r\n\r\n" * 600
    raw = b"Content-Type: message/delivery-status\r\n\r\n" + blocks
    assert python_shape(raw)[1] >= 501
    assert structure_refusal(raw, LIMITS) == "552 5.3.4 More than 500 MIME parts"


def test_syntax_the_scan_does_not_decode_is_counted_pessimistically() -> None:
    # Python decodes this encoded-word to the boundary "q"; the scan cannot be sure, so
    # every '--' line may open a part, and nothing it opens is ever assumed closed.
    lines = [b'Content-Type: multipart/mixed; boundary="=?us-ascii?q?q?="', b""]
    for i in range(25):
        lines += [b"--q", b"Content-Type: multipart/mixed; boundary=n%d" % i, b"", b"--n%d" % i]
    raw = b"\r\n".join(lines) + b"\r\n"
    python_depth, python_parts = python_shape(raw)
    shape = measure(raw)
    assert shape.depth >= python_depth and shape.parts >= python_parts
    assert structure_refusal(raw, LIMITS) is not None


# Multi-megabyte adversarial inputs: a super-linear scan would not finish in a test run.


def test_one_megabyte_single_line() -> None:
    raw = b"Subject: x\r\n\r\n" + b"A" * 1_000_000
    assert structure_refusal(raw, LIMITS) == "554 5.6.0 A line exceeds 10000 bytes"
    assert measure(raw).line_bytes == 1_000_000
    header_line = b"X-Long: " + b"h" * 1_000_000 + b"\r\n\r\n"
    assert structure_refusal(header_line, MimeLimits(max_line_bytes=2_000_000)) is not None


def test_one_hundred_thousand_nested_boundaries() -> None:
    raw = nested(100_000)
    assert structure_refusal(raw, LIMITS) == "554 5.6.0 MIME nesting deeper than 20 levels"
    assert measure(raw) == MimeShape(depth=100_000, parts=100_000, header_bytes=65, line_bytes=46)


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r"], ids=["crlf", "lf", "cr"])
def test_two_hundred_thousand_parts(eol: bytes) -> None:
    # Each part's body text is skipped to the next delimiter: that search must not start
    # over from every part (a CR-only search ran to the end each time: 10 minutes here).
    raw = with_parts(200_000, eol)
    assert structure_refusal(raw, LIMITS) == "552 5.3.4 More than 500 MIME parts"
    assert measure(raw).parts == 200_000


def test_megabytes_of_dash_lines_under_an_unsure_multipart() -> None:
    raw = b'Content-Type: multipart/mixed; boundary="=?x?q?z?="\r\n\r\n' + b"--z\r\n" * 400_000
    assert structure_refusal(raw, LIMITS) == "552 5.3.4 More than 500 MIME parts"
    assert measure(raw).parts == 400_000


def test_huge_content_type_of_quotes_and_semicolons() -> None:
    value = b'multipart/mixed; a="' + b";" * 500_000 + b'"; ' + b'b=";";' * 100_000
    raw = b"Content-Type: " + value + b"\r\n\tboundary=q\r\n\r\n--q\r\n\r\nx\r\n--q--\r\n"
    roomy = MimeLimits(max_line_bytes=10**7, max_header_bytes=10**7)
    assert structure_refusal(raw, roomy) is None
    assert structure_refusal(raw, LIMITS) is not None


def test_megabytes_of_folded_header_and_bare_line_breaks() -> None:
    folded = b"Content-Type: multipart/mixed;\r\n" + b" x=y;\r\n" * 200_000 + b" boundary=q\r\n"
    assert structure_refusal(folded + b"\r\n", LIMITS) is not None
    roomy = MimeLimits(max_header_bytes=10**7)
    assert structure_refusal(folded + b"\r\n--q\r\n\r\nx\r\n--q--\r\n", roomy) is None
    assert structure_refusal(b"\r" * 1_000_000, LIMITS) is None
    assert structure_refusal(b"S: x\n\n" + b"=?\n--\n\n" * 100_000, LIMITS) is None


def test_empty_and_headerless_input() -> None:
    assert structure_refusal(b"", LIMITS) is None
    assert measure(b"") == MimeShape(0, 0, 0, 0)
    assert structure_refusal(b"just a body line\r\nand another\r\n", LIMITS) is None


# Which files of the malformed corpus break a limit, and with which reply.
CORPUS_REFUSALS = {
    "mime-nesting-past-limit.eml": "554 5.6.0 MIME nesting deeper than 20 levels",
    "mime-message-rfc822-nesting-past-limit.eml": "554 5.6.0 MIME nesting deeper than 20 levels",
    "mime-parts-past-limit.eml": "552 5.3.4 More than 500 MIME parts",
    "header-section-huge.eml": "552 5.3.4 A header section exceeds 65536 bytes",
    "part-header-section-huge.eml": "552 5.3.4 A header section exceeds 65536 bytes",
    "line-very-long.eml": "554 5.6.0 A line exceeds 10000 bytes",
}


def test_corpus_files_are_refused_exactly_when_they_break_a_limit() -> None:
    files = sorted(CORPUS.glob("*.eml"))
    assert len(files) >= 40
    for path in files:
        raw = path.read_bytes()
        assert structure_refusal(raw, LIMITS) == CORPUS_REFUSALS.get(path.name), path.name
        # ...and where the scan measures, it never counts less than the parser builds.
        if path.name not in CORPUS_REFUSALS:
            depth, parts = python_shape(raw)
            shape = measure(raw)
            assert shape.depth >= depth and shape.parts >= parts, path.name


# Soundness against the real parser, on random structure written in every syntax the
# parser accepts (including the ones the scan only bounds), with stray delimiter lines.

BOUNDARIES = st.one_of(
    st.sampled_from(["a", "b", "a--", "x y", "=_Part_1", "b-", "Q.1", "zz"]),
    # Anything printable: quotes, backslashes, '*', "'", '%', ';' and '=' included.
    st.text(alphabet=[chr(c) for c in range(0x20, 0x7F)], min_size=1, max_size=6),
)


def _pct(text: str) -> str:
    return "".join(f"%{ord(c):02X}" if not c.isalnum() else c for c in text)


def _multipart_header(draw: st.DrawFn, subtype: str, boundary: str) -> str:
    quoted = boundary.replace("\\", "").replace('"', "")
    forms = [
        f'multipart/{subtype}; boundary="{quoted}"',
        f'Multipart/{subtype.upper()};\r\n\tBOUNDARY="{quoted}"',
        f"multipart/{subtype}; boundary*=us-ascii''{_pct(boundary)}",
        f'multipart/{subtype}; boundary="=?us-ascii?q?{boundary.replace(" ", "_")}?="',
        f'=?utf-8?q?multipart?=/{subtype}; boundary="{quoted}"',
        f'multipart/{subtype}; boundary="{quoted}" (comment)',
        f'multipart/{subtype}; boundary*0="{quoted[:1]}"; boundary*1="{quoted[1:]}"',
        f'multipart/{subtype}; boundary="{quoted}"; boundary="zz"',
        f"multipart/{subtype}; boundary={boundary.replace(' ', '')}/x",
        f"multipart/{subtype}; boundary=utf-7''+AGE-",
    ]
    # Written as is, however the parser may read it.
    forms.append(f"multipart/{subtype}; boundary={boundary}")
    forms.append(f'multipart/{subtype}; boundary="{boundary}"')
    forms.append(f"multipart/{subtype}; boundary*=utf-8''{boundary}")
    return draw(st.sampled_from(forms))


@st.composite
def entity(draw: st.DrawFn, depth: int = 0, outer: tuple[str, ...] = ()) -> list[str]:
    """Lines of one MIME entity (headers, blank line, body), structure chosen at random."""
    kinds = ["leaf", "leaf", "multipart", "message", "status"] if depth < 4 else ["leaf"]
    kind = draw(st.sampled_from(kinds))
    lines: list[str] = []
    noise = st.sampled_from(
        [
            "",
            "text",
            "--",
            "-- ",
            "From nobody",
            "not a header",
            "X-Field: value",
            *(f"--{b}" for b in outer),
            *(f"--{b}--" for b in outer),
            *(f"--{b} \t" for b in outer),
        ]
    )
    if kind == "leaf":
        if draw(st.booleans()):
            lines.append("Content-Type: text/plain")
        lines.append("")
        lines += draw(st.lists(noise, max_size=3))
        return lines
    if kind == "message":
        lines += [draw(st.sampled_from(["message/rfc822", "=?us-ascii?q?message?=/rfc822"]))]
        lines[-1] = "Content-Type: " + lines[-1]
        lines.append("")
        return lines + draw(entity(depth + 1, outer))
    if kind == "status":
        lines += ["Content-Type: message/delivery-status", ""]
        for _ in range(draw(st.integers(1, 3))):
            lines += ["Action: failed", draw(noise), ""]
        return lines
    boundary = draw(BOUNDARIES)
    subtype = draw(st.sampled_from(["mixed", "alternative", "digest"]))
    lines.append("Content-Type: " + _multipart_header(draw, subtype, boundary))
    if draw(st.booleans()):
        lines.append("Content-Type: message/rfc822")  # only the first one counts
    lines.append("")
    lines += draw(st.lists(noise, max_size=2))
    for _ in range(draw(st.integers(0, 3))):
        lines.append(f"--{boundary}")
        child = draw(entity(depth + 1, (*outer, boundary)))
        if draw(st.booleans()) and child and child[0] == "":
            child = child[1:]  # a part without the blank line after its headers
        lines += child
    if draw(st.booleans()):
        lines.append(f"--{boundary}--")
    lines += draw(st.lists(noise, max_size=2))
    return lines


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    lines = ["From: a@example.org", *draw(entity())]
    eol = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    return eol.join(lines).encode("utf-8") + eol.encode()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(messages())
def test_scan_never_counts_less_than_the_parser_builds(raw: bytes) -> None:
    depth, parts = python_shape(raw)
    shape = measure(raw)
    assert shape.depth >= depth, repr(raw)
    assert shape.parts >= parts, repr(raw)
    expected = structure_refusal(raw, MimeLimits(max_depth=depth, max_parts=parts))
    if (shape.depth, shape.parts) == (depth, parts):
        assert expected is None


def _outcome(raw: bytes, limits: MimeLimits, skip_body_text: bool) -> object:
    scan = _Scan(limits)
    try:
        scan.run(raw, skip_body_text=skip_body_text)
    except _LimitBroken as broken:
        return broken.reply
    return (scan.max_depth, scan.parts, scan.max_header_bytes, scan.max_line_bytes)


@st.composite
def mixed_break_messages(draw: st.DrawFn) -> bytes:
    """Generated structure, each line ended by any break the parser knows, some lines long."""
    lines = ["From: a@example.org", *draw(entity())]
    out = b""
    for line in lines:
        out += line.encode("utf-8") + b"x" * draw(st.sampled_from([0, 0, 0, 15, 40]))
        out += draw(st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"]))
    return out


@settings(max_examples=400, deadline=None, derandomize=True)
@given(mixed_break_messages(), st.sampled_from([LIMITS, MimeLimits(max_line_bytes=30)]))
def test_skipping_body_text_reads_the_same_shape(raw: bytes, limits: MimeLimits) -> None:
    # Body text that only a delimiter line could end is measured in one step instead of
    # line by line: the same shape and the same refusal, on any structure.
    assert _outcome(raw, limits, True) == _outcome(raw, limits, False), repr(raw)


def test_skipping_body_text_reads_the_corpus_the_same() -> None:
    for path in sorted(CORPUS.glob("*.eml")):
        raw = path.read_bytes()
        assert _outcome(raw, LIMITS, True) == _outcome(raw, LIMITS, False), path.name


@pytest.mark.parametrize(
    "raw",
    [
        # Text inside a delivery-status block: the blank line after it still opens a part.
        b"From: a\r\nContent-Type: multipart/report; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: x\r\nnot a header\r\n"
        b"\r\nAction: failed\r\nbody\r\n\r\nAction: x\r\n--b--\r\n",
        # A delimiter after a bare CR, and text after the closing one (the epilogue).
        b"From: a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\ntext\r"
        b"--b\r\n\r\nmore\n--b--\r\nepilogue\r\n--b\r\n",
    ],
    ids=["delivery-status-text", "bare-cr-and-epilogue"],
)
def test_skipping_body_text_keeps_what_blank_and_dash_lines_do(raw: bytes) -> None:
    assert _outcome(raw, LIMITS, True) == _outcome(raw, LIMITS, False)
