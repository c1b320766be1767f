"""The check the loss configs (logits KD, feature KD) run on their string options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def check_choices(section: str, config: object, table: Mapping[str, Sequence[str]]) -> None:
    """Refuse a string option outside its set, naming the config key.

    Each option picks a code branch by string comparison, so a typo would otherwise fall through to some
    default branch and train the wrong method silently; the message is the one line a user sees.
    """
    for name, choices in table.items():
        value = getattr(config, name)
        if value not in choices:
            raise ValueError(f"{section}.{name} must be one of {choices}, got {value!r}")
