"""One phone call: the session that joins a media stream to a Live session."""
