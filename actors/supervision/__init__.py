"""The actors of one session: the supervisor and the connection actors it restarts.

:class:`~.supervisor.SessionSupervisor` owns every retry decision and every
cursor; it starts a :class:`~.control.ControlActor` and one
:class:`~.subscription.SubscriptionActor` per stream, each built on
:class:`~.link_actor.LinkActor` (connect, handshake, keepalive, report, stop).
The rules the supervisor applies live in :mod:`actors.decisions`.
"""
