"""The Gemini Live API leg: the sans-I/O protocol and its websockets adapter."""
