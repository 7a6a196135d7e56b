"""The Live API emulator: a sans-I/O core (:mod:`~agent.sim.live.core`), its aiohttp server
(:mod:`~agent.sim.live.server`) and scripted scenarios (:mod:`~agent.sim.live.scenario`)."""
