"""One exception family. The CLI turns each into a one-line message with a hint."""

from __future__ import annotations

__all__ = [
    "FacemaskError",
    "ConfigError",
    "DataError",
    "ModelError",
    "ConversionError",
    "BudgetError",
    "DeviceError",
    "ProtocolError",
    "DeviceTimeout",
    "ModelMismatch",
    "EdgeImpulseError",
    "ToolMissing",
]


class FacemaskError(Exception):
    """Base of every error the toolkit reports to a user.

    Args:
        message: what went wrong, one line.
        hint: what to do about it, one line (optional).
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(FacemaskError):
    """An option value (command line, --config file, defaults.json) has the wrong type or value."""


class DataError(FacemaskError):
    """The data set is missing, empty, or laid out wrongly."""


class ModelError(FacemaskError):
    """A model or weights file cannot be built, loaded, or used as asked."""


class ConversionError(FacemaskError):
    """Conversion to int8 failed or produced something a board cannot run."""


class BudgetError(FacemaskError):
    """The model does not fit the board's memory budget."""

    exit_code = 3


class DeviceError(FacemaskError):
    """A port cannot be opened or a board misbehaves."""


class ProtocolError(DeviceError):
    """Bytes from the board do not follow the protocol."""


class DeviceTimeout(DeviceError):
    """The board did not answer in time."""


class ModelMismatch(DeviceError):
    """The board runs a different model from the run's."""


class EdgeImpulseError(FacemaskError):
    """The Edge Impulse API refused or failed a request."""


class ToolMissing(FacemaskError):
    """An external tool (arduino-cli, a compiler) is not installed."""
