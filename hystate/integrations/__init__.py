"""hystate seen from other code: the seed document's API, the first migration tool's state, and
the orchestrators (``prefect``, ``airflow``) with the stage task they share (``stage``)."""
