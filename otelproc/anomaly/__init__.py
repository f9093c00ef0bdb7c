"""Streaming anomaly detection over log series: bucketing on event time, detector state, persistence.

The ``anomaly`` processor (otelproc/processors/anomaly.py) is a thin shell around
:class:`~otelproc.anomaly.engine.AnomalyEngine`; the numerical work is in
``otelproc/kernels/{series,detectors,trend}.py``.
"""
from otelproc.anomaly.engine import ANOMALY_COLUMNS, SERIES_COLUMNS, AnomalyEngine, EngineParams
from otelproc.anomaly.persist import load_state, save_state

__all__ = ["AnomalyEngine", "EngineParams", "ANOMALY_COLUMNS", "SERIES_COLUMNS", "load_state", "save_state"]
