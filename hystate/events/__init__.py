"""The event stream: transitions read from the git history and published to Redis Streams."""
