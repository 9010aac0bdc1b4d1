"""Checking state before it is trusted: ``validate``, ``validate --base`` and the merge driver."""
