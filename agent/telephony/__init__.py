"""The telephony leg: Twilio's media-stream protocol (``twilio``), and the voice webhook's TwiML,
signatures and stream tokens (``webhooks``). Both are sans-I/O; the aiohttp handlers that use them
live in the app."""
