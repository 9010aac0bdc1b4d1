"""Several machines, one state: ``sync``, the replay of unpublished commits, lease tables and
claims through a shared remote."""
