"""Instructions per fleet reply and per ticket creation, counted by valgrind: the one
figure on a shared, noisy machine that repeats from run to run.

    .venv/bin/python bench/instructions.py                 # this tree
    .venv/bin/python bench/instructions.py --base 08d9124  # and an earlier commit, same run
      [--replies 10,50] [--creations 10,40]

Wall-clock rates on these machines drift by half between runs (Postfix: 290 to 640 msg/s
in one hour), CPU time with them. `valgrind --tool=callgrind` counts the instructions a
process executes instead, which do not depend on what else the machine is doing.

Each measurement starts a live relay in one process (tests.harness: the real SMTP and HTTP
servers on loopback, a SQLite file, the sink the forwards arrive at) and either sends fleet
replies over 5 SMTP connections, each forwarded to the partner's sink, or opens tickets
through the HTTP API, each emailed to the fleet. It runs twice, with a small and a large
count; the difference divided by the difference in count is the cost of one more reply or
ticket, start-up excluded. The figure includes the test client and the sink (the same for
both trees), and only user-space instructions: time the kernel spends switching to the
SQLite thread, and fsync, are not counted. SQLite only (PostgreSQL's work is in another
process). valgrind must be installed (`apt-get install valgrind`).

With --base, the commit is checked out in a temporary worktree and measured in the same run;
the last line gives this tree against it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPLY_TEXT = ("The umbrella is at our depot, desk 3, from 9 am. " * 40)[:1800]


# --- what is measured, in the child process ---------------------------------------------


async def _replies(count: int, database: str) -> None:
    import aiosmtplib

    from tests.harness import FLEET_INBOX, PARTNER_INBOX, live_relay, reply_mail

    async with live_relay(database, None, loop_max_messages=1_000_000) as live:
        _, _, alias = await live.fleet_ticket()
        mails = [reply_mail(FLEET_INBOX, alias, REPLY_TEXT).as_bytes() for _ in range(count)]

        async def client(chunk: Sequence[bytes]) -> None:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=live.smtp_port) as smtp:
                for raw in chunk:
                    await smtp.sendmail(FLEET_INBOX, [alias], raw)

        await asyncio.gather(*(client(mails[i::5]) for i in range(5)))
        await live.sink.handler.wait_for(PARTNER_INBOX, count, timeout=600)


async def _creations(count: int, database: str) -> None:
    from tests.harness import FLEET_INBOX, live_relay

    async with live_relay(database, None) as live:
        accounts = await live.accounts()
        await live.put_trip(accounts)
        for _ in range(count):
            await live.open_ticket(accounts, comment="x" * 1024)
        await live.sink.handler.wait_for(FLEET_INBOX, count, timeout=600)


def child(kind: str, count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite+aiosqlite:///{Path(tmp) / 'relay.db'}"
        work = _replies if kind == "replies" else _creations
        asyncio.run(work(count, database))


# --- the parent: valgrind around children -------------------------------------------------


def instructions(tree: Path, kind: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            str(tree / "bench" / "instructions.py"),
            "--child",
            kind,
            str(count),
        ]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{kind} x {count} in {tree} failed:\n{done.stderr[-3000:]}")
        summary = re.search(r"^summary: (\d+)$", out.read_text(), re.MULTILINE)
        if summary is None:
            raise SystemExit("callgrind wrote no summary line")
        return int(summary.group(1))


def per_unit(tree: Path, kind: str, counts: tuple[int, int]) -> float:
    """Instructions of one more reply (or ticket): start-up cancels out of the difference."""
    small, large = (instructions(tree, kind, n) for n in counts)
    return (large - small) / (counts[1] - counts[0])


def counts_arg(text: str) -> tuple[int, int]:
    small, _, large = text.partition(",")
    try:
        pair = int(small), int(large)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("two counts, e.g. 10,50") from exc
    if not 0 < pair[0] < pair[1]:
        raise argparse.ArgumentTypeError("two counts, the first smaller, e.g. 10,50")
    return pair


def measure(tree: Path, replies: tuple[int, int], creations: tuple[int, int]) -> dict[str, float]:
    return {
        "reply": per_unit(tree, "replies", replies),
        "creation": per_unit(tree, "creations", creations),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="a commit to measure beside this tree, e.g. 08d9124")
    parser.add_argument("--replies", type=counts_arg, default=(10, 50))
    parser.add_argument("--creations", type=counts_arg, default=(10, 40))
    parser.add_argument("--child", nargs=2, metavar=("KIND", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found: apt-get install valgrind")
    trees = {"this tree": ROOT}
    scratch = Path(tempfile.mkdtemp(prefix="bench-base-"))
    try:
        if args.base:
            base = scratch / "base"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(base), args.base],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            # The base tree is measured with this script and its harness, its own code.
            shutil.copy(ROOT / "bench" / "instructions.py", base / "bench" / "instructions.py")
            trees[args.base] = base
        # One tree per core: the counts do not depend on what runs beside them.
        with ThreadPoolExecutor(max_workers=len(trees)) as pool:
            futures = {
                name: pool.submit(measure, tree, args.replies, args.creations)
                for name, tree in trees.items()
            }
            results = {name: future.result() for name, future in futures.items()}
    finally:
        if args.base:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(scratch / "base")],
                cwd=ROOT,
                capture_output=True,
            )
        shutil.rmtree(scratch, ignore_errors=True)
    print("| tree | instructions per reply | instructions per ticket creation |")
    print("| --- | --- | --- |")
    for name, figures in results.items():
        print(f"| {name} | {figures['reply'] / 1e6:.1f} M | {figures['creation'] / 1e6:.1f} M |")
    mine = results["this tree"]
    if args.base:
        base_figures = results[args.base]
        print(
            f"instructions: reply {mine['reply'] / 1e6:.1f} M = "
            f"{mine['reply'] / base_figures['reply']:.2f}x {args.base}, "
            f"creation {mine['creation'] / 1e6:.1f} M = "
            f"{mine['creation'] / base_figures['creation']:.2f}x {args.base}"
        )
    else:
        print(
            f"instructions: reply {mine['reply'] / 1e6:.1f} M, "
            f"creation {mine['creation'] / 1e6:.1f} M"
        )


if __name__ == "__main__":
    main()
