"""Credentials out of everything the tool prints or logs: the one helper (issue 17, item 10).

A URL may carry a secret in two places: its user-info
(``http://admin:S3CRETpw@influx:8086``) and its query string
(``...?token=...``, InfluxDB 1.x's ``u=``/``p=``). ``redact_url`` masks both
and keeps what an admin needs to recognise the URL (scheme, user name, host,
port, path); ``redact_text`` does the same to every URL inside a message (an
error text, a log line). ``RedactingFilter`` applies ``redact_text`` to every
log record, so a URL nobody thought of is still masked on its way out.

Connections keep using the real URL; only what is shown is masked.
"""

from __future__ import annotations

import logging
import re

MASK = "***"
# Query parameters whose value is a credential (lower case).
SECRET_PARAMS = frozenset({"p", "password", "pass", "pwd", "token", "auth", "auth-token", "authorization",
                           "api_key", "apikey", "api-key", "key", "secret", "access_token", "sig", "signature"})
# scheme://[userinfo@]rest-of-URL, up to whitespace or a quote or bracket that ends it in running text.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
# name=value of a secret query parameter (the value ends at &, ; or #).
_SECRET_QUERY = re.compile(r"([?&;])(" + "|".join(re.escape(p) for p in sorted(SECRET_PARAMS)) + r")=[^&;#]*",
                           re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with its password (or lone user-info token) and secret query values masked.

    Works on the text, not through a URL parser, so a password with an
    unescaped ``/`` or ``@`` in it (which a parser would take for the path) is
    still masked: everything before the last ``@`` ahead of the query is
    user-info.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = min([i for i in (rest.find("?"), rest.find("#")) if i >= 0], default=len(rest))
    head, tail = rest[:cut], rest[cut:]
    if "@" in head:
        userinfo, _, host = head.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        # A user without a password may itself be the token (https://TOKEN@host).
        head = f"{user}:{MASK}@{host}" if has_password else f"{MASK}@{host}"
    return scheme + sep + head + _SECRET_QUERY.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}", tail)


def redact_text(text: str) -> str:
    """Every URL in ``text`` passed through ``redact_url`` (text without a URL is returned as is)."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials in URLs of every record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a ``RedactingFilter`` to every handler of ``logger`` (the root logger by default), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
