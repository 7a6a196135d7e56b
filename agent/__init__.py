"""A telephony voice-agent bridge: Twilio Media Streams to the Gemini Live API."""

__version__ = "0.1.0"
