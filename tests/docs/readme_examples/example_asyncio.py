# The README's asyncio example as users first copied it. Everything after these
# three lines is verbatim and must keep running unchanged, whatever the layout under actors/.
# ruff: noqa: I001
import asyncio
from actors import AsyncBacktestSession, ReadyForContinue, Transaction
from protocol import ContinueParams, CreateSession
from protocol.simulator import LocalSimulator

async def main(sim):
    first, _ = sim.available_range()
    async with await AsyncBacktestSession.start(sim.url, "local-dev-key",
                                                CreateSession(first, first + 50),
                                                timing=sim.timing) as session:
        session.subscribe_transactions(sim.addresses[:2])
        async for event in session:                  # ends after Completed
            if isinstance(event, ReadyForContinue):
                await session.send_continue(ContinueParams(advance_count=5))
            elif isinstance(event, Transaction):
                print(event.slot, event.signature[:12])

with LocalSimulator(seed=1) as sim:
    asyncio.run(main(sim))
