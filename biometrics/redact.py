"""Credentials out of anything shown or logged: a camera URL (``rtsp://admin:pw@cam/``), a register URL
(``postgresql://user:pw@host/db``) or their parameters."""

from __future__ import annotations

import re

MASK = "***"
# scheme://userinfo@ : everything up to the last @ before the host (a password may hold an unescaped @).
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*@)")
# Credentials passed as query or key=value parameters (?user=admin&pwd=secret, as many IP cameras take them).
_SECRET_PARAMETER = re.compile(
    r"(?P<key>\b(?:user(?:name)?|usr|login|pass(?:word|wd)?|pwd|token|access_token|api_?key|key|secret|auth"
    r"|signature|sig)=)(?P<value>[^&;#\s]+)", re.IGNORECASE)


def redact_url(text: str) -> str:
    """``text`` with the credentials of any URL in it masked: ``rtsp://admin:pw@cam/`` becomes
    ``rtsp://***@cam/``, and ``?user=admin&pwd=pw`` becomes ``?user=***&pwd=***``."""
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _SECRET_PARAMETER.sub(lambda m: f"{m['key']}{MASK}", text)
