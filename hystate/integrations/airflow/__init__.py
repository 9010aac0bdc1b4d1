"""Airflow 3 runs the migration on hystate (``pip install 'hystate[airflow]'``; docs/airflow.md).

Laid out as an Airflow provider's parts: ``hooks`` (``HystateHook``: a manager whose
transitions carry the DAG run, task and map index), ``operators`` (``HystatePlanOperator``,
``HystateStageOperator``), ``sensors`` (``HystateStageSensor``, deferrable), ``triggers``
(``HystateStageTrigger``), and ``dags`` (``migration_dag``, the pools of the stage limits).
"""

from hystate.integrations.airflow.dags import ensure_pools, migration_dag, pool_name, pools
from hystate.integrations.airflow.hooks import HystateHook, run_ids
from hystate.integrations.airflow.operators import HystatePlanOperator, HystateStageOperator
from hystate.integrations.airflow.sensors import HystateStageSensor
from hystate.integrations.airflow.triggers import HystateStageTrigger

__all__ = [
    "HystateHook",
    "HystatePlanOperator",
    "HystateStageOperator",
    "HystateStageSensor",
    "HystateStageTrigger",
    "ensure_pools",
    "migration_dag",
    "pool_name",
    "pools",
    "run_ids",
]
