"""How a station's background shippers (its audit records, its decision events) report their failures."""

from __future__ import annotations

import logging

from biometrics.errors import RegisterUnavailable


class ShippingFailures:
    """Failures of one background shipper into the register: the register out of reach (a transient that the
    journal rides out) at DEBUG; anything else (a forked chain: another process writing under the station's
    name; a refused login; a register migrated past this station's version) at ERROR, once per distinct
    failure rather than at every retry, and its end at INFO. ``what`` names what is shipped, ``log`` the logger
    of the shipper's module."""

    def __init__(self, station: str, what: str, log: logging.Logger) -> None:
        self.station = station
        self.what = what
        self.log = log
        self.last = ""  # the failure last logged at ERROR ("" none since the last success)

    def failed(self, exc: Exception) -> None:
        """One shipping attempt raised ``exc``."""
        if isinstance(exc, RegisterUnavailable | ConnectionError | TimeoutError):
            self.log.debug("%s: shipping deferred, the register is out of reach (%s)", self.what, exc)
            return
        failure = f"{type(exc).__name__}: {exc}"
        if failure == self.last:
            self.log.debug("%s: shipping still failing (%s)", self.what, failure)
            return
        self.last = failure
        self.log.error("station %r cannot ship its %s to the register, they stay in its journal (%s); retried, and "
                       "logged again only if the failure changes", self.station, self.what, failure)

    def shipped(self) -> None:
        """A shipping attempt went through."""
        if self.last:
            self.log.info("station %r ships its %s to the register again", self.station, self.what)
            self.last = ""
