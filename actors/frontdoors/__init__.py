"""The ways into a session, all built on the same supervisor.

Blocking code (:mod:`.blocking`), asyncio (:mod:`.aio`), application actors
(:mod:`.listener`) and the reference's lower-level handles (:mod:`.handles`).
"""
