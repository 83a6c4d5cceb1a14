"""`Idempotency-Key` on the POSTs that create: a retry replays, it never creates twice."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import select

from storage.db import transaction
from storage.models import IdempotencyRecord
from storage.types import utcnow
from tests.harness import FLEET_INBOX, Accounts, LiveRelay
from tests.test_api import assert_problem, invalid_names, second_partner

KEY = "Idempotency-Key"
REPLAYED = "idempotent-replayed"
TICKET = {"subject": "Lost umbrella", "comment": "A blue umbrella was left in the car."}


def _keyed(acc_or_headers: Accounts | dict[str, str], key: str) -> dict[str, str]:
    headers = acc_or_headers.auth if isinstance(acc_or_headers, Accounts) else acc_or_headers
    return {**headers, KEY: key}


def _assert_replay(first: httpx.Response, again: httpx.Response, status: int = 201) -> None:
    """`again` replays `first`: same status, byte-identical body, marked as a replay."""
    assert first.status_code == status, first.text
    assert REPLAYED not in first.headers
    assert again.status_code == status, again.text
    assert again.headers.get(REPLAYED) == "true"
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers.get("location") == first.headers.get("location")


async def _tickets(live: LiveRelay, acc: Accounts) -> list[int]:
    response = await live.http.get("/v1/support/tickets", headers=acc.auth)
    assert response.status_code == 200, response.text
    return [t["id"] for t in response.json()["tickets"]]


async def _settled_fleet_mail(live: LiveRelay, expected: int) -> None:
    """Exactly `expected` emails reach the fleet, and no more arrive a moment later."""
    await live.sink.handler.wait_for(FLEET_INBOX, count=expected)
    await asyncio.sleep(0.8)  # several worker polls
    assert len(live.sink.handler.for_rcpt(FLEET_INBOX)) == expected


def _create_path(kind: str, trip: dict[str, Any]) -> str:
    if kind == "uuid":
        return f"/v1/support/trips/{trip['id']}/tickets"
    return f"/v1/support/demand/trips/{trip['partnerTripId']}/tickets"


@pytest.mark.parametrize("kind", ["uuid", "partner-trip-id"])
async def test_ticket_create_is_replayed_not_repeated(live: LiveRelay, kind: str) -> None:
    acc = await live.accounts()
    trip = await live.put_trip(acc)
    path = _create_path(kind, trip)
    headers = _keyed(acc, "3f1c2a9e-5b7d-4e8f-9a01-23456789abcd")
    first = await live.http.post(path, headers=headers, json=TICKET)
    again = await live.http.post(path, headers=headers, json=TICKET)
    _assert_replay(first, again)
    ticket = first.json()
    assert first.headers["location"] == f"/v1/support/tickets/{ticket['id']}"

    # The same JSON spelled differently (key order, whitespace) is the same request.
    respelled = json.dumps(dict(reversed(TICKET.items())), indent=4).encode()
    third = await live.http.post(
        path, headers={**headers, "Content-Type": "application/json"}, content=respelled
    )
    _assert_replay(first, third)

    # Another body under this key is refused, whichever way.
    other = await live.http.post(path, headers=headers, json={**TICKET, "subject": "Other"})
    assert list(invalid_names(other)) == [KEY]
    assert REPLAYED not in other.headers
    other_kind = "partner-trip-id" if kind == "uuid" else "uuid"
    moved = await live.http.post(_create_path(other_kind, trip), headers=headers, json=TICKET)
    assert list(invalid_names(moved)) == [KEY]

    assert await _tickets(live, acc) == [ticket["id"]]
    await live.events(acc, ticket["id"], "delivery.sent")
    await _settled_fleet_mail(live, 1)
    assert await _tickets(live, acc) == [ticket["id"]]
    # Without a key, the same body is a new ticket.
    unkeyed = await live.http.post(path, headers=acc.auth, json=TICKET)
    assert unkeyed.status_code == 201 and unkeyed.json()["id"] != ticket["id"]


async def test_replay_of_non_ascii_text_is_byte_identical(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    headers = _keyed(acc, "umlaut-1")
    body = {"subject": "Schlüssel verloren in Łódź", "comment": "Grüße"}
    path = "/v1/support/demand/trips/BK-1/tickets"
    first = await live.http.post(path, headers=headers, json=body)
    again = await live.http.post(path, headers=headers, json=body)
    assert first.json() == again.json()
    _assert_replay(first, again)


async def test_message_post_is_replayed_not_repeated(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    ticket = await live.open_ticket(acc)
    path = f"/v1/support/tickets/{ticket['id']}/messages"
    headers = _keyed(acc, "msg-1")
    body = {"comment": "Any news about the umbrella?"}
    first = await live.http.post(path, headers=headers, json=body)
    again = await live.http.post(path, headers=headers, json=body)
    _assert_replay(first, again)
    message = first.json()
    assert message["body"] == body["comment"] and message["author"] == "partner"

    other = await live.http.post(path, headers=headers, json={"comment": "Something else"})
    assert list(invalid_names(other)) == [KEY]
    elsewhere = await live.open_ticket(acc, subject="Second")
    moved = await live.http.post(
        f"/v1/support/tickets/{elsewhere['id']}/messages", headers=headers, json=body
    )
    assert list(invalid_names(moved)) == [KEY]

    await _settled_fleet_mail(live, 3)  # two tickets opened, one message
    detail = await live.ticket(acc, ticket["id"])
    assert [m["body"] for m in detail["conversation"]].count(body["comment"]) == 1
    assert len([e for e in detail["events"] if e["kind"] == "message.added"]) == 1


def _multipart(boundary: str, name: str, data: bytes, ctype: str) -> bytes:
    return (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


async def test_upload_retried_with_new_boundaries_is_replayed(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    data = b"fare: 54.20 EUR\n"

    async def send(boundary: str, key: str, payload: bytes = data) -> httpx.Response:
        return await live.http.post(
            "/v1/support/upload-attachment",
            headers={
                **_keyed(acc, key),
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            content=_multipart(boundary, "receipt.txt", payload, "text/plain"),
        )

    first = await send("boundary-one-1111", "up-1")
    again = await send("a-completely-different-boundary-2222", "up-1")
    _assert_replay(first, again)
    token = first.json()["resourceToken"]
    assert first.json()["size"] == len(data)

    other_file = await send("boundary-three", "up-1", b"fare: 99.00 EUR\n")
    assert list(invalid_names(other_file)) == [KEY]
    fresh = await send("boundary-four", "up-2")
    assert fresh.status_code == 201 and fresh.json()["resourceToken"] != token

    # The replayed token is the one stored upload: usable once.
    ticket = await live.open_ticket(acc, attachments=[token])
    assert [a["filename"] for a in (await live.ticket(acc, ticket["id"]))["attachments"]] == [
        "receipt.txt"
    ]
    reuse = await live.http.post(
        "/v1/support/demand/trips/BK-1/tickets",
        headers=acc.auth,
        json={**TICKET, "attachments": [token]},
    )
    assert_problem(reuse, 404)


async def test_order_session_post_creates_one_ticket_per_key(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc, "ORD-1")
    headers = _keyed(acc, "order-1")
    body = {"callbackPhone": "+49301234567"}
    first = await live.http.post("/v1/support/orders/ORD-1", headers=headers, json=body)
    assert first.status_code == 201, first.text
    again = await live.http.post("/v1/support/orders/ORD-1", headers=headers, json=body)
    assert again.is_success and again.json() == first.json()
    assert len(await _tickets(live, acc)) == 1
    await _settled_fleet_mail(live, 1)


async def test_order_session_post_replays_like_the_other_posts(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc, "ORD-1")
    headers = _keyed(acc, "order-1")
    body = {"callbackPhone": "+49301234567"}
    first = await live.http.post("/v1/support/orders/ORD-1", headers=headers, json=body)
    again = await live.http.post("/v1/support/orders/ORD-1", headers=headers, json=body)
    _assert_replay(first, again)
    other = await live.http.post(
        "/v1/support/orders/ORD-1", headers=headers, json={"callbackPhone": "+4930999999"}
    )
    assert list(invalid_names(other)) == [KEY]


async def test_admin_category_and_tag_creation_replay(live: LiveRelay) -> None:
    acc = await live.accounts()
    headers = _keyed(live.admin, "cat-1")
    body = {"name": "Lost item", "description": "Left in the car"}
    first = await live.http.post("/v1/admin/categories", headers=headers, json=body)
    again = await live.http.post("/v1/admin/categories", headers=headers, json=body)
    _assert_replay(first, again)
    # A new key for the same name is a real second attempt: the name is taken.
    assert_problem(
        await live.http.post(
            "/v1/admin/categories", headers=_keyed(live.admin, "cat-2"), json=body
        ),
        409,
    )
    changed = await live.http.post(
        "/v1/admin/categories", headers=headers, json={"name": "Billing"}
    )
    assert list(invalid_names(changed)) == [KEY]
    # Admin keys and partner keys live apart; so do the two admin routes' requests.
    tag_headers = _keyed(live.admin, "tag-1")
    tag_body = {"name": "VIP", "keyword": "vip"}
    tag = await live.http.post("/v1/admin/tags", headers=tag_headers, json=tag_body)
    tag_again = await live.http.post("/v1/admin/tags", headers=tag_headers, json=tag_body)
    _assert_replay(tag, tag_again)
    crossed = await live.http.post("/v1/admin/tags", headers=headers, json=tag_body)
    assert list(invalid_names(crossed)) == [KEY]

    listed = await live.http.get("/v1/support/categories", headers=acc.auth)
    assert [c["id"] for c in listed.json()["categories"]] == [first.json()["id"]]
    tags = await live.http.get("/v1/support/tags", headers=acc.auth)
    assert [t["id"] for t in tags.json()["tags"]] == [tag.json()["id"]]


async def test_keys_belong_to_one_partner(live: LiveRelay) -> None:
    acc = await live.accounts()
    other = await second_partner(live, acc, "desk@other.example")
    await live.put_trip(acc, "BK-1")
    await live.put_trip(other, "BK-1")
    path = "/v1/support/demand/trips/BK-1/tickets"
    mine = await live.http.post(path, headers=_keyed(acc, "shared-key"), json=TICKET)
    theirs = await live.http.post(path, headers=_keyed(other, "shared-key"), json=TICKET)
    assert mine.status_code == 201 and theirs.status_code == 201, theirs.text
    assert REPLAYED not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]
    assert await _tickets(live, acc) == [mine.json()["id"]]
    assert await _tickets(live, other) == [theirs.json()["id"]]
    # Each partner's replay is its own.
    again = await live.http.post(path, headers=_keyed(other, "shared-key"), json=TICKET)
    _assert_replay(theirs, again)
    await _settled_fleet_mail(live, 2)


async def test_malformed_keys_are_refused_and_create_nothing(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    path = "/v1/support/demand/trips/BK-1/tickets"
    for bad in ("k" * 256, "k" * 300, "has space", "", "tab\there", "caf\u00e9"):
        raw: list[tuple[bytes, bytes]] = [(k.encode(), v.encode()) for k, v in acc.auth.items()]
        raw.append((KEY.encode(), bad.encode("utf-8")))
        response = await live.http.post(path, headers=raw, json=TICKET)
        assert list(invalid_names(response)) == [KEY], repr(bad)
    for bad in ("k" * 300, "has space"):
        upload = await live.http.post(
            "/v1/support/upload-attachment",
            headers=_keyed(acc, bad),
            files={"file": ("r.txt", b"abc", "text/plain")},
        )
        assert list(invalid_names(upload)) == [KEY]
        category = await live.http.post(
            "/v1/admin/categories", headers=_keyed(live.admin, bad), json={"name": "X"}
        )
        assert list(invalid_names(category)) == [KEY]
    assert await _tickets(live, acc) == []
    assert (await live.http.get("/v1/support/categories", headers=acc.auth)).json() == {
        "categories": []
    }
    # The longest and oddest keys that are allowed.
    for good in ("k" * 255, "!#$%&'*+-.^_`|~{}[]()<>@,;:\\\"/?="):
        ok = await live.http.post(path, headers=_keyed(acc, good), json=TICKET)
        assert ok.status_code == 201, (good, ok.text)
    assert len(await _tickets(live, acc)) == 2


async def test_concurrent_requests_with_one_key_create_once(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    path = "/v1/support/demand/trips/BK-1/tickets"
    headers = _keyed(acc, "burst-1")
    responses = await asyncio.gather(
        *(live.http.post(path, headers=headers, json=TICKET) for _ in range(10))
    )
    assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1
    assert len({r.headers["location"] for r in responses}) == 1
    assert sum(REPLAYED in r.headers for r in responses) == 9
    [ticket_id] = await _tickets(live, acc)
    assert responses[0].json()["id"] == ticket_id

    # Messages on that ticket, likewise.
    messages = await asyncio.gather(
        *(
            live.http.post(
                f"/v1/support/tickets/{ticket_id}/messages",
                headers=_keyed(acc, "burst-2"),
                json={"comment": "Any news?"},
            )
            for _ in range(10)
        )
    )
    assert [r.status_code for r in messages] == [201] * 10, [r.text for r in messages]
    assert len({r.content for r in messages}) == 1
    await _settled_fleet_mail(live, 2)
    detail = await live.ticket(acc, ticket_id)
    assert [m["body"] for m in detail["conversation"]].count("Any news?") == 1


async def test_a_refused_request_records_nothing_under_its_key(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    path = "/v1/support/demand/trips/BK-1/tickets"
    headers = _keyed(acc, "fix-me")
    too_long = await live.http.post(path, headers=headers, json={**TICKET, "subject": "x" * 501})
    assert list(invalid_names(too_long)) == ["subject"]
    no_category = await live.http.post(path, headers=headers, json={**TICKET, "category": 987654})
    assert list(invalid_names(no_category)) == ["category"]
    no_token = await live.http.post(path, headers=headers, json={**TICKET, "attachments": ["x"]})
    assert_problem(no_token, 404)
    no_trip = await live.http.post(
        "/v1/support/demand/trips/BK-404/tickets", headers=headers, json=TICKET
    )
    assert_problem(no_trip, 404)
    assert await _tickets(live, acc) == []

    corrected = await live.http.post(path, headers=headers, json=TICKET)
    assert corrected.status_code == 201, corrected.text
    assert REPLAYED not in corrected.headers
    again = await live.http.post(path, headers=headers, json=TICKET)
    _assert_replay(corrected, again)

    # An upload refused for its type, then sent as an accepted type under the same key.
    up_headers = _keyed(acc, "upload-fix")
    refused = await live.http.post(
        "/v1/support/upload-attachment",
        headers=up_headers,
        files={"file": ("r.exe", b"MZ\x90\x00", "application/x-msdownload")},
    )
    assert list(invalid_names(refused)) == ["file"]
    accepted = await live.http.post(
        "/v1/support/upload-attachment",
        headers=up_headers,
        files={"file": ("r.txt", b"receipt", "text/plain")},
    )
    assert accepted.status_code == 201, accepted.text
    assert REPLAYED not in accepted.headers

    # A refused category create, then the corrected one under the same admin key.
    cat_headers = _keyed(live.admin, "cat-fix")
    blank = await live.http.post("/v1/admin/categories", headers=cat_headers, json={"name": " "})
    assert list(invalid_names(blank)) == ["name"]
    made = await live.http.post("/v1/admin/categories", headers=cat_headers, json={"name": "Ok"})
    assert made.status_code == 201, made.text
    await _settled_fleet_mail(live, 1)


async def test_expired_keys_are_reusable_and_swept_by_the_housekeeper(live: LiveRelay) -> None:
    acc = await live.accounts()
    await live.put_trip(acc)
    path = "/v1/support/demand/trips/BK-1/tickets"
    for key in ("old-1", "old-2"):
        body = {"subject": key, "comment": "First use."}
        first = await live.http.post(path, headers={**acc.auth, "Idempotency-Key": key}, json=body)
        assert first.status_code == 201, first.text
    async with transaction(live.relay.sessions) as session:
        for row in (await session.exec(select(IdempotencyRecord))).all():
            row.expires_at = utcnow() - timedelta(seconds=1)
            session.add(row)

    # An expired key is forgotten: another body under it is a new request, not a 422.
    again = await live.http.post(
        path,
        headers={**acc.auth, "Idempotency-Key": "old-1"},
        json={"subject": "reused", "comment": "Second use."},
    )
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") is None
    # The sweep removes the other expired record and keeps the live one.
    assert await live.relay.housekeeper.run_once() == 1
    async with live.relay.sessions() as session:
        keys = [r.key for r in (await session.exec(select(IdempotencyRecord))).all()]
    assert keys == ["old-1"]
