"""LNMStaging library: all science of the LNMStaging 3D Slicer extension (no slicer/qt imports here).

Research use only: not a medical device.

Layers, each importing only the ones above it in this list (checked by Testing/Python/test_import_layers.py):

* `errors`, `fromdict`, `clinical`: the user-facing errors, the strict JSON-to-dataclass reader, the one
  clinical encoder;
* `io`: images, segmentations, volumes, cohort manifests, atomic writing, progress lines;
* `imaging`: a case and its preparation (presets), node measurements, node patches;
* `synthetic`: the phantom case and a small synthetic cohort;
* `models`: VAEs, the multiple-instance classifier, the CNN baseline, ensemble members and the `Ensemble`;
* `bundle`: the model bundle's file format, typed config (with its JSON Schema), discovery and loading;
* `data`: the patch data set, LIDC-layout folders and cohorts, bags, splits, predictions over a data set;
* `training`: the learning pipeline, its recipes, the threshold choice, bundling, the `lnmstaging train` stages;
* `prediction`: one case's staged prediction (prepare, infer, explain, assemble), its reports, clusters;
* `evaluation`: metrics, evaluation of a bundle, the nested benchmark, the shipped LIDC bundle's recipe;
* `cli`: the `lnmstaging` command line (`cli.main` and one module per command group).

Conventions: numpy arrays are ``(k, j, i)`` = (slice, row, column), the order of
``SimpleITK.GetArrayFromImage`` and Slicer's ``arrayFromVolume``; physical coordinates are LPS (ITK/DICOM);
an axial slice is ``array[k]`` after the case is put in canonical LPS orientation.
"""

__version__ = "0.1.0"
