"""Installed library versions, which enter stage keys and manifests."""

from __future__ import annotations

import sys
from importlib import metadata


def versions(*distributions: str) -> dict[str, str]:
    """Installed versions of the named distributions (never imports them: stays fast)."""
    found = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name in distributions:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found
