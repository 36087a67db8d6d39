"""Small helpers: e-mail normalisation, the caller's address, time."""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from datetime import UTC, datetime

from starlette.requests import Request

_LOCAL = re.compile(r"^[^\s@\"(),:;<>\[\]\\]+$")
_LABEL = re.compile(r"^(?!-)[^\s@.\"(),:;<>\[\]\\_/]{1,63}(?<!-)$")


def now() -> datetime:
    return datetime.now(UTC)


def normalise_email(value: str) -> str:
    """Return the canonical form of an e-mail address: NFKC, trimmed, lower-case; raise ``ValueError`` if malformed.

    Two addresses that differ only in case or in Unicode compatibility forms (full-width
    letters, ligatures) are the same account.
    """
    email = unicodedata.normalize("NFKC", value).strip().lower()
    if len(email) > 254:
        raise ValueError("an e-mail address has at most 254 characters")
    if any(unicodedata.category(ch).startswith("C") for ch in email):
        raise ValueError("an e-mail address has no control or invisible characters")
    local, sep, domain = email.rpartition("@")
    if not sep or not local or not domain:
        raise ValueError("an e-mail address looks like name@example.com")
    if len(local) > 64 or not _LOCAL.match(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise ValueError("the part before '@' is not valid")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError("the domain after '@' is not valid")
    return email


@functools.lru_cache(maxsize=4096)
def _ascii_look_alike(char: str) -> str | None:
    """The ASCII character ``char`` is confusable with (Unicode TS #39 confusables data), if any."""
    from confusable_homoglyphs import confusables  # 16 MB of tables, loaded on the first non-ASCII address

    found = confusables.is_confusable(char, greedy=True) or []
    for entry in found:
        for glyph in entry["homoglyphs"]:
            if len(glyph["c"]) == 1 and glyph["c"].isascii():
                return str(glyph["c"])
    return None


def look_alike_problem(part: str) -> str | None:
    """Why ``part`` (a local part or a domain label) reads like another address; None when it does not.

    Refused: mixed scripts (Latin with Cyrillic or Greek, ...), and non-ASCII text whose TS #39
    skeleton is plain ASCII (a dotless i, U+0131, or a Cyrillic i, U+0456, imitating ``i``): it would read like an
    ASCII address that someone else may own.
    """
    if part.isascii():
        return None
    # Imported here: the Unicode tables take 16 MB of every worker's memory, and only a non-ASCII address needs them.
    from confusable_homoglyphs import categories, confusables

    if confusables.is_mixed_script(part):
        scripts = sorted({categories.alias(char) for char in part} - {"COMMON"})
        return f"mixes letters of different scripts ({' and '.join(scripts)})"
    skeleton = "".join(char if char.isascii() else (_ascii_look_alike(char) or char) for char in part)
    if skeleton.isascii():
        odd = next(char for char in part if not char.isascii())
        return f"contains '{odd}' ({unicodedata.name(odd, f'U+{ord(odd):04X}')}), which looks like '{_ascii_look_alike(odd)}'"
    return None


def check_look_alikes(email: str) -> str:
    """Raise ``ValueError`` when a new account's (normalised) address reads like another one (refused at sign-up)."""
    local, _, domain = email.rpartition("@")
    problem = look_alike_problem(local)
    if problem is not None:
        raise ValueError(f"the part before '@' {problem}; use the address exactly as your mail provider spells it")
    for label in domain.split("."):
        problem = look_alike_problem(label)
        if problem is not None:
            raise ValueError(f"the domain {problem}")
    return email


def client_ip(request: Request, trusted_proxies: list[str]) -> str | None:
    """The caller's address; ``X-Forwarded-For`` is believed only from a trusted proxy (its right-most untrusted hop)."""
    peer = request.client.host if request.client else None
    if not peer or not trusted_proxies:
        return _clean(peer)
    trusted = _networks(tuple(trusted_proxies))
    if not _in(peer, trusted):
        return _clean(peer)
    forwarded = request.headers.get("x-forwarded-for", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return _clean(hop)
    return _clean(peer)


_NETWORKS: dict[tuple[str, ...], list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}


def _networks(entries: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    found = _NETWORKS.get(entries)
    if found is None:
        found = []
        for entry in entries:
            try:
                found.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                continue
        _NETWORKS[entries] = found
    return found


def _in(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    return value[:64]


def user_agent(request: Request) -> str | None:
    agent = request.headers.get("user-agent")
    if not agent:
        return None
    return "".join(ch for ch in agent[:300] if ch.isprintable()) or None
