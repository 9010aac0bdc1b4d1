"""hystate seen from other code: the seed document's API, the first migration tool's state."""
