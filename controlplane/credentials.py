"""The bearer tokens the plane accepts, and the principal each one acts as (in audit trails and task events).

`MESHPLANE_AUTH_TOKENS` entries are `name:token` (the caller acts as `client/<name>`) or a bare token (it acts as
`client/token:<first 12 hex digits of its SHA-256>`, a stable name that does not reveal it). Naming tokens lets an
operator tell callers apart in the audit trail without anyone reversing a hash of a short token.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
_RESERVED_NAMES = frozenset({"anonymous"})  # the principal of calls to a plane without tokens


@dataclass(frozen=True, slots=True)
class Credential:
    token: str
    name: str = ""  # given in the list, or none

    @property
    def principal(self) -> str:
        """Who the caller presenting `token` is: its name, else `principal_of(token)`."""
        return self.name or principal_of(self.token)


def principal_of(token: str) -> str:
    """The principal of a token given without a name: a stable, non-secret name for it."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def credential(entry: str) -> Credential:
    """An entry of the token list: `name:token` when what precedes the first colon is a name (a letter, then up to
    63 letters, digits, `.`, `_` or `-`), else a bare token (which may then hold colons itself)."""
    name, colon, token = entry.partition(":")
    if colon and _NAME.fullmatch(name):
        return Credential(token, name)
    return Credential(entry)


def credential_problems(entries: Sequence[str]) -> list[str]:
    """What is wrong with a token list (an empty named token, a reserved or repeated name, a repeated token)."""
    problems: list[str] = []
    names: set[str] = set()
    tokens: set[str] = set()
    for entry in entries:
        given = credential(entry)
        if given.name:
            if not given.token:
                problems.append(f"the token named {given.name} is empty")
            if given.name in _RESERVED_NAMES:
                problems.append(f"a token may not be named {given.name}")
            elif given.name in names:
                problems.append(f"two tokens are named {given.name}")
            names.add(given.name)
        if given.token and given.token in tokens:
            problems.append("a token is listed twice")
        tokens.add(given.token)
    return problems
