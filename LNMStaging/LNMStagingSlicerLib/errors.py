"""The module's errors meant for the user: each message is one sentence, shown in the panel as it is."""


class ModuleError(Exception):
    """Base of every error the module shows as one sentence (no traceback)."""


class SceneInputError(ModuleError):
    """An input node the prediction cannot use."""


class OutputError(ModuleError):
    """The prediction's output files cannot be shown (missing or inconsistent)."""


class PredictionFailed(ModuleError):
    """The prediction child process failed; the message is the child's own one-line error."""


class PredictionCancelled(ModuleError):
    """The user cancelled the prediction (nothing was added to the scene)."""
