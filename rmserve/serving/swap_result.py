"""What a model version swap reports (``rmserve.server.swap``; the admin adapter answers it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SwapResult:
    model: str
    old_version: str
    new_version: str
    load_seconds: float  # reading, checking and warming up the new version
    drain_seconds: float  # from the switch until the old version was freed
