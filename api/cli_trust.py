"""`support-relay dkim generate` and `support-relay suppression …`: deliverability commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.schemas import SuppressionPublic
from relay.config import Settings
from relay.dkim_signing import dns_txt_record, generate_rsa_key, is_selector
from relay.runtime import Relay
from storage import bounces
from storage.db import transaction


def add_parsers(sub: Any) -> None:
    dkim = sub.add_parser("dkim", help="DKIM keys for outbound mail").add_subparsers(
        dest="action", required=True
    )
    generate = dkim.add_parser(
        "generate", help="create a key pair and print the DNS TXT record to publish"
    )
    generate.add_argument("--selector", required=True, help="e.g. relay2026")
    generate.add_argument("--key-file", type=Path, required=True, help="where to write the key")
    generate.add_argument("--bits", type=int, default=2048, choices=[1024, 2048, 3072, 4096])
    generate.add_argument("--force", action="store_true", help="overwrite an existing key file")

    suppression = sub.add_parser(
        "suppression", help="addresses not mailed after a hard bounce"
    ).add_subparsers(dest="action", required=True)
    suppression.add_parser("list", help="list suppressed addresses")
    clear = suppression.add_parser("clear", help="send to an address again")
    clear.add_argument("address")


def generate_dkim_key(settings: Settings, args: argparse.Namespace) -> int:
    """Write the private key (mode 0600, never over an existing one without --force) and
    print what to publish and what to configure."""
    selector = args.selector.strip().lower()
    # The rule DkimSigner applies at start: a key it would refuse is never written.
    if not is_selector(selector):
        print(
            "error: the selector must be DNS labels of letters, digits and '-' "
            f"joined by '.', got {args.selector!r}",
            file=sys.stderr,
        )
        return 2
    path: Path = args.key_file
    if path.exists() and not args.force:
        print(f"error: {path} exists; pass --force to replace it", file=sys.stderr)
        return 1
    private_pem, public_b64 = generate_rsa_key(args.bits)
    try:
        record = dns_txt_record(selector, settings.domain, public_b64)
    except ValueError as exc:  # before the key is written: nothing is left behind
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    with os.fdopen(os.open(path, flags, 0o600), "wb") as fh:
        fh.write(private_pem)
    os.chmod(path, 0o600)
    print("; Publish this record in the DNS zone of your relay domain:")
    print(record)
    print("; Then run the relay with:")
    print(f"RELAY_DKIM_SELECTOR={selector}")
    print(f"RELAY_DKIM_KEY_FILE={path.resolve()}")
    return 0


async def run_suppression(
    relay: Relay, args: argparse.Namespace, emit: Callable[[Any], None]
) -> int:
    async with transaction(relay.sessions) as session:
        if args.action == "list":
            rows = await bounces.list_suppressions(session)
            emit([SuppressionPublic.model_validate(r).dump() for r in rows])
            return 0
        if not await bounces.clear_suppression(session, args.address):
            print(f"error: {args.address} is not suppressed", file=sys.stderr)
            return 1
        emit({"cleared": args.address.lower()})
        return 0
