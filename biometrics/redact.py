"""Credentials out of anything shown or logged: a camera URL (``rtsp://admin:pw@cam/``), a register URL
(``postgresql://user:pw@host/db``) or their parameters."""

from __future__ import annotations

import re

MASK = "***"
# The start of a URL's authority: scheme:// (the userinfo, if any, follows).
_SCHEME = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://")
# A URL that starts another in the same text: its scheme at the start of a line or after a space, a quote, a
# bracket or a separator (a password holding "x://" does not start one).
_NEXT_URL = re.compile(r"(?:^|(?<=[\s'\"(<\[{,;=]))[A-Za-z][A-Za-z0-9+.-]*://", re.MULTILINE)
# A userinfo written as the RFC has it: no space, /, ? or # (an unescaped @ is allowed: it runs to the last).
_PLAIN_USERINFO = re.compile(r"[^/?#\s]*")
# A user name followed by ":": what follows, up to the last @, is a password, whatever it holds.
_USER_THEN_PASSWORD = re.compile(r"[^:/?#\s]*:")
# Credentials passed as query or key=value parameters (?user=admin&pwd=secret, as many IP cameras take them).
_SECRET_PARAMETER = re.compile(
    r"(?P<key>\b(?:user(?:name)?|usr|login|pass(?:word|wd)?|pwd|token|access_token|api_?key|key|secret|auth"
    r"|signature|sig)=)(?P<value>[^&;#\s]+)", re.IGNORECASE)


def redact_url(text: str) -> str:
    """``text`` with the credentials of any URL in it masked: ``rtsp://admin:pw@cam/`` becomes
    ``rtsp://***@cam/``, and ``?user=admin&pwd=pw`` becomes ``?user=***&pwd=***``.

    A userinfo is everything from ``scheme://`` to the last ``@`` before the host (:func:`_userinfo_end`), so a
    password written raw is masked whole whatever it holds (``rtsp://admin:pa ss/?#@x@cam/``). Where the text
    is ambiguous (a URL without userinfo whose port is followed on its line by an ``@``) more is masked, never less.
    """
    parts, done = [], 0
    for scheme in _SCHEME.finditer(text):
        if scheme.start() < done:  # inside a userinfo masked already
            continue
        at = _userinfo_end(text, scheme.end())
        if at is not None:
            parts.append(f"{text[done:scheme.end()]}{MASK}")
            done = at
    text = "".join(parts) + text[done:]
    return _SECRET_PARAMETER.sub(lambda m: f"{m['key']}{MASK}", text)


def _userinfo_end(text: str, start: int) -> int | None:
    """The index of the ``@`` that ends the userinfo of the URL whose authority begins at ``start`` (just after
    ``scheme://``), or None when it has none.

    The userinfo runs to the last ``@`` on its line before the next URL, provided it is one: written as the RFC
    has it (no space, ``/``, ``?`` or ``#``: a host, a path or a query cannot come before it), or a user name
    and ``:`` followed by a password, which may hold anything (space, ``/``, ``?``, ``#``, ``@``). Otherwise the
    next ``@`` back is tried; a URL without userinfo (``rtsp://cam/s failed; mail ops@example.org``) has none.
    """
    line_end = text.find("\n", start)
    stop = len(text) if line_end < 0 else line_end
    following = _NEXT_URL.search(text, start, stop)
    if following is not None:
        stop = following.start()
    at = text.rfind("@", start, stop)
    while at >= 0:
        userinfo = text[start:at]
        if _PLAIN_USERINFO.fullmatch(userinfo) or _USER_THEN_PASSWORD.match(userinfo):
            return at
        at = text.rfind("@", start, at)
    return None


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
    # the password first: a copy of it quoted after the URL, @ and all, must not end the URL's userinfo in it
    for secret in sorted({password, unquote(password)} - {""}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return redact_url(text)
