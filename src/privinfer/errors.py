"""User-facing errors: one clear sentence, never a secret, never a traceback unless --debug."""


class PrivinferError(Exception):
    """An error the user can cause and fix; its message is one sentence safe to print."""


class ModelLoadError(PrivinferError):
    """A model file is missing, truncated, corrupt or of an unsupported kind."""


class InputError(PrivinferError):
    """A request is malformed: empty prompt, too long for the context, bad parameter."""


class SecurityError(PrivinferError):
    """A check that protects a secret failed (attestation, channel, parameters)."""
