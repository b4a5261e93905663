"""JSON documents for the values the stores keep.

Rule 1: ``decode(type(x), encode(x)) == x`` for every storable value, and the encoded form
        survives ``json.dumps``/``json.loads`` unchanged (tests/property/test_codec.py).
Rule 2: the encoding follows the dataclasses' type hints, so a field added to a core value is
        stored without touching this module. A field with a default may be absent from an
        older document (it decodes to the default); an unknown key raises CodecError rather
        than being dropped.
Rule 3: enums by value, ``Address`` as ``local@domain``, tuples as lists, frozensets as
        sorted lists, bytes as base64, and a union of dataclasses (``MessageRecord.state``)
        as ``{"type": <class name>, "value": {...}}``.
Rule 4: free-form documents (fields typed ``object``: event data, audit metadata, idempotent
        response bodies) must already be JSON: str keys, finite floats, lists rather than
        tuples. Anything else raises CodecError instead of coming back changed.
Rule 5: decoding builds values through their constructors, so the core's invariants check
        every document that is read back.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import functools
import json
import math
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias, TypeVar

import icontract

from multimail_core.addresses import Address

JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None
T = TypeVar("T")

Encoder = Callable[[Any], JSON]
Decoder = Callable[[JSON], Any]

_NONE = type(None)


class CodecError(ValueError):
    """A value that has no JSON form here, or a document that is not a stored value."""


# --- public API -------------------------------------------------------------------------


def encode(value: object) -> JSON:
    """The JSON-ready form of a storable value (a dataclass instance or an Address)."""
    return _encoder(typing.cast(Any, type(value)))(value)


def decode(cls: type[T], data: JSON) -> T:
    """The value of type ``cls`` that ``data`` encodes.

    :raises CodecError: when ``data`` is not an encoding of a ``cls`` value.
    """
    return typing.cast(T, _decoder(typing.cast(Any, cls))(data))


def dumps(value: object) -> str:
    """Compact, strict JSON text (ASCII, no NaN or infinity) for a storable value."""
    return json.dumps(encode(value), separators=(",", ":"), allow_nan=False)


def loads(cls: type[T], text: str | bytes) -> T:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CodecError(f"not JSON: {exc}") from exc
    return decode(cls, data)


# --- free-form JSON ---------------------------------------------------------------------


def check_json(value: object, path: str = "$") -> JSON:
    """``value`` itself if it is plain JSON that round-trips exactly, else CodecError."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CodecError(f"{path}: {value!r} has no JSON form")
        return value
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_json(item, f"{path}[{i}]")
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CodecError(f"{path}: key {key!r} is not a string")
            check_json(item, f"{path}.{key}")
        return value
    raise CodecError(f"{path}: {type(value).__name__} is not JSON (use lists, str-keyed dicts)")


# --- compiled encoders ------------------------------------------------------------------


