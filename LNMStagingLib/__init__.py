"""LNMStaging library: all science of the LNMStaging 3D Slicer extension (no slicer/qt imports here).

Research use only: not a medical device.
"""

__version__ = "0.1.0"
