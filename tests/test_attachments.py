"""Attachment downloads and request body limits, as a partner sees them over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from api.attachments import content_disposition, served_media_type
from storage.db import transaction
from storage.tickets import add_upload
from storage.types import utcnow
from tests.conftest import Database
from tests.harness import FLEET_INBOX, Accounts, LiveRelay, live_relay, reply_mail
from tests.test_api import assert_problem, second_partner

OCTETS = "application/octet-stream"


async def _upload(live: LiveRelay, acc: Accounts, name: str, data: bytes, ctype: str) -> str:
    response = await live.http.post(
        "/v1/support/upload-attachment", headers=acc.auth, files={"file": (name, data, ctype)}
    )
    assert response.status_code == 201, response.text
    token = response.json()["resourceToken"]
    assert isinstance(token, str)
    return token


async def _download(live: LiveRelay, acc: Accounts, attachment_id: str) -> httpx.Response:
    return await live.http.get(f"/v1/support/attachments/{attachment_id}", headers=acc.auth)


def _files_by_name(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["filename"]: f for f in detail["attachments"]}


def _assert_safe_download(response: httpx.Response, data: bytes, ctype: str) -> str:
    """A 200 download of exactly `data` as `ctype`; returns the Content-Disposition."""
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-type"] == ctype
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["x-content-type-options"] == "nosniff"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="')
    return disposition


def _parse_disposition(value: str) -> tuple[str, str]:
    """(the ASCII fallback, the decoded filename*) of a header this relay wrote."""
    assert not any(c in value for c in "\r\n\0")
    assert value.isascii()
    kind, fallback_part, star_part = value.split("; ")
    assert kind == "attachment"
    assert fallback_part.startswith('filename="') and fallback_part.endswith('"')
    fallback = fallback_part[len('filename="') : -1]
    assert not any(c in fallback for c in '"\\/%') and fallback.isprintable()
    assert star_part.startswith("filename*=UTF-8''")
    encoded = star_part.removeprefix("filename*=UTF-8''")
    assert all(c.isalnum() or c in "!#$&+-.^_`|~%" for c in encoded), encoded
    return fallback, unquote(encoded, errors="strict")


async def _fleet_alias(live: LiveRelay) -> str:
    [to_fleet] = await live.sink.handler.wait_for(FLEET_INBOX)
    alias = to_fleet.message["Reply-To"].addresses[0].addr_spec
    assert isinstance(alias, str)
    return alias


def _with_files(msg: EmailMessage, files: list[tuple[str, str, bytes]]) -> EmailMessage:
    for name, ctype, data in files:
        maintype, _, subtype = ctype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


# ── Downloads ─────────────────────────────────────────────────────────────────────────────


async def test_owner_downloads_an_upload_claimed_by_a_ticket(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    token = await _upload(live, acc, "photo.png", png, "image/png")
    ticket = await live.open_ticket(acc, attachments=[token])
    [file] = ticket["attachments"]

    response = await _download(live, acc, file["id"])
    disposition = _assert_safe_download(response, png, "image/png")
    assert disposition == "attachment; filename=\"photo.png\"; filename*=UTF-8''photo.png"
    assert response.headers["cache-control"].startswith("private")


async def test_fleet_email_attachments_download_like_uploads(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    alias = await _fleet_alias(live)
    pdf = b"%PDF-1.7 fare receipt\n" * 50
    page = b"<html><script>alert(document.cookie)</script></html>"
    answer = _with_files(
        reply_mail(FLEET_INBOX, alias, "Receipt and our page attached."),
        [("receipt.pdf", "application/pdf", pdf), ("page.html", "text/html", page)],
    )
    await live.send(answer, alias)

    files = _files_by_name(await live.ticket(acc, ticket["id"]))
    assert set(files) == {"receipt.pdf", "page.html"}
    assert files["receipt.pdf"]["messageId"] is not None
    receipt = await _download(live, acc, files["receipt.pdf"]["id"])
    assert _parse_disposition(_assert_safe_download(receipt, pdf, "application/pdf")) == (
        "receipt.pdf",
        "receipt.pdf",
    )
    # The fleet's HTML is the fleet's content: it must not run on the relay's origin.
    html = await _download(live, acc, files["page.html"]["id"])
    _assert_safe_download(html, page, OCTETS)


async def test_another_partners_attachment_is_404_like_a_missing_one(live: LiveRelay) -> None:
    acc = await live.accounts()
    other = await second_partner(live, acc, "ops@other.example")
    await live.put_trip(acc)
    token = await _upload(live, acc, "r.txt", b"fare: 54.20 EUR\n", "text/plain")
    [file] = (await live.open_ticket(acc, attachments=[token]))["attachments"]

    missing = assert_problem(await _download(live, other, str(uuid.uuid4())), 404)
    assert missing["detail"] == "Attachment not found."
    for attachment_id in (file["id"], "not-a-uuid", "x" * 37, str(uuid.uuid4())):
        response = await _download(live, other, attachment_id)
        assert assert_problem(response, 404) == missing, attachment_id
        assert "content-disposition" not in response.headers
    unauthenticated = await live.http.get(f"/v1/support/attachments/{file['id']}")
    assert_problem(unauthenticated, 401)
    # The owner still gets it: the refusals above were about who asked, not the file.
    assert (await _download(live, acc, file["id"])).content == b"fare: 54.20 EUR\n"


async def test_an_unclaimed_upload_is_its_owners_only(live: LiveRelay) -> None:
    acc = await live.accounts()
    other = await second_partner(live, acc, "ops@other.example")
    # Stored as a raw row, so the name has not passed the upload route's own clean-up:
    # the download must make it safe by itself.
    async with transaction(live.relay.sessions) as session:
        upload, _token = await add_upload(
            session,
            acc.partner_id,
            filename='../../etc/pass"wd\\x',
            content_type="text/plain",
            data=b"root:x:0:0\n",
            expires_at=utcnow() + timedelta(hours=1),
        )
    response = await _download(live, acc, upload.id)
    fallback, name = _parse_disposition(
        _assert_safe_download(response, b"root:x:0:0\n", "text/plain")
    )
    assert fallback == name == "x"

    refused = assert_problem(await _download(live, other, upload.id), 404)
    assert refused == assert_problem(await _download(live, other, str(uuid.uuid4())), 404)


async def test_active_content_types_are_served_as_octet_stream(database: Database) -> None:
    # Every type accepted on upload here: the same types can arrive attached to an email.
    async with live_relay(database.url, database.schema, upload_allowed_types="*/*") as live:
        await _served_types_are_safe(live)


async def _served_types_are_safe(live: LiveRelay) -> None:
    # Uploads must declare a well-formed type; mail can carry anything and is served safely.
    assert served_media_type("not a media type") == OCTETS
    acc = await live.accounts()
    await live.put_trip(acc)
    served = {
        "text/html": OCTETS,
        "image/svg+xml": OCTETS,
        "application/xhtml+xml": OCTETS,
        "text/javascript": OCTETS,
        "application/vnd.acme+xml": OCTETS,
        "TEXT/HTML; charset=utf-8": OCTETS,
        "image/png": "image/png",
        "text/plain": "text/plain",
        "application/pdf": "application/pdf",
    }
    svg = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>"
    # Declared types with a fixed signature must carry it to be accepted at all.
    magic = {"image/png": b"\x89PNG\r\n\x1a\n", "application/pdf": b"%PDF-"}
    data = {ctype: magic.get(ctype, b"") + svg for ctype in served}
    tokens = [
        await _upload(live, acc, f"f{i}.bin", data[ctype], ctype) for i, ctype in enumerate(served)
    ]
    ticket = await live.open_ticket(acc, attachments=tokens)
    by_name = _files_by_name(ticket)
    for i, (ctype, expected) in enumerate(served.items()):
        response = await _download(live, acc, by_name[f"f{i}.bin"]["id"])
        # Exactly the type, with no charset guessed for text: sniffing is off, so this wins.
        _assert_safe_download(response, data[ctype], expected)
        assert response.headers["content-security-policy"] == "default-src 'none'; sandbox"


async def test_hostile_filenames_from_email_give_a_safe_header(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    alias = await _fleet_alias(live)
    answer = _with_files(
        reply_mail(FLEET_INBOX, alias, "Files."),
        [
            ("../../etc/passwd", "text/plain", b"1"),
            ('say "hi"\\ there.txt', "text/plain", b"2"),
            ("reçu été.pdf", "application/pdf", b"3"),
            ("PLACEHOLDER", "text/plain", b"4"),
        ],
    )
    # CR LF cannot be put in a header through the email package: encode them as a hostile
    # mail client would, in an RFC 2231 parameter.
    raw = answer.as_bytes().replace(
        b'filename="PLACEHOLDER"', b"filename*=utf-8''evil%22%0D%0AX-Injected%3A%201.txt"
    )
    assert raw.count(b"%0D%0A") == 1
    await live.send(raw, alias)

    detail = await live.ticket(acc, ticket["id"])
    headers = {}
    for file in detail["attachments"]:
        response = await _download(live, acc, file["id"])
        assert response.status_code == 200, response.text
        assert "x-injected" not in response.headers
        headers[response.content] = _parse_disposition(response.headers["content-disposition"])
    # Only the last path part is kept when the mail is parsed (either separator), so
    # nothing can walk up.
    assert headers[b"1"] == ("passwd", "passwd")
    assert headers[b"2"] == ("there.txt", "there.txt")
    assert headers[b"3"] == ("recu ete.pdf", "reçu été.pdf")
    fallback, name = headers[b"4"]
    assert fallback == "evil X-Injected: 1.txt" and name == 'evil" X-Injected: 1.txt'


@pytest.mark.parametrize(
    ("filename", "fallback", "name"),
    [
        ("photo.png", "photo.png", "photo.png"),
        ("../../etc/passwd", "passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini", "boot.ini"),
        ('a"b\r\nSet-Cookie: x=1.txt', "ab Set-Cookie: x=1.txt", 'a"b Set-Cookie: x=1.txt'),
        ("reçu été.pdf", "recu ete.pdf", "reçu été.pdf"),
        ("收据.pdf", "__.pdf", "收据.pdf"),
        ("100% done.txt", "100_ done.txt", "100% done.txt"),
        ("invoice\u202efdp.exe", "invoice fdp.exe", "invoice fdp.exe"),
        ("..", "attachment", "attachment"),
        ("", "attachment", "attachment"),
        (".hidden\x00 ", "hidden", "hidden"),
    ],
)
def test_content_disposition_keeps_only_a_plain_name(
    filename: str, fallback: str, name: str
) -> None:
    assert _parse_disposition(content_disposition(filename)) == (fallback, name)


# ── Body limits ───────────────────────────────────────────────────────────────────────────


@pytest.fixture
async def small(database: Database) -> AsyncIterator[LiveRelay]:
    """A relay that takes 2 KiB JSON bodies and 4 KiB files."""
    async with live_relay(
        database.url, database.schema, max_request_body=2048, max_attachment_size=4096
    ) as live:
        yield live


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _multipart(data: bytes, boundary: str = "relay-test-boundary") -> tuple[bytes, str]:
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="big.txt"\r\n'
            "Content-Type: text/plain\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


async def test_json_body_over_the_limit_is_413_and_changes_nothing(small: LiveRelay) -> None:
    acc = await small.accounts()
    await small.put_trip(acc)
    path = "/v1/support/demand/trips/BK-1/tickets"
    body = {"subject": "Too long", "comment": "x" * 3000}
    too_big = assert_problem(await small.http.post(path, headers=acc.auth, json=body), 413)
    assert too_big["title"] == "Content Too Large" and "2048 bytes" in too_big["detail"]
    # Refused from Content-Length before anything else, even before the key is checked.
    assert_problem(await small.http.post(path, json=body), 413)
    listed = await small.http.get("/v1/support/tickets", headers=acc.auth)
    assert listed.json()["tickets"] == []
    assert small.sink.handler.for_rcpt(FLEET_INBOX) == []

    ticket = await small.open_ticket(acc, comment="y" * 1500)
    assert ticket["conversation"][0]["body"] == "y" * 1500


async def test_chunked_body_over_the_limit_is_413(small: LiveRelay) -> None:
    acc = await small.accounts()
    await small.put_trip(acc)
    path = "/v1/support/demand/trips/BK-1/tickets"
    headers = {**acc.auth, "Content-Type": "application/json"}
    head, tail = b'{"subject": "Chunked", "comment": "', b'"}'
    response = await small.http.post(
        path, headers=headers, content=_chunks(head, *[b"x" * 1024] * 8, tail)
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413)
    assert (await small.http.get("/v1/support/tickets", headers=acc.auth)).json()["tickets"] == []

    # Under the limit, a chunked body is read as usual.
    fine = await small.http.post(path, headers=headers, content=_chunks(head, b"y" * 500, tail))
    assert fine.status_code == 201, fine.text
    assert fine.json()["conversation"][0]["body"] == "y" * 500


async def test_upload_limits_field_error_first_413_only_when_absurd(small: LiveRelay) -> None:
    acc = await small.accounts()
    path = "/v1/support/upload-attachment"
    # Over the file limit but plausible: the route's field error says what the limit is.
    body, ctype = _multipart(b"a" * 5000)
    for content in (body, _chunks(body)):
        response = await small.http.post(
            path, headers={**acc.auth, "Content-Type": ctype}, content=content
        )
        problem = assert_problem(response, 422)
        assert problem["invalidParams"] == [
            {"name": "file", "reason": "File is too big. Max filesize: 4KiB."}
        ]
    # Far beyond twice the upload's limit (4 KiB + 64 KiB framing): refused unread, declared
    # or streamed.
    body, ctype = _multipart(b"a" * 200_000)
    headers = {**acc.auth, "Content-Type": ctype}
    assert_problem(await small.http.post(path, headers=headers, content=body), 413)
    pieces = [body[i : i + 16_384] for i in range(0, len(body), 16_384)]
    assert_problem(await small.http.post(path, headers=headers, content=_chunks(*pieces)), 413)
    # The upload path takes bodies bigger than the JSON limit of other paths.
    body, ctype = _multipart(b"a" * 4096)
    ok = await small.http.post(path, headers={**acc.auth, "Content-Type": ctype}, content=body)
    assert ok.status_code == 201, ok.text
