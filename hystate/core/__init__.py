"""The episode and everything about it that needs no git: its model and transition rules, schema
validation, YAML, the episode files on disk, paths, errors, configuration and locks."""
