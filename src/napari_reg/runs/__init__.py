"""Running long work off the GUI thread, without Qt (see :class:`RunController`)."""

from .background import BackgroundRun
from .controller import RunBusyError, RunController, RunEnd, RunStatus
from .process import ProcessRun, warm_up

__all__ = ["BackgroundRun", "ProcessRun", "RunBusyError", "RunController", "RunEnd", "RunStatus",
           "warm_up"]
