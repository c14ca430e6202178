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
    """A ``GGROConfig`` field (or per-call override) has an invalid value."""


class PromptError(GGROError, ValueError):
    """The prompt is empty, malformed, or too long for the policy."""


class RewardModelError(GGROError, ValueError):
    """The reward model cannot score what it was asked to score."""


class VocabularyMismatchError(RewardModelError):
    """The reward model's tokenizer does not share the policy's vocabulary."""


class GenerationCancelled(GGROError):
    """The generation was cancelled (``GenerationStream.cancel()``, or an async caller that went away)."""
