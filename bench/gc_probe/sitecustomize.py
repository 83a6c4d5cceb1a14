"""Loaded at start by a relay the throughput benchmark runs with `--gc-pauses` (this
directory leads its PYTHONPATH): logs every full (generation 2) garbage collection to the
file $BENCH_GC_LOG, one line each: CLOCK_MONOTONIC seconds at its end, pause in ms.

A full collection stops the event loop and every connection with it; how long, and how
often, is what the benchmark reports. Not part of the relay: only the benchmark puts it
on a path."""

from __future__ import annotations

import gc
import os
import time
from typing import Any


def _install(path: str) -> None:
    log = open(path, "a", buffering=1)  # open for the process's life
    started = [0.0]

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        now = time.monotonic()
        if phase == "start":
            started[0] = now
        else:
            log.write(f"{now:.6f} {(now - started[0]) * 1000:.3f}\n")

    gc.callbacks.append(on_collection)


if os.environ.get("BENCH_GC_LOG"):
    _install(os.environ["BENCH_GC_LOG"])
