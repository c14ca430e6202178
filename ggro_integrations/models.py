"""Policy loading: the names this module has always exported, now living in smaller modules.

``load_policy`` and its cache are in ``policies.py``; the embedded default (paths, GGUF
conversion, checkpoint hashes) in the ``default_model`` package; ``PolicyLoadError`` in
``errors.py``. Import from here or from there: both keep working.
"""

from __future__ import annotations

from .default_model.checkpoint import is_complete
from .default_model.convert import SMOLLM2_CHAT_TEMPLATE, convert_gguf_policy
from .default_model.paths import DEFAULT_POLICY_ID, default_policy_dir, find_packaged_gguf, ggro_home
from .errors import PolicyLoadError
from .policies import PolicySpec, clear_policy_cache, load_policy, policy_display_name, policy_load_count

# The old private names, still used by tests and scripts.
_find_packaged_gguf = find_packaged_gguf
_is_complete = is_complete

__all__ = [
    "DEFAULT_POLICY_ID",
    "PolicyLoadError",
    "PolicySpec",
    "SMOLLM2_CHAT_TEMPLATE",
    "clear_policy_cache",
    "convert_gguf_policy",
    "default_policy_dir",
    "ggro_home",
    "load_policy",
    "policy_display_name",
    "policy_load_count",
]
