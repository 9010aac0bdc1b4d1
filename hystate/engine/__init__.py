"""Moving episodes: one transition, claims, leases, retries, discovery and the state directory's
layout, all on a ``Workspace``."""
