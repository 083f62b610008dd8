"""The ``lnmstaging`` command line: :mod:`.main` (the parser and the error handling) and one module per
command group (:mod:`.case`, :mod:`.learning`, :mod:`.prediction`)."""
