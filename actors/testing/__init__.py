"""The kit for testing code that drives sessions: exact delivery, aimed faults, fixtures.

A test harness (one of the users this library is built for) wants three things:
a simulator it does not have to set up, a one-line check that a run delivered
exactly what the chain holds, and faults aimed at moments it can name (the 3rd
block, the 2nd continue) instead of slot numbers it would have to look up.
:func:`assert_exact` and :func:`delivery_of` are the check; the pytest plugin in
:mod:`actors.testing.pytest_plugin` (registered by entry point, so installing the
package is enough) gives the fixtures; :meth:`protocol.simulator.Faults.drop` and
its siblings take ``at_block=`` and ``at_continue=`` for the aim.
"""

from .delivery import Delivery, DeliveryMismatch, assert_exact, delivery_of

__all__ = ["Delivery", "DeliveryMismatch", "assert_exact", "delivery_of"]
