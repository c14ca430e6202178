"""Exceptions raised by ggro_integrations.

Every error names the parameter at fault and how to fix it. They subclass the
built-in exception a caller would naturally catch (``ValueError`` for bad values,
``RuntimeError`` for load failures), so existing ``except ValueError`` code keeps
working.
"""

from __future__ import annotations


class GGROError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(GGROError, ValueError):
    """A ``GGROConfig`` field (or per-call override), or a loader option (``device``, ``dtype``), has an invalid value."""


class PromptError(GGROError, ValueError):
    """The prompt is empty, malformed, or too long for the policy."""


class RewardModelError(GGROError, ValueError):
    """The reward model cannot score what it was asked to score."""


class VocabularyMismatchError(RewardModelError):
    """The reward model's tokenizer does not share the policy's vocabulary."""


class GenerationCancelled(GGROError):
    """The generation was cancelled (``GenerationStream.cancel()``, or an async caller that went away)."""


class GrammarError(GGROError, ValueError):
    """A grammar, JSON schema or tool schema cannot be compiled for constrained decoding."""


class UnsupportedSchemaError(GrammarError):
    """A JSON schema uses a keyword the grammar engine cannot enforce.

    ``feature`` is the keyword (``"uniqueItems"``, ``"format"``...), ``path`` its JSON pointer in
    the schema (``""`` when it could not be located).
    """

    def __init__(self, message: str, *, feature: str, path: str = "") -> None:
        super().__init__(message)
        self.feature = feature
        self.path = path


class GrammarViolationError(GrammarError):
    """A token the grammar does not allow was fed to a constrained state (a decoder bug, not user input)."""


class PolicyLoadError(GGROError, RuntimeError):
    """``load_policy`` cannot produce a model/tokenizer pair.

    The message says what was tried and how to fix it (what to install, which path is
    missing, which directory is not writable, ...); the underlying exception, if any, is
    chained as ``__cause__``.
    """
