"""The sans-I/O audio core: G.711 mu-law codec, WAV helpers and the per-call streaming transcoders.

``codec`` converts between mu-law and PCM16 and reads/writes WAV files. ``transcoder`` turns
caller audio (8 kHz mu-law) into Live API input (16 kHz PCM16), and model output (24 kHz PCM16)
into 20 ms Twilio frames, with a few milliseconds of delay and no I/O. ``bench`` times them for
``agent bench``. Nothing here imports the rest of the project except :mod:`agent.errors`.
"""
