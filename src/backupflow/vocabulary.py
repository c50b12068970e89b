"""Whose words a message uses for an option: the CLI's flags or the flows' parameters.

Messages deep in the core (an engine refusing an existing target, a file set refusing a
folder that is not empty) name an option, and must name it as the caller gave it: a CLI flag
(``--replace``) from the command line, a flow parameter (``replace=true``) from a deployment
run.  :data:`vocabulary` says which; the CLI sets it to ``"cli"`` around the flows it runs
(:func:`use_vocabulary`), and :func:`flag` spells an option in it.

A leaf: it imports nothing from backupflow, so the engines and the planners can use it
without importing the parameter checks (which import the settings and the targets).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

__all__ = ["Vocabulary", "flag", "use_vocabulary", "vocabulary"]

Vocabulary = Literal["cli", "flow"]
#: Whose words a message uses for an option: the CLI's flags or the flows' parameters.
vocabulary: ContextVar[Vocabulary] = ContextVar("backupflow_vocabulary", default="flow")

_SPELLINGS: dict[str, tuple[str, str]] = {
    # option: (CLI flag, flow parameter)
    "replace": ("--replace", "replace=true"),
    "into": ("--into", "the into parameter"),
    "latest": ("--latest", "target_time=None"),
    "in_place": ("--in-place", "in_place=true"),
    "accept_earlier": ("--accept-earlier", "accept_earlier=true"),
}


def flag(option: str) -> str:
    """``option`` (replace, into, latest, in_place, accept_earlier) as the caller gives
    it: ``--replace`` from the CLI, ``replace=true`` from a flow run."""
    cli, parameter = _SPELLINGS[option]
    return cli if vocabulary.get() == "cli" else parameter


@contextmanager
def use_vocabulary(words: Vocabulary) -> Iterator[None]:
    """Messages raised inside name options in ``words``."""
    token = vocabulary.set(words)
    try:
        yield
    finally:
        vocabulary.reset(token)