def _is_dataclass_type(tp: object) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, resolved type hint, has a default) for every field of a dataclass."""
    hints = typing.get_type_hints(cls)
    return tuple(
        (
            f.name,
            hints[f.name],
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    )


def _union_members(tp: object) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _scalar_encoder(tp: type) -> Encoder:
    def enc(value: Any) -> JSON:
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise CodecError(f"expected {tp.__name__}, got {type(value).__name__}")
        if tp is float and not math.isfinite(typing.cast(float, value)):
            raise CodecError(f"{value!r} has no JSON form")
        return typing.cast(JSON, value)

    return enc


def _encode_bytes(value: Any) -> JSON:
    if not isinstance(value, bytes):
        raise CodecError(f"expected bytes, got {type(value).__name__}")
    return base64.b64encode(value).decode("ascii")


def _encode_address(value: Any) -> JSON:
    if not isinstance(value, Address):
        raise CodecError(f"expected Address, got {type(value).__name__}")
    return str(value)


def _enum_encoder(tp: type[enum.Enum]) -> Encoder:
    def enc(value: Any) -> JSON:
        if not isinstance(value, tp):
            raise CodecError(f"expected {tp.__name__}, got {type(value).__name__}")
        return typing.cast(JSON, value.value)

    return enc


def _dataclass_encoder(cls: type) -> Encoder:
    fields = [(name, _encoder(hint)) for name, hint, _ in _fields(cls)]

    def enc(value: Any) -> JSON:
        if type(value) is not cls:
            raise CodecError(f"expected {cls.__name__}, got {type(value).__name__}")
        return {name: field_enc(getattr(value, name)) for name, field_enc in fields}

    return enc


def _union_encoder(members: tuple[Any, ...]) -> Encoder:
    options = tuple(m for m in members if m is not _NONE)
    nullable = len(options) < len(members)
    if len(options) == 1:
        inner = _encoder(options[0])
    elif all(_is_dataclass_type(m) for m in options):
        tagged = {m: _encoder(m) for m in options}

        def inner(value: Any) -> JSON:
            enc = tagged.get(type(value))
            if enc is None:
                raise CodecError(f"{type(value).__name__} is not one of {options}")
            return {"type": type(value).__name__, "value": enc(value)}

    else:
        raise CodecError(f"no encoding for the union {members}")

    def enc(value: Any) -> JSON:
        if value is None:
            if not nullable:
                raise CodecError("None where a value is required")
            return None
        return inner(value)

    return enc


def _sequence_encoder(kind: type, item: Encoder) -> Encoder:
    def enc(value: Any) -> JSON:
        if not isinstance(value, kind):
            raise CodecError(f"expected {kind.__name__}, got {type(value).__name__}")
        return [item(v) for v in typing.cast(Iterable[Any], value)]

    return enc


def _tuple_encoder(args: tuple[Any, ...]) -> Encoder:
    if len(args) == 2 and args[1] is Ellipsis:
        return _sequence_encoder(tuple, _encoder(args[0]))
    items = [_encoder(a) for a in args]

    def enc(value: Any) -> JSON:
        if not isinstance(value, tuple) or len(value) != len(items):
            raise CodecError(f"expected a {len(items)}-tuple, got {value!r:.80}")
        return [e(v) for e, v in zip(items, value, strict=True)]

    return enc


def _set_encoder(item: Encoder) -> Encoder:
    def enc(value: Any) -> JSON:
        if not isinstance(value, frozenset):
            raise CodecError(f"expected frozenset, got {type(value).__name__}")
        # Sorted, so a value has one document whatever the hash seed.
        items = [item(v) for v in value]
        try:
            return sorted(items)  # type: ignore[type-var]
        except TypeError:  # not mutually comparable (e.g. objects): by their JSON text
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))

    return enc


def _dict_encoder(key: Any, item: Encoder) -> Encoder:
    if key is not str:
        raise CodecError(f"dict keys must be str, not {key!r}")

    def enc(value: Any) -> JSON:
        if not isinstance(value, dict):
            raise CodecError(f"expected dict, got {type(value).__name__}")
        out: dict[str, JSON] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CodecError(f"dict key {k!r} is not a string")
            out[k] = item(v)
        return out

    return enc


@functools.cache
def _encoder(tp: Any) -> Encoder:
    if tp is object or tp is Any:
        return check_json
    if tp is _NONE:
        return _union_encoder((_NONE,))
    if tp in (str, int, float, bool):
        return _scalar_encoder(tp)
    if tp is bytes:
        return _encode_bytes
    if tp is Address:
        return _encode_address
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_encoder(tp)
    if _is_dataclass_type(tp):
        return _dataclass_encoder(tp)
    members = _union_members(tp)
    if members is not None:
        return _union_encoder(members)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        return _tuple_encoder(args)
    if origin is frozenset:
        return _set_encoder(_encoder(args[0]))
    if origin is list:
        return _sequence_encoder(list, _encoder(args[0]))
    if origin is dict:
        return _dict_encoder(args[0], _encoder(args[1]))
    raise CodecError(f"no encoding for {tp!r}")


# --- compiled decoders ------------------------------------------------------------------


def _scalar_decoder(tp: type) -> Decoder:
    def dec(data: JSON) -> Any:
        if tp is float and isinstance(data, int) and not isinstance(data, bool):
            return float(data)
        if not isinstance(data, tp) or (tp is int and isinstance(data, bool)):
            raise CodecError(f"expected {tp.__name__}, got {data!r:.80}")
        return data

    return dec


def _decode_bytes(data: JSON) -> bytes:
    if not isinstance(data, str):
        raise CodecError(f"expected base64 text, got {data!r:.80}")
    try:
        return base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise CodecError(f"bad base64: {exc}") from exc


def _decode_address(data: JSON) -> Address:
    if not isinstance(data, str) or "@" not in data:
        raise CodecError(f"expected local@domain, got {data!r:.80}")
    local, _, domain = data.rpartition("@")
    return typing.cast(Address, _construct(Address, {"local": local, "domain": domain}))


def _enum_decoder(tp: type[enum.Enum]) -> Decoder:
    def dec(data: JSON) -> Any:
        try:
            return tp(data)
        except ValueError as exc:
            raise CodecError(f"{data!r:.80} is not a {tp.__name__}") from exc

    return dec


def _construct(cls: type, kwargs: dict[str, Any]) -> Any:
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, icontract.ViolationError) as exc:
        raise CodecError(f"not a valid {cls.__name__}: {exc}") from exc


def _dataclass_decoder(cls: type) -> Decoder:
    fields = [(name, _decoder(hint), has_default) for name, hint, has_default in _fields(cls)]
    names = frozenset(name for name, _, _ in fields)

    def dec(data: JSON) -> Any:
        if not isinstance(data, dict):
            raise CodecError(f"expected an object for {cls.__name__}, got {data!r:.80}")
        unknown = data.keys() - names
        if unknown:
            raise CodecError(f"unknown fields for {cls.__name__}: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, field_dec, has_default in fields:
            if name in data:
                kwargs[name] = field_dec(data[name])
            elif not has_default:
                raise CodecError(f"{cls.__name__} document lacks {name!r}")
        return _construct(cls, kwargs)

    return dec


def _union_decoder(members: tuple[Any, ...]) -> Decoder:
    options = tuple(m for m in members if m is not _NONE)
    nullable = len(options) < len(members)
    if len(options) == 1:
        inner = _decoder(options[0])
    elif all(_is_dataclass_type(m) for m in options):
        tagged = {m.__name__: _decoder(m) for m in options}

        def inner(data: JSON) -> Any:
            if not isinstance(data, dict) or data.keys() != {"type", "value"}:
                raise CodecError(f"expected a tagged value, got {data!r:.80}")
            dec = tagged.get(typing.cast(str, data["type"]))
            if dec is None:
                raise CodecError(f"{data['type']!r:.40} is not one of {sorted(tagged)}")
            return dec(data["value"])

    else:
        raise CodecError(f"no decoding for the union {members}")

    def dec(data: JSON) -> Any:
        if data is None:
            if not nullable:
                raise CodecError("null where a value is required")
            return None
        return inner(data)

    return dec


def _list_items(data: JSON) -> list[JSON]:
    if not isinstance(data, list):
        raise CodecError(f"expected a list, got {data!r:.80}")
    return data


def _tuple_decoder(args: tuple[Any, ...]) -> Decoder:
    if len(args) == 2 and args[1] is Ellipsis:
        item = _decoder(args[0])
        return lambda data: tuple(item(v) for v in _list_items(data))
    items = [_decoder(a) for a in args]

    def dec(data: JSON) -> Any:
        values = _list_items(data)
        if len(values) != len(items):
            raise CodecError(f"expected {len(items)} items, got {len(values)}")
        return tuple(d(v) for d, v in zip(items, values, strict=True))

    return dec


def _dict_decoder(item: Decoder) -> Decoder:
    def dec(data: JSON) -> Any:
        if not isinstance(data, dict):
            raise CodecError(f"expected an object, got {data!r:.80}")
        return {k: item(v) for k, v in data.items()}

    return dec


@functools.cache
def _decoder(tp: Any) -> Decoder:
    if tp is object or tp is Any:
        return check_json
    if tp is _NONE:
        return _union_decoder((_NONE,))
    if tp in (str, int, float, bool):
        return _scalar_decoder(tp)
    if tp is bytes:
        return _decode_bytes
    if tp is Address:
        return _decode_address
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_decoder(tp)
    if _is_dataclass_type(tp):
        return _dataclass_decoder(tp)
    members = _union_members(tp)
    if members is not None:
        return _union_decoder(members)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        return _tuple_decoder(args)
    if origin is frozenset:
        item = _decoder(args[0])
        return lambda data: frozenset(item(v) for v in _list_items(data))
    if origin is list:
        item = _decoder(args[0])
        return lambda data: [item(v) for v in _list_items(data)]
    if origin is dict:
        if args[0] is not str:
            raise CodecError(f"dict keys must be str, not {args[0]!r}")
        return _dict_decoder(_decoder(args[1]))
    raise CodecError(f"no decoding for {tp!r}")


__all__ = ["JSON", "CodecError", "check_json", "decode", "dumps", "encode", "loads"]
