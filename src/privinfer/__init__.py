"""privinfer: private LLM inference over one model definition (plain, tee, mpc, he)."""

from privinfer.errors import PrivinferError

__version__ = "0.1.0"

__all__ = ["PrivinferError", "__version__", "load"]


def load(name_or_path: str, **kwargs):  # noqa: ANN201 - re-exported from api
    """Load a named model (see `privinfer models`) or a local GGUF file / HF folder."""
    from privinfer.api import load as _load

    return _load(name_or_path, **kwargs)
