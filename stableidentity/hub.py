"""Is the model hub reachable? Decided in seconds, so offline machines never hang.

``from_pretrained`` on an unreachable hub retries for about half a minute and then
reports a misleading "file not found". We probe once instead and, when the hub is
off or out of reach, load from the local cache only.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse


def offline_requested() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@functools.lru_cache(maxsize=None)
def _reachable(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``) accepts a connection; cached per process."""
    if offline_requested():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return _reachable(url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80), timeout)


def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether ``host:port`` accepts a connection (never when offline mode is asked for)."""
    return not offline_requested() and _reachable(host, port, timeout)
