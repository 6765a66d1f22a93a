"""The root of every exception virtbus raises, and the tree below it.

Every error is a libvirt error: a ``code`` (ErrorCode, libvirt's ``virErrorNumber``),
the ``detail`` that says why, and the ``message`` libvirt would print,
``<prefix>: <detail>``. Catching ``VirtbusError`` catches them all, as catching
libvirt-python's ``libvirtError`` does. Where callers may already catch a built-in
exception, the class keeps it as a second base (``except TimeoutError`` still works).

    VirtbusError                      schemas/errors.py: the root; any code
    ├── XmlError                      schemas/xmldoc.py: domain XML refused (XML_ERROR, …)
    ├── InvalidCommand (ValueError)   schemas/commands.py: a body that is not a command
    ├── VirtError                     agent/errors.py: a command failed on the agent;
    │   │                             answered on the wire as the reply's error
    │   └── Denied                    agent/host/policy.py: refused by the host policy
    ├── ReplyError                    agent/errors.py: an agent answered with an error
    │                                 (code, number and message as the agent sent them)
    ├── OperationTimeout (TimeoutError)
    │                                 agent/errors.py: no reply, or no event, in time
    ├── BrokerUnreachable (ConnectionError)
    │                                 agent/errors.py: the client cannot reach the broker
    ├── NotConnected (RuntimeError)   agent/errors.py: a call on a connection not open
    ├── NoHost (LookupError)          agent/errors.py: no queue for the host or group
    │                                 a command is sent to (NO_CONNECT)
    ├── BusUnavailable (ConnectionError)
    │                                 agent/host/bus.py: the agent's bus is reconnecting
    ├── Refused                       agent/signing.py: a command that failed
    │                                 authentication (AUTH_FAILED)
    ├── PolicyError (ValueError)      agent/host/policy.py: a policy file that cannot be used
    ├── StoreUnwritable               agent/host/store.py: the state directory cannot
    │                                 take a write (a full disk); never on the wire
    ├── ProvisionError                agent/admin/provision.py: the management API refused
    ├── XdrError (ValueError)         agent/gateway/xdr.py: bytes that are not the XDR
    │                                 expected
    ├── CallError                     agent/gateway/protocol.py: refused by the RPC
    │                                 layer (before login, …), in libvirt's words
    ├── SaslFailure                   agent/gateway/sasl.py: a SASL login that failed
    └── UsersFileError (ValueError)   agent/gateway/sasl.py: a users file that cannot
                                      be used

The root lives here, beside ErrorCode, because ``schemas`` imports nothing of ``agent``
and its own errors belong to the tree too.
"""

from __future__ import annotations

from schemas.codes import ErrorCode


class VirtbusError(Exception):
    """A libvirt error: ``code``, ``detail``, and ``message`` as libvirt words it.

    ``vir_error`` is the number on the wire (``int(code)``, unless a peer sent one this
    version does not know); ``host`` names the host the error came from, where one did.
    """

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail
        self.message = f"{code.prefix}: {detail}"
        self.vir_error = int(code)
        self.host: str | None = None

    @staticmethod
    def of(code: ErrorCode, detail: str, host: str | None = None) -> VirtbusError:
        """The error of ``code`` with ``detail``, from ``host`` if given."""
        error = VirtbusError(code, detail)
        error.host = host
        return error

    def __str__(self) -> str:
        return self.message

    def get_error_code(self) -> int:
        """libvirt-python's name for ``vir_error``."""
        return self.vir_error

    def get_error_message(self) -> str:
        """libvirt-python's name for ``message``."""
        return self.message
