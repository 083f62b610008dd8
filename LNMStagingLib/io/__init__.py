"""Files in and out: images (:mod:`.image`), segmentations (:mod:`.segmentation`), the in-memory volume
(:mod:`.volume`), cohort manifests (:mod:`.cohort`), atomic writing (:mod:`.atomic`) and the machine-readable
progress lines of ``lnmstaging predict`` (:mod:`.progress_lines`)."""
