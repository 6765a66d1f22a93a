"""The authentication procedures. A client that must authenticate gets no other
procedure answered until it has: VIR_ERR_RPC "authentication required", as libvirtd
(``Session.require_login``, ``acl.BEFORE_AUTH``).

As libvirtd: every failed login, a call out of order included, gets VIR_ERR_AUTH_FAILED
"authentication failed" and nothing more, so a client learns neither whether the user
exists nor what was wrong. The gateway's log says what was wrong (never a secret), and a
connection is closed after ``MAX_FAILURES`` failed logins.
"""

from __future__ import annotations

import logging
from enum import IntEnum

from agent.gateway.identity import Identity
from agent.gateway.procedures import Session, handles, string
from agent.gateway.protocol import STRING_MAX, CallError, Proc
from agent.gateway.sasl import MAX_FAILURES, Challenge, SaslFailure, SaslLogin
from agent.gateway.xdr import Packer, Unpacker
from schemas.codes import ErrorCode

log = logging.getLogger(__name__)
SASL_DATA_MAX = 65536  # REMOTE_AUTH_SASL_DATA_MAX


class AuthType(IntEnum):
    """``remote_auth_type``."""

    NONE = 0
    SASL = 1


def auth_failed(close: bool = False) -> CallError:
    return CallError(
        ErrorCode.AUTH_FAILED, f"{ErrorCode.AUTH_FAILED.prefix}: authentication failed", close=close
    )


@handles(Proc.AUTH_LIST)
async def auth_list(session: Session, args: Unpacker) -> bytes:
    packer = Packer()
    packer.array([AuthType.SASL if session.needs_login else AuthType.NONE], packer.int32)
    return packer.data()


@handles(Proc.AUTH_SASL_INIT)
async def sasl_init(session: Session, args: Unpacker) -> bytes:
    login = _login(session)
    try:
        return string(login.init())
    except SaslFailure as failure:
        raise _refused(session, login, failure) from None


@handles(Proc.AUTH_SASL_START)
async def sasl_start(session: Session, args: Unpacker) -> bytes:
    mechanism = args.string(STRING_MAX)
    data = _sasl_data(args)
    login = _login(session)
    try:
        return _challenge(session, login, login.start(mechanism, data))
    except SaslFailure as failure:
        raise _refused(session, login, failure) from None


@handles(Proc.AUTH_SASL_STEP)
async def sasl_step(session: Session, args: Unpacker) -> bytes:
    data = _sasl_data(args)
    login = _login(session)
    try:
        return _challenge(session, login, login.step(data))
    except SaslFailure as failure:
        raise _refused(session, login, failure) from None


@handles(Proc.AUTH_POLKIT)
async def polkit(session: Session, args: Unpacker) -> bytes:
    """The gateway has no polkit: libvirtd refuses this call on any other auth type."""
    log.warning("client %s tried polkit, which the gateway has not", session.identity)
    raise auth_failed()


def _sasl_data(args: Unpacker) -> bytes | None:
    """``int nil; char data<>``: SASL keeps no data (nil) apart from empty data. Every
    argument is read before the login moves."""
    nil = args.int32()
    data = args.char_bytes(SASL_DATA_MAX)
    args.done()
    return None if nil else data


def _login(session: Session) -> SaslLogin:
    if session.sasl is None:
        log.warning("client %s tried SASL, which this gateway does not ask for", session.identity)
        raise auth_failed()
    return session.sasl


def _challenge(session: Session, login: SaslLogin, challenge: Challenge) -> bytes:
    if challenge.complete:
        assert login.username is not None
        before = session.identity
        session.login(Identity("sasl", login.username))
        log.info("client %s authenticated as %s", before, session.identity)
    packer = Packer()
    packer.int32(challenge.complete)
    packer.int32(challenge.data is None)
    packer.char_bytes(challenge.data or b"")
    return packer.data()


def _refused(session: Session, login: SaslLogin, failure: SaslFailure) -> CallError:
    user = f" as {failure.username}" if failure.username is not None else ""
    closing = login.exhausted
    log.warning(
        "client %s failed SASL authentication%s: %s (failure %d of %d%s)",
        session.identity,
        user,
        failure,
        login.failures,
        MAX_FAILURES,
        ", closing the connection" if closing else "",
    )
    return auth_failed(close=closing)
