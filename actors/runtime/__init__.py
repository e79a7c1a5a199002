"""What the process shares under every session: sockets, threads and actor bases.

One WebSocket per connection (:mod:`.connection`), read by one reader thread for
the whole process (:mod:`.reader`); one timer thread for every delayed ``tell``
(:mod:`.timers`); the inbox every library actor uses (:mod:`.inbox`); the base
that turns a handler's bug into a report (:mod:`.failsafe`); and the gate that
bounds a reconnect storm across sessions (:mod:`.reconnect_gate`).
"""
