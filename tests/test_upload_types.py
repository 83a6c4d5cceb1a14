"""Which files an upload may be: the declared type must be allowed and match the content."""

from __future__ import annotations

import httpx

from tests.conftest import Database
from tests.harness import Accounts, LiveRelay, live_relay
from tests.test_api import invalid_names

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR fake image"
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 fake"


async def _upload(
    live: LiveRelay, acc: Accounts, name: str, data: bytes, ctype: str
) -> httpx.Response:
    return await live.http.post(
        "/v1/support/upload-attachment", headers=acc.auth, files={"file": (name, data, ctype)}
    )


async def test_default_types_refuse_executables_and_name_the_allowed_ones(
    live: LiveRelay,
) -> None:
    acc = await live.accounts()
    refused = invalid_names(
        await _upload(live, acc, "setup.exe", b"MZ\x90\x00", "application/x-msdownload")
    )
    assert list(refused) == ["file"]
    reason = refused["file"]
    assert "application/x-msdownload" in reason
    for allowed in ("image/png", "image/jpeg", "application/pdf", "text/plain"):
        assert allowed in reason, allowed
    for ctype in ("text/html", "application/octet-stream", "image/svg+xml", "application/x-sh"):
        assert list(invalid_names(await _upload(live, acc, "f", b"<x>", ctype))) == ["file"], ctype

    for name, data, ctype in (
        ("photo.png", PNG, "image/png"),
        ("photo.jpg", b"\xff\xd8\xff\xe0 jfif", "image/jpeg"),
        ("anim.gif", b"GIF89a fake", "image/gif"),
        ("scan.pdf", b"%PDF-1.7 fake", "application/pdf"),
        ("notes.txt", b"hello", "text/plain"),
        ("photo.webp", WEBP, "image/webp"),
        ("photo.PNG", PNG, "IMAGE/PNG"),
        ("photo2.png", PNG, "image/png; name=photo2.png"),
    ):
        response = await _upload(live, acc, name, data, ctype)
        assert response.status_code == 201, (ctype, response.text)
        assert response.json()["contentType"] == ctype.split(";")[0].lower()


async def test_declared_type_must_match_the_content(live: LiveRelay) -> None:
    acc = await live.accounts()
    fake = invalid_names(await _upload(live, acc, "x.png", b"<html>not a png</html>", "image/png"))
    assert fake == {"file": "The file's content is not image/png."}
    for ctype, data in (
        ("image/jpeg", b"GIF89a"),
        ("image/gif", PNG),
        ("application/pdf", b"PDF-1.4 missing percent"),
        ("application/zip", b"not a zip"),
        ("IMAGE/PNG", b"GIF89a"),
    ):
        reasons = invalid_names(await _upload(live, acc, "x", data, ctype))
        assert reasons == {"file": f"The file's content is not {ctype.lower()}."}, ctype
    # The real thing passes.
    good = await _upload(live, acc, "x.png", PNG, "image/png")
    assert good.status_code == 201


async def test_operator_can_allow_a_family_of_types(database: Database) -> None:
    async with live_relay(database.url, database.schema, upload_allowed_types="image/*") as live:
        acc = await live.accounts()
        webp = await _upload(live, acc, "photo.webp", WEBP, "image/webp")
        assert webp.status_code == 201, webp.text
        assert webp.json()["contentType"] == "image/webp"
        assert (await _upload(live, acc, "photo.png", PNG, "image/png")).status_code == 201
        # Content checks still apply inside the family.
        fake = invalid_names(await _upload(live, acc, "x.png", b"nope", "image/png"))
        assert fake == {"file": "The file's content is not image/png."}
        for ctype, data in (
            ("application/pdf", b"%PDF-1.7"),
            ("text/plain", b"hello"),
            ("imagefoo/png", PNG),
        ):
            reasons = invalid_names(await _upload(live, acc, "x", data, ctype))
            assert list(reasons) == ["file"], ctype
            assert f"Files of type {ctype} are not accepted" in reasons["file"]
            assert "image/*" in reasons["file"]


async def test_a_type_without_subtype_is_not_in_a_family(database: Database) -> None:
    async with live_relay(database.url, database.schema, upload_allowed_types="image/*") as live:
        acc = await live.accounts()
        reasons = invalid_names(await _upload(live, acc, "x", b"abc", "image"))
        assert list(reasons) == ["file"]


async def test_operator_can_accept_anything(database: Database) -> None:
    async with live_relay(
        database.url, database.schema, upload_allowed_types="text/plain, */*"
    ) as live:
        acc = await live.accounts()
        exe = await _upload(live, acc, "setup.exe", b"MZ\x90\x00", "application/x-msdownload")
        assert exe.status_code == 201, exe.text
        # Even then a declared PNG must be one.
        fake = invalid_names(await _upload(live, acc, "x.png", b"nope", "image/png"))
        assert list(fake) == ["file"]
