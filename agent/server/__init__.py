"""The bridge's HTTP side: the aiohttp application (voice webhook, media stream, health,
metrics) and the process settings."""
