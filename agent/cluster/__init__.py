"""What replicas of the bridge share so that any of them can serve any call.

A media stream may land on a different replica (or worker process) than the voice webhook that
announced it. The webhook's facts travel signed in the stream's ticket
(:class:`~agent.telephony.webhooks.StreamTicket`); what must be *remembered* across replicas (which
tickets were used, so each works once) lives in :mod:`agent.cluster.state`.
"""
