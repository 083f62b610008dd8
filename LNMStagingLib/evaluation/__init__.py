"""Honest evaluation: patient-grouped stratified (nested) folds, metrics with intervals, calibration, plots."""
