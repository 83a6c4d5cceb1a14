"""Sample a running process with py-spy and name where its CPU time went.

py-spy is a development tool, not a dependency: `.venv/bin/pip install py-spy`. Only samples
of a thread holding the GIL are kept (`--gil`): the interpreter's own work, which is what
one event loop can do at a time. Time the SQLite threads spend in C with the GIL released,
and idle time in epoll, are left out, so the shares are shares of Python CPU time.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path
from types import TracebackType

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")
SITE = "site-packages/"
PROJECT = {"relay", "storage", "api"}


def find_py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profile:
    """`async with Profile(pid, out):` records raw (collapsed) stacks while the block runs."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Profile:
        py_spy = find_py_spy()
        if py_spy is None:
            raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
        argv = [py_spy, "record", "--pid", str(self.pid), "--rate", str(self.rate)]
        argv += ["--format", "raw", "--gil", "--subprocesses", "--output", str(self.out)]
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        await asyncio.sleep(0.5)  # attaching takes a moment
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        _, err = await self.proc.communicate()
        if not self.out.exists():
            raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')}")


def _where(file: str) -> str:
    """A short name for a source file: the package path after site-packages, or the repo's."""
    if SITE in file:
        return file.split(SITE, 1)[1]
    for top in ("/relay/", "/storage/", "/api/", "/bench/"):
        if top in file:
            return top.strip("/") + "/" + file.split(top, 1)[1]
    if "/lib/python3" in file:
        return "stdlib/" + file.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return file


def _package(where: str) -> str:
    head = where.split("/", 1)[0]
    if head == "stdlib":
        sub = where.split("/")[1]
        return f"stdlib {sub.removesuffix('.py')}"
    return head.removesuffix(".py")


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for text in stack.split(";"):
        found = FRAME.match(text)
        if found:
            frames.append((found["func"], _where(found["file"])))
    return frames


def _is_project(where: str) -> bool:
    # api/cli.py's main is the root of every stack: not a place where time is spent.
    return where.split("/")[0] in PROJECT and where != "api/cli.py"


def hot_spot(frames: list[tuple[str, str]]) -> str:
    """Where a sample's time goes: the deepest project function and what it called into.

    SQLAlchemy runs the ORM's synchronous code in greenlets, whose stacks py-spy shows
    without the async caller: those samples are named by the ORM entry point instead.
    """
    mine = [i for i, (_, where) in enumerate(frames) if _is_project(where)]
    if not mine:
        if frames[0][0] != "<module>":  # a greenlet's or a thread's own stack
            func, where = frames[0]
            return f"{func} ({_package(where)}; caller not on the stack)"
        # The event loop running a callback outside our code: name the callback.
        ran = [i for i, (func, _) in enumerate(frames) if func == "Handle._run"]
        func, where = frames[min(ran[-1] + 1, len(frames) - 1)] if ran else frames[-1]
        return f"{func} ({_package(where)}; event loop, no project frame)"
    func, where = frames[mine[-1]]
    if mine[-1] == len(frames) - 1:
        return f"{func} ({where}), its own code"
    callee, callee_where = frames[mine[-1] + 1]
    return f"{func} ({where}) -> {callee} ({_package(callee_where)})"


def summarise(raw: Path, top: int = 10) -> list[str]:
    """Top hot spots (project call sites), leaf functions and packages, by GIL samples."""
    spots: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = _frames(stack)
        if not count_text.isdigit() or not frames:
            continue
        count = int(count_text)
        total += count
        spots[hot_spot(frames)] += count
        own[f"{frames[-1][0]} ({frames[-1][1]})"] += count
        packages[_package(frames[-1][1])] += count
    if total == 0:
        return ["py-spy: no samples"]

    def block(title: str, counts: Counter[str]) -> list[str]:
        rows = [f"  {n / total:6.1%}  {name}" for name, n in counts.most_common(top)]
        return [title, *rows]

    return [
        f"py-spy: {total} samples holding the GIL",
        *block(f"top {top} hot spots (project function -> what it called, inclusive):", spots),
        *block(f"top {top} leaf functions (own time):", own),
        *block(f"top {top} packages (own time):", packages),
    ]


if __name__ == "__main__":
    print("\n".join(summarise(Path(sys.argv[1]))))
