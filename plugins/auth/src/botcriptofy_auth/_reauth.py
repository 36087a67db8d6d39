"""Fresh re-authentication before a sensitive action: the password again, and a TOTP code when two-factor is on."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from botcriptofy import Actor, Kernel

from . import _db, _totp
from ._models import User
from ._passwords import normalise_password
from ._state import state_of


async def reauthenticate(kernel: Kernel, actor: Actor, credentials: dict[str, Any]) -> bool | None:
    """True when ``credentials`` prove the logged-in person is at the keyboard; None for actors this plugin did not sign in."""
    if actor.attributes.get("auth") != "session" or actor.kind != "user":
        return None
    state = state_of(kernel)
    async with _db.system(kernel) as session:
        user = await session.get(User, actor.id)
        if user is None or user.status != "active":
            return False
        stored, totp_on, secret, last_step = user.password_hash, user.totp_enabled, user.totp_secret, user.totp_last_step
    matches, _ = await state.passwords.verify(stored, normalise_password(str(credentials.get("password", ""))))
    if not matches:
        return False
    if totp_on and secret:
        code = str(credentials.get("totp_code") or "")
        step = _totp.accept(state.cipher.decrypt(secret, context=_totp.totp_context(actor.id)), code, last_step=last_step) if code else None
        if step is None:
            return False
        async with _db.system(kernel, write=True) as session:
            await session.execute(sa.update(User).where(User.id == actor.id).values(totp_last_step=step))
    return True
