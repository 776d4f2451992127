"""Running long work off the GUI thread, without Qt (see :class:`RunController`)."""

from .background import BackgroundRun
from .controller import RunBusyError, RunController, RunEnd, RunStatus

__all__ = ["BackgroundRun", "RunBusyError", "RunController", "RunEnd", "RunStatus"]
