"""DeepSpeed's own verdict on a config's ``deepspeed`` section, before any heavy work.

DeepSpeed validates most of its sections with pydantic models that refuse unknown keys, but it
reads the others (and the top level) key by key and silently ignores a key it does not know: a
misspelt one would change nothing. So the section is handed to ``DeepSpeedConfig`` (cheap: no
process group, no model) in a dict that records every key DeepSpeed looks up; a key it never
looked up, in a dict it did read key by key, is one it does not know. Either problem is one
ConfigError line naming the key, instead of a pydantic traceback or nothing at all.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

from pixelbert.config import Config, ConfigError, did_you_mean

__all__ = ["check_deepspeed_config"]


class _Reads:
    """What DeepSpeed looked up: key paths, the dicts it read key by key, the last dict it touched."""

    def __init__(self):
        self.keys: set[tuple] = set()
        self.dicts: set[tuple] = set()
        self.last: tuple = ()


class _Recording(dict):
    """A dict (its dict values too) that records each key looked up into a shared ``_Reads``."""

    def __init__(self, data: dict, reads: _Reads, path: tuple = ()):
        super().__init__({k: _Recording(v, reads, path + (k,)) if isinstance(v, dict) else v for k, v in data.items()})
        self._reads, self._path = reads, path

    def _read(self, *keys) -> None:
        self._reads.keys.update(self._path + (k,) for k in keys)
        self._reads.dicts.add(self._path)
        self._reads.last = self._path

    def get(self, key, default=None):
        self._read(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self._read(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        self._read(key)
        return super().__contains__(key)

    # Whoever lists the keys (``**section`` into a pydantic model, a copy) takes them all;
    # ``key in section.keys()`` looks up one.
    def __iter__(self) -> Iterator:
        self._read(*dict.keys(self))
        return super().__iter__()

    def keys(self) -> "_Keys":
        return _Keys(self)

    def items(self):
        self._read(*dict.keys(self))
        return super().items()

    def values(self):
        self._read(*dict.keys(self))
        return super().values()

    def __copy__(self) -> "_Recording":
        clone = dict.__new__(_Recording)
        dict.update(clone, dict.items(self))
        clone._reads, clone._path = self._reads, self._path
        return clone


class _Keys:
    """``_Recording.keys()``: membership looks up one key, iteration lists them all."""

    def __init__(self, owner: _Recording):
        self._owner = owner

    def __contains__(self, key) -> bool:
        return key in self._owner

    def __iter__(self) -> Iterator:
        return iter(self._owner)

    def __len__(self) -> int:
        return len(self._owner)


def _paths(section: dict, prefix: tuple = ()) -> Iterator[tuple]:
    for key, value in section.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from _paths(value, prefix + (key,))


def _dotted(path: tuple) -> str:
    return "deepspeed" + "".join(f".{k}" for k in path)


def check_deepspeed_config(config: Config, micro_batch: int, accumulation: int) -> None:
    """Raise ConfigError (one line naming the key) unless DeepSpeed knows and accepts every key of
    ``config.deepspeed``; the batch keys pixelbert adds (``micro_batch`` x ``accumulation``) go with it."""
    import deepspeed
    import pydantic
    from deepspeed.runtime.config import DeepSpeedConfig, DeepSpeedConfigError

    src, version = config.source, f"DeepSpeed {deepspeed.__version__}"
    probe: dict[str, Any] = {**config.deepspeed, "train_micro_batch_size_per_gpu": micro_batch,
                             "gradient_accumulation_steps": accumulation, "zero_allow_untested_optimizer": True}
    reads = _Reads()
    log = logging.getLogger("DeepSpeed")
    level = log.level
    log.setLevel(logging.WARNING)  # DeepSpeedConfig reports its world size at INFO
    try:
        DeepSpeedConfig(_Recording(probe, reads))
    except pydantic.ValidationError as e:
        error = e.errors()[0]
        # The error's location is inside the section DeepSpeed handed the model: the dict it read last.
        key = _dotted(reads.last + tuple(error["loc"]))
        if error["type"] == "extra_forbidden":
            raise ConfigError(f"{src}: unknown key '{key}' ({version}'s {e.title} has no such field)") from None
        raise ConfigError(f"{src}: '{key}': {error['msg']}, got {error.get('input')!r} ({version})") from None
    except (AssertionError, KeyError, TypeError, ValueError, DeepSpeedConfigError) as e:
        raise ConfigError(f"{src}: section 'deepspeed' refused by {version}: {' '.join(str(e).split())}") from None
    finally:
        log.setLevel(level)
    for path in _paths(config.deepspeed):
        parent = path[:-1]
        if path not in reads.keys and parent in reads.dicts:
            known = sorted({str(k[-1]) for k in reads.keys if k[:-1] == parent})
            hint = did_you_mean(path[-1], known, _dotted(parent) + ".")
            raise ConfigError(f"{src}: unknown key '{_dotted(path)}' "
                              f"({version}'s DeepSpeedConfig does not read it; {hint})")
