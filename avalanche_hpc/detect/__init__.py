"""Detection: every (season, orbit, date, corridor) of the store scored -> the avalanche activity product.

Modules (plain functions over paths; ``cli/detect.py`` parses and delegates):

- ``model``: the experiment's detector (CNN seeds of a split + baseline), checked against the
  store, thresholded on validation, precision chosen and measured -> ``model.json``;
- ``threshold``: the decision-threshold rule;
- ``scoring``: one task per (season, orbit, date) -> a part file (incremental, resumable);
- ``geopackage``, ``activity``: the product's layers and per-massif activity table;
- ``evaluation``: event-level POD/FAR against ``truth.csv``;
- ``publish``: parts -> ``detections.gpkg``, ``activity.csv``, ``evaluation.csv``, ``provenance.json``;
- ``run``: ``detect_all`` (score every selected date, then publish: the CLI command).

Outputs: ``STUDY/detections/{experiment}/`` (``Study.detection_paths``; docs/data-contract.md).
"""

from avalanche_hpc.detect.model import prepare_model
from avalanche_hpc.detect.publish import publication_is_current, publish_detections
from avalanche_hpc.detect.run import detect_all
from avalanche_hpc.detect.scoring import DetectSettings, detect_task, list_detect_tasks, task_is_current

__all__ = ["DetectSettings", "detect_all", "detect_task", "list_detect_tasks", "prepare_model",
           "publication_is_current", "publish_detections", "task_is_current"]
