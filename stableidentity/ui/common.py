"""What every tab shares: the app context, user-facing errors, owners and identity pickers."""

from __future__ import annotations

import functools
import inspect
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from ..errors import InvalidInputError, StableIdentityError
from ..library import LOCAL_OWNER, IdentityLibrary
from ..manager import ModelManager


@dataclass
class AppContext:
    """Everything a tab needs: the model manager, the identity library and the app's mode."""

    manager: ModelManager
    library: IdentityLibrary
    public: bool  # share link or Spaces: each browser session is its own owner
    _stops: dict[str, threading.Event] = field(default_factory=dict)

    def owner(self, request: gr.Request | None) -> str:
        """Who is asking: one shared owner locally, the browser session in a public app."""
        if not self.public:
            return LOCAL_OWNER
        if request is None or not request.session_hash:
            raise gr.Error("No session: reload the page.")
        return "s" + request.session_hash

    def stop_event(self, owner: str) -> threading.Event:
        """The owner's cancel flag (the Cancel button sets it; a running job checks it)."""
        return self._stops.setdefault(owner, threading.Event())

    def cancel(self, request: gr.Request) -> str:
        """Stop the visitor's running job (learning or 3D) within one step."""
        self.stop_event(self.owner(request)).set()
        return "Cancelling…"

    def identity_choices(self, owner: str) -> list[tuple[str, str]]:
        return [(entry.label, entry.id) for entry in self.library.list(owner)]

    def picker_update(self, owner: str, selected: str | None = None) -> dict:
        """A Dropdown update listing the owner's identities, selecting ``selected`` or the newest."""
        choices = self.identity_choices(owner)
        ids = [value for _, value in choices]
        value = selected if selected in ids else (ids[0] if ids else None)
        return gr.update(choices=choices, value=value)


def user_errors(fn: Callable) -> Callable:
    """Show a StableIdentityError as a ``gr.Error`` (a message in the page, never a traceback)."""

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except StableIdentityError as error:
                raise gr.Error(str(error)) from None

        return generator

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except StableIdentityError as error:
            raise gr.Error(str(error)) from None

    return wrapper


class BackgroundJob:
    """Runs ``work(report, should_stop)`` in a thread so a Gradio generator can stream its progress.

    Iterate to receive lists of what ``work`` reported (every ``poll`` seconds while
    there is news); afterwards ``result`` holds its return value, or its exception is
    raised. Leaving the loop early (the request was cancelled) stops the work too.
    """

    def __init__(self, work: Callable[[Callable[[Any], None], Callable[[], bool]], Any], stop: threading.Event,
                 poll: float = 0.5):
        self.work, self.stop, self.poll = work, stop, poll
        self.result: Any = None

    def __iter__(self):
        updates: queue.Queue = queue.Queue()
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["result"] = self.work(updates.put, self.stop.is_set)
            except BaseException as error:  # noqa: BLE001 - re-raised in the request's thread below
                outcome["error"] = error

        self.stop.clear()
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            while worker.is_alive() or not updates.empty():
                worker.join(timeout=self.poll)
                news = []
                while not updates.empty():
                    news.append(updates.get())
                if news:
                    yield news
        finally:
            self.stop.set()  # done, failed or abandoned: the worker stops within one step
            worker.join()
        if "error" in outcome:
            raise outcome["error"]
        self.result = outcome["result"]


def check_range(name: str, value: Any, low: float, high: float, integer: bool = True) -> float:
    """Slider bounds enforced on the server: API calls can send anything."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number, got {value!r}") from None
    if integer and number != int(number):
        raise InvalidInputError(f"{name} must be a whole number, got {value!r}")
    if not low <= number <= high:
        raise InvalidInputError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return int(number) if integer else number
