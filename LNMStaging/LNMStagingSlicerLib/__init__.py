"""The LNMStaging Slicer module's own helpers, one concern per file.

Kept in a package beside ``LNMStaging.py`` (not as loose files there): Slicer treats every ``.py`` file in a
module folder as a candidate module, not those in sub-folders.

- ``dependencies``: supported Slicer versions, the requirements file, what is missing (no qt).
- ``process``: the prediction child process (start, progress lines, cancel; no qt, no thread).
- ``parameters``: the parameter node class and the one rule for "can Predict run".
- ``scene_inputs`` / ``scene_outputs``: MRML to files for the child, and the child's files back to MRML.
- ``logic``: ``LNMStagingLogic``, which ties them together (headless: runs on slicer-core too).
"""
