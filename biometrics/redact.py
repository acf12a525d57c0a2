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


def url_password(url: str) -> str:
    """The password in ``url``'s userinfo (``scheme://user:password@host``), raw as written; "" if none. The
    userinfo runs to the last ``@`` (a password may hold an unescaped ``@``, ``/`` or space)."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    if "@" not in rest:
        return ""
    userinfo = rest.rsplit("@", 1)[0]
    return userinfo.split(":", 1)[1] if ":" in userinfo else ""


def redact_url_and_secret(text: str, url: str) -> str:
    """``text`` (a message about ``url``, a driver's error that may quote any part of it) with the credentials of
    any URL masked, and ``url``'s password masked wherever it appears, as written or percent-decoded. A password
    too short to be masked without garbling the message (under 4 characters) leaves only a generic text."""
    from urllib.parse import unquote

    password = url_password(url)
    if password and len(password) < 4:
        return "(the detail is left out: it would show the password)"
    text = redact_url(text)
    for secret in {password, unquote(password)} - {""}:
        text = text.replace(secret, MASK)
    return text
