"""Whether a server can be reached now, decided in seconds: W&B and the Hugging Face Hub would otherwise retry
for minutes (or prompt) on a machine without a network."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

CONNECT_TIMEOUT_S = 3.0
"""How long the reachability check waits for a TCP connection."""


def reachable(server: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``server`` (a URL), or to the HTTPS proxy in the environment, opens within
    ``timeout`` seconds."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or server)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False
