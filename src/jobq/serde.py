"""Payload codecs: JSON by default (orjson), msgpack optional, pickle only when opted into.

Every blob jobq stores is an encoded array (arguments as ``[args, kwargs]``, a result as
``[value]``), so the first byte tells the codec: ``[`` is JSON, ``0x9X`` a msgpack fixarray,
``0x80`` pickle. Workers therefore decode whatever a producer sent, while pickle, which can run
code on load, is refused unless this process enabled it (``JOBQ_ALLOW_PICKLE=1`` or
``Serializer("pickle")``).
"""

from __future__ import annotations

import pickle
from typing import Any

import orjson

from .errors import ConfigError, DecodeError, SerializationError

CODECS = ("json", "msgpack", "pickle")


class Serializer:
    """Encodes arguments and results with one codec; decodes any codec it is allowed to."""

    def __init__(self, codec: str = "json", allow_pickle: bool = False) -> None:
        if codec not in CODECS:
            raise ConfigError(f"unknown codec {codec!r}: choose one of {', '.join(CODECS)}")
        self.codec = codec
        self.allow_pickle = allow_pickle or codec == "pickle"
        if codec == "msgpack":
            _msgpack()  # fail at start-up, not at the first job

    def encode_args(self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> bytes:
        """Encode call arguments; on failure, name the argument that could not be encoded."""
        try:
            return self._dumps([list(args), kwargs])
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(_culprit(self._dumps, args, kwargs, exc)) from exc

    def decode_args(self, blob: bytes) -> tuple[list[Any], dict[str, Any]]:
        """Decode call arguments; raise DecodeError naming the problem if they are malformed."""
        data = self._loads(blob)
        if (
            not isinstance(data, list)
            or len(data) != 2
            or not isinstance(data[0], list)
            or not isinstance(data[1], dict)
        ):
            raise DecodeError("payload is not an [args, kwargs] pair")
        return data[0], data[1]

    def encode_result(self, value: Any) -> bytes:
        try:
            return self._dumps([value])
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"task result of type {type(value).__name__} cannot be encoded as "
                f"{self.codec}: {exc}"
            ) from exc

    def decode_result(self, blob: bytes) -> Any:
        data = self._loads(blob)
        if not isinstance(data, list) or len(data) != 1:
            raise DecodeError("result is not a one-element array")
        return data[0]

    def _dumps(self, value: Any) -> bytes:
        if self.codec == "json":
            return orjson.dumps(value)
        if self.codec == "msgpack":
            return bytes(_msgpack().packb(value, use_bin_type=True))
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def _loads(self, blob: bytes) -> Any:
        if not blob:
            raise DecodeError("empty payload")
        first = blob[0]
        try:
            if first in b"[{":
                return orjson.loads(blob)
            if 0x90 <= first <= 0x9F or first in (0xDC, 0xDD):
                return _msgpack().unpackb(blob, raw=False)
            if first == 0x80:
                if not self.allow_pickle:
                    raise DecodeError(
                        "pickle payload refused: pickle can run code on load; "
                        "opt in with JOBQ_ALLOW_PICKLE=1 if you trust every producer"
                    )
                return pickle.loads(blob)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"cannot decode payload ({type(exc).__name__}: {exc})") from exc
        raise DecodeError(f"unrecognised payload format (first byte 0x{first:02x})")


def _msgpack() -> Any:
    try:
        import msgpack
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "codec 'msgpack' needs the msgpack package: pip install jobq[msgpack]"
        ) from exc
    return msgpack


def _culprit(dumps: Any, args: Any, kwargs: dict[str, Any], exc: Exception) -> str:
    """Find the first argument that fails to encode, for an error message that names it."""
    for i, value in enumerate(args):
        try:
            dumps(value)
        except Exception:
            return f"argument {i} ({type(value).__name__}) cannot be serialised: {exc}"
    for name, value in kwargs.items():
        try:
            dumps(value)
        except Exception:
            return f"argument {name!r} ({type(value).__name__}) cannot be serialised: {exc}"
    return f"arguments cannot be serialised: {exc}"
