"""One case on the model's terms: the case and its preparation (:mod:`.case`), preprocessing presets
(:mod:`.presets`), node measurements (:mod:`.measure`) and node patches (:mod:`.patches`)."""
