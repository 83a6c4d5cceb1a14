"""The outgoing MIME body, written without the `email` package, read back with it."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from urllib.parse import unquote_to_bytes

import pytest

from relay.compose import FilePart
from relay.headers import header_text
from relay.mime_body import mime_body

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3


def read(body: bytes) -> EmailMessage:
    msg = message_from_bytes(b"Subject: t\r\n" + body, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects, msg.defects
    for part in msg.walk():
        assert not part.defects, (part.get_content_type(), part.defects)
    return msg


def lines(content: str) -> str:
    """Decoded text with the wire's CRLF as "\\n" (Python's parser keeps CRLF)."""
    return content.replace("\r\n", "\n").rstrip("\n")


def assert_wire_clean(body: bytes) -> None:
    """CRLF only, no line over 998 octets (RFC 5322 2.1.1), header lines short."""
    assert b"\n" not in body.replace(b"\r\n", b"")
    assert b"\r" not in body.replace(b"\r\n", b"")
    assert max(len(line) for line in body.split(b"\r\n")) <= 998


@pytest.mark.parametrize(
    "text",
    [
        "Plain words.",
        "Grüße aus Köln – 東京 🚕\nzweite Zeile",
        "trailing spaces   \nand tabs\t\nend",
        "a=b =3D ==\n.\nFrom the depot\n" + "x" * 300,
        "windows\r\nline\rends\r\n",
        "a" * 75 + " \nb" * 3 + "c" * 74 + "  \n" + "d" * 75 + "\t\n" + "e" * 73 + "=\n",
        "",
    ],
)
def test_text_and_html_read_back_exactly(text: str) -> None:
    html = f"<p>{text}</p>" * 5
    body = mime_body(text, html)
    assert_wire_clean(body)
    msg = read(body)
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/alternative"
    plain, rich = msg.iter_parts()
    normal = text.replace("\r\n", "\n").replace("\r", "\n")
    assert plain.get_content_type() == "text/plain"
    assert lines(plain.get_content()) == normal.rstrip("\n")
    assert rich.get_content_type() == "text/html"
    assert lines(rich.get_content()) == html.replace("\r\n", "\n").replace("\r", "\n")
    # Headers within RFC 5322's 78; quoted-printable lines of at most 76 (RFC 2045 6.7),
    # 7bit ones of at most 78.
    head_end = body.index(b"Content-Transfer-Encoding: ")
    assert all(len(line) <= 78 for line in body[:head_end].split(b"\r\n"))
    for cte, limit in ((b"quoted-printable", 76), (b"7bit", 78)):
        for part in body.split(b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n")[1:]:
            text_lines = part.split(b"\r\n--")[0].split(b"\r\n")
            assert all(len(line) <= limit for line in text_lines), max(text_lines, key=len)


@pytest.mark.parametrize(
    ("text", "cte"),
    [
        ("Plain words.\nTwo lines, tab\tinside.", "7bit"),
        ("x" * 78 + "\n" + "y" * 78, "7bit"),
        ("", "7bit"),
        ("x" * 79, "quoted-printable"),  # longer than RFC 5322's 78
        ("Grüße", "quoted-printable"),  # not ASCII
        ("bell\x07", "quoted-printable"),  # a control character
        ("trailing space \nnext", "quoted-printable"),  # transports may strip it
        ("trailing tab\t", "quoted-printable"),
    ],
)
def test_short_printable_ascii_travels_as_7bit(text: str, cte: str) -> None:
    msg = read(mime_body(text, "<p>x</p>"))
    plain, _ = msg.iter_parts()
    assert plain["Content-Transfer-Encoding"] == cte
    assert lines(plain.get_content()) == text


def test_files_take_their_places_in_the_tree() -> None:
    files = [
        FilePart("receipt.pdf", "application/pdf", b"%PDF-1.4 receipt"),
        FilePart("map.png", "image/png", PNG, content_id="img1.abc@relay.example"),
        FilePart("empty.txt", "text/plain", b""),
    ]
    body = mime_body("see map", '<img src="cid:img1.abc@relay.example">', files)
    assert_wire_clean(body)
    msg = read(body)
    assert msg.get_content_type() == "multipart/mixed"
    alternative, *attachments = msg.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    plain, related = alternative.iter_parts()
    assert related.get_content_type() == "multipart/related"
    html, image = related.iter_parts()
    assert html.get_content_type() == "text/html"
    assert image["Content-ID"] == "<img1.abc@relay.example>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == PNG
    assert [(a.get_filename(), a.get_content()) for a in attachments] == [
        ("receipt.pdf", b"%PDF-1.4 receipt"),
        ("empty.txt", ""),
    ]
    assert [a.get_content_disposition() for a in attachments] == ["attachment", "attachment"]


@pytest.mark.parametrize(
    "name",
    [
        "photo.png",
        'say "hi"\\there.txt',
        "Quittung für Fahrt №4 – Zürich.pdf",
        "東京駅" * 60 + ".pdf",
        "a" * 150 + ".txt",
        "100% sure; name*=x'y'z.txt",
        "=?utf-8?b?ZXZpbA==?=.pdf",
        "ä" * 100 + ".txt",
        "line\r\nContent-Type: text/html\r\n\r\n<script>.txt",
    ],
)
def test_file_names_read_back_and_inject_nothing(name: str) -> None:
    body = mime_body("t", "h", [FilePart(name, "application/octet-stream", b"data")])
    assert_wire_clean(body)
    [attachment] = read(body).iter_attachments()
    assert attachment.get_filename() == header_text(name, 200)
    assert attachment.get_content_type() == "application/octet-stream"
    assert attachment.get_content() == b"data"
    headers = body.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert not any(h.startswith(b"Content-Type: text/html") for h in headers)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain\r\nBcc: x@example.org", "image/png; name=evil", "nonsense", "multipart/mixed"],
)
def test_unusable_media_types_travel_as_octet_stream(content_type: str) -> None:
    body = mime_body("t", "h", [FilePart("f.bin", content_type, b"\x00\x01")])
    assert_wire_clean(body)
    [attachment] = read(body).iter_attachments()
    assert attachment.get_content_type() == "application/octet-stream"
    assert attachment.get_content() == b"\x00\x01"
    assert b"Bcc" not in body


def test_an_attached_email_travels_as_a_message() -> None:
    inner = b"From: a@example.org\nSubject: Fw\n\nBody with =_ and --boundary-like text\n"
    body = mime_body("t", "h", [FilePart("fw.eml", "message/rfc822", inner)])
    assert_wire_clean(body)
    [attachment] = read(body).iter_attachments()
    assert attachment.get_content_type() == "message/rfc822"
    assert attachment["Content-Transfer-Encoding"] == "7bit"
    carried = attachment.get_content()
    assert carried["Subject"] == "Fw"
    assert "Body with =_" in carried.get_content()


def test_a_content_id_that_could_break_the_header_is_refused() -> None:
    with pytest.raises(ValueError):
        mime_body("t", "h", [FilePart("i.png", "image/png", PNG, content_id="a>\r\nBcc: x")])


def test_encoded_file_names_split_between_characters() -> None:
    """Each RFC 2231 section decodes alone (some readers do that); short names use the
    single-section form; a typed encoded word is never sent where a reader decodes it."""
    body = mime_body("t", "h", [FilePart("ä" * 100 + ".txt", "text/plain", b"x")])
    sections = re.findall(rb"filename\*\d+\*=([^;\r]+)", body)
    assert len(sections) > 1
    for section in sections:
        unquote_to_bytes(section.decode().removeprefix("utf-8''")).decode("utf-8")  # whole
    short = mime_body("t", "h", [FilePart("Köln.pdf", "text/plain", b"x")])
    assert b"filename*=utf-8''K%C3%B6ln.pdf" in short
    typed = mime_body("t", "h", [FilePart("=?utf-8?b?ZXZpbA==?=.pdf", "text/plain", b"x")])
    assert b'filename="=?' not in typed


def test_related_names_its_root_type() -> None:
    body = mime_body("t", "<img>", [FilePart("i.png", "image/png", PNG, content_id="i@r.example")])
    [related] = [p for p in read(body).walk() if p.get_content_type() == "multipart/related"]
    assert related.get_param("type") == "text/html"  # RFC 2387 3.1


def test_an_attached_email_too_long_for_8bit_travels_as_bytes() -> None:
    inner = b"From: a@example.org\nSubject: Fw\n\n" + b"x" * 2000 + b"\n"
    body = mime_body("t", "h", [FilePart("fw.eml", "message/rfc822", inner)])
    assert_wire_clean(body)
    [attachment] = read(body).iter_attachments()
    assert attachment.get_content_type() == "application/octet-stream"
    assert b"x" * 2000 in attachment.get_content()
