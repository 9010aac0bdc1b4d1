"""Message brokers the event stream is published to (``hystate.events``)."""
