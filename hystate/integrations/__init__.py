"""hystate with other tools: orchestrators (``prefect``, ``airflow``) and the stage task they share
(``stage``)."""
