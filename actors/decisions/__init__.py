"""The session's decisions, as plain classes: no pykka, no sockets, no threads, no futures.

Each class takes plain data and returns (or records) a decision; the supervisor
that owns it carries the decision out (starts an actor, tells a link, answers a
request). That keeps every rule of a session testable with a few lines of
Python and no network: when a continue may go (:mod:`.pacer`), what the
application gets and in what order (:mod:`.outbox`), where a resume starts
(:mod:`.cursor`), which connection generation is live and when to restart it
(:mod:`.children`), who may restart during a reconnect storm (:mod:`.permits`)
and which subscriptions a session has (:mod:`.streams`).
"""
