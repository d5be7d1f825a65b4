"""read_mlflow_run.py: prints, as JSON, runs as MLflow's own Python client reads them back from the
tracking server: {run_id: {status, name, experiment, params, tags, each metric's history}}.
Used by mlflow_peer_test to check what the MLflow sink sent over the REST API."""
import json
import math
import sys

from mlflow.tracking import MlflowClient


def read_run(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    metrics = {}
    for key in run.data.metrics:
        history = sorted(client.get_metric_history(run_id, key), key=lambda metric: metric.step)
        # JSON has no NaN: spell it as a string so that the C++ side can see it arrived as NaN.
        metrics[key] = [[m.step, "NaN" if math.isnan(m.value) else m.value, m.timestamp] for m in history]
    experiment = client.get_experiment(run.info.experiment_id)
    return {
        "status": run.info.status,
        "run_name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "experiment_name": experiment.name,
        "end_time": run.info.end_time,
        "params": run.data.params,
        "tags": run.data.tags,
        "metrics": metrics,
    }


def main() -> None:
    client = MlflowClient(tracking_uri=sys.argv[1])
    print(json.dumps({run_id: read_run(client, run_id) for run_id in sys.argv[2:]}))


if __name__ == "__main__":
    main()
