"""The one converter: typed messages <-> JSON text, for both directions.

Conservative writer, tolerant reader (protocol/WIRE.md):

* writes camelCase params for ``createBacktestSession``/``continue``, snake_case
  for struct variants, no ``params`` for unit variants, and omits optional
  fields that are ``None``;
* reads either casing of every field, keeps unknown status strings and unknown
  methods (:class:`~protocol.messages.UnknownResponse`), but is strict about
  types: ``"5"`` is not a slot number. Every failure is a
  :class:`~protocol.errors.ProtocolError` naming the field path.

The client functions (``encode_request``, ``decode_response``,
``encode_subscribe``, ``decode_pubsub``) and the server functions used by the
local simulator (``decode_request``, ``encode_response``,
``decode_pubsub_request``, ``encode_pubsub``) share this one converter, so
the two sides cannot drift apart.

JSON is parsed by orjson (through cattrs' preconfigured orjson converter): a
notification is decoded about three times faster than with the stdlib, and
PubSub decoding is the client's hottest path. orjson is stricter than the
stdlib in ways the wire never needs: ``NaN``/``Infinity`` and unpaired
surrogate escapes are refused as "not JSON", and an integer outside
``-2**63..2**64-1`` is read as a float, so a typed field refuses it ("expected
int, got float"), as the server's own (Rust, u64) types would.

The hot frames (PubSub notifications, the control responses of every slot) do
not go through orjson and cattrs: the converter's loads hooks hand them to
msgspec decoders that parse and check them in C (:mod:`protocol.fastpath`; a
typed notification in 1.0-1.2x the time orjson takes to parse it untyped, most of
the rest being the one Python-built object). Whatever such a
decoder does not take is decoded again here, field by field, so the errors and
their field paths are this module's.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Set
from typing import Any, TypeVar

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import OrjsonConverter, configure_converter

from .errors import ProtocolError
from .fastpath import pubsub_loads, response_loads
from .messages import (
    AccountData,
    Attach,
    AttachParallel,
    BacktestError,
    Close,
    CloseSession,
    Completed,
    ContinueParams,
    ContinueSession,
    ContinueToParams,
    CreateSession,
    DiscoveryBatch,
    DiscoveryFilter,
    EncodedBinary,
    Error,
    ParallelAttached,
    Paused,
    ReadyForContinue,
    Request,
    Response,
    Resume,
    SessionAttached,
    SessionCreated,
    SessionEvent,
    SessionsCreated,
    SlotNotification,
    Status,
    Success,
    UnknownResponse,
)
from .pubsub import (
    ACTION_NOTIFICATION,
    ACTION_SUBSCRIBE,
    NOTIFICATION_METHOD,
    SUBSCRIBE_METHODS,
    UNSUBSCRIBE_METHODS,
    AccountDiffNotification,
    ActionResultNotification,
    ActionSubscribe,
    JsonRpcError,
    PubsubMessage,
    PubsubRequest,
    StreamKind,
    Subscribe,
    SubscribeAck,
    TransactionNotification,
    UnknownPubsub,
    Unsubscribe,
    UnsubscribeAck,
)

T = TypeVar("T")

# --- casing ------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def snake_case(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()


@functools.lru_cache(maxsize=512)
def camel_case(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


# Params structs whose fields are camelCase on the wire (serde rename_all on the
# inner struct); every other struct is written snake_case.
_CAMEL_CASE_CLASSES: frozenset[type] = frozenset(
    {CreateSession, ContinueParams, ContinueToParams, AccountData, EncodedBinary,
     DiscoveryFilter}
)

# --- the converter ---------------------------------------------------------------

class Converter(OrjsonConverter):
    """cattrs' orjson converter, plus loads hooks: ``loads(frame, cl)`` hands ``cl`` to
    the hook registered for it, or parses and structures as cattrs does.

    The hooks are the hot wire types' fast paths (:mod:`protocol.fastpath`: parsed,
    checked and built in C by msgspec), each falling back to this converter's
    own field-by-field path for anything it does not take, so the errors stay
    those of the slow path. The module's entry points (:func:`decode_pubsub`,
    :func:`decode_response`) are the hooks themselves, called directly (a dict
    lookup less per frame).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._loads_hooks: dict[Any, Callable[[str | bytes], Any]] = {}

    def register_loads_hook(self, cl: Any, hook: Callable[[str | bytes], Any]) -> None:
        self._loads_hooks[cl] = hook

    def loads(self, data: bytes | bytearray | memoryview | str, cl: Any) -> Any:
        hook = self._loads_hooks.get(cl)
        if hook is not None:
            return hook(data)  # type: ignore[arg-type]
        return super().loads(data, cl)


# cattrs' orjson preset (how bytes, dates, sets and mapping keys go to orjson),
# made strict below: the hooks of the primitive types refuse any other type.
converter = Converter(detailed_validation=True, unstruct_collection_overrides={Set: list})
configure_converter(converter)


def _strict(kind: type, name: str) -> Callable[[Any, Any], Any]:
    def check(value: Any, _type: Any) -> Any:
        # bool is an int subclass in Python but never a number on this wire.
        if type(value) is not kind:
            raise TypeError(f"expected {name}, got {type(value).__name__} {value!r:.40}")
        return value

    return check


converter.register_structure_hook(int, _strict(int, "integer"))
converter.register_structure_hook(str, _strict(str, "string"))
converter.register_structure_hook(bool, _strict(bool, "boolean"))


def _structure_hook_factory(cls: type) -> Callable[[Any, Any], Any]:
    inner: Callable[[Any, Any], Any] = make_dict_structure_fn(cls, converter)

    def structure(value: Any, type_: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        # Tolerant reader: accept camelCase and snake_case for every field.
        return inner({snake_case(k): v for k, v in value.items()}, type_)

    return structure


def _unstructure_hook_factory(cls: type) -> Callable[[Any], Any]:
    camel = cls in _CAMEL_CASE_CLASSES
    overrides = {
        field.name: override(
            rename=camel_case(field.name) if camel else None,
            # Conservative writer: an unset optional field is not sent at all, nor
            # an empty one that an older server would not know.
            omit_if_default=field.default is None
            or bool(field.metadata.get("omit_if_empty")),
        )
        for field in attrs.fields(cls)
    }
    return make_dict_unstructure_fn(cls, converter, **overrides)  # type: ignore[arg-type]


converter.register_structure_hook_factory(attrs.has, _structure_hook_factory)
converter.register_unstructure_hook_factory(attrs.has, _unstructure_hook_factory)


def _structure(value: Any, cls: type[T], path: str, frame: str | bytes) -> T:
    try:
        return converter.structure(value, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        raise _validation_error(exc, path, frame) from None


def _validation_error(exc: Exception, path: str, frame: str | bytes) -> ProtocolError:
    if isinstance(exc, cattrs.BaseValidationError):
        first = cattrs.transform_error(exc, path=path, format_exception=_describe)[0]
        detail, _, where = first.rpartition(" @ ")
        return ProtocolError(where or path, detail or first, frame)
    return ProtocolError(path, _describe(exc, None), frame)


def _describe(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    return str(exc) or type(exc).__name__


_json_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _dumps(obj: Any) -> str:
    """Compact JSON text; what orjson cannot write (an integer beyond 64 bits, a
    non-string key) is written by the stdlib as before, never refused here."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return _json_dumps(obj)


def _load(frame: str | bytes) -> Any:
    """Text or UTF-8 bytes -> JSON; both failures name the frame, never leak another type."""
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise _not_json(frame, exc) from None


def _not_json(frame: str | bytes, exc: Exception) -> ProtocolError:
    """The error for a frame orjson refused: bad UTF-8 is named as such (off the hot path)."""
    if isinstance(frame, bytes | bytearray | memoryview):
        raw = bytes(frame)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            return ProtocolError("$", f"not UTF-8 ({bad.reason})", raw)
    if not isinstance(frame, str | bytes):
        frame = bytes(frame)
    return ProtocolError("$", f"not JSON ({exc})", frame)


def _object(value: Any, path: str, frame: str | bytes) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(path, f"expected an object, got {type(value).__name__}", frame)
    return value


def _field(obj: Mapping[str, Any], name: str, kind: type[T], path: str,
           frame: str | bytes, *, optional: bool = False) -> T:
    value = obj.get(name)
    if value is None and optional:
        return value  # type: ignore[return-value]
    if value is None and name not in obj:
        raise ProtocolError(f"{path}.{name}", "required field missing", frame)
    if type(value) is not kind:
        raise ProtocolError(
            f"{path}.{name}", f"expected {kind.__name__}, got {type(value).__name__}", frame
        )
    return value


# --- control channel ---------------------------------------------------------------

_REQUEST_METHODS: dict[type, str] = {
    CreateSession: "createBacktestSession",
    ContinueParams: "continue",
    ContinueToParams: "continueTo",
    AttachParallel: "attachParallelControlSessionV2",
    CloseSession: "closeSessionV1",
    Attach: "attachBacktestSession",
    Resume: "resumeAttachedSession",
    Close: "closeBacktestSession",
}
_REQUEST_TYPES = {method: cls for cls, method in _REQUEST_METHODS.items()}
_UNIT_REQUESTS = (Resume, Close)

_RESPONSE_METHODS: dict[type, str] = {
    SessionCreated: "sessionCreated",
    SessionAttached: "sessionAttached",
    ReadyForContinue: "readyForContinue",
    SlotNotification: "slotNotification",
    Status: "status",
    Completed: "completed",
    Success: "success",
    Error: "error",
    Paused: "paused",
    DiscoveryBatch: "discoveryBatch",
    SessionsCreated: "sessionsCreatedV2",
    ParallelAttached: "parallelSessionAttachedV2",
    SessionEvent: "sessionEventV2",
}


def encode_request(msg: Request) -> str:
    """A control request as the JSON text frame the server expects."""
    if isinstance(msg, ContinueSession):
        # Decision (protocol/WIRE.md, Parallel sessions): {"session_id", "params"}, the
        # method naming the kind, as the reference's continueSessionV1/continueToSessionV1.
        kind = ("continueSessionV1" if isinstance(msg.params, ContinueParams)
                else "continueToSessionV1")
        return _dumps({"method": kind, "params": {
            "session_id": msg.session_id, "params": converter.unstructure(msg.params)}})
    method = _REQUEST_METHODS.get(type(msg))
    if method is None:
        raise TypeError(f"not a control request: {type(msg).__name__}")
    if isinstance(msg, _UNIT_REQUESTS):
        return _dumps({"method": method})
    return _dumps({"method": method, "params": converter.unstructure(msg)})


def decode_request(frame: str | bytes) -> Request:
    """Server side: a client's control frame. Unknown methods are an error here."""
    obj = _object(_load(frame), "$", frame)
    method = _field(obj, "method", str, "$", frame)
    if method in ("continueSessionV1", "continueToSessionV1"):
        body = _object(obj.get("params"), "$.params", frame)
        session_id = _field(body, "session_id", str, "$.params", frame)
        inner = body.get("params")
        params: ContinueParams | ContinueToParams
        if method == "continueSessionV1":
            params = _structure({} if inner is None else inner, ContinueParams,
                                "$.params.params", frame)
        else:
            params = _structure(inner, ContinueToParams, "$.params.params", frame)
        return ContinueSession(session_id, params)
    cls = _REQUEST_TYPES.get(method)
    if cls is None:
        raise ProtocolError("$.method", f"unknown request method {method!r}", frame)
    if cls in _UNIT_REQUESTS:
        return cls()
    return _structure(obj.get("params", {} if cls is ContinueParams else None), cls,
                      "$.params", frame)


def encode_backtest_error(error: BacktestError) -> Any:
    """Externally tagged, camelCase variant; a unit variant is a bare string."""
    return {error.kind: error.fields} if error.fields else error.kind


def decode_backtest_error(params: Any, frame: str | bytes) -> BacktestError:
    if isinstance(params, str) and params:
        return BacktestError(_lower_first(params))
    if isinstance(params, dict) and len(params) == 1:
        ((kind, fields),) = params.items()
        if isinstance(fields, dict):
            return BacktestError(_lower_first(kind), {snake_case(k): v for k, v in fields.items()})
        if fields is None:
            return BacktestError(_lower_first(kind))
        # Newtype variants carry a bare value; keep it under a neutral name.
        return BacktestError(_lower_first(kind), {"value": fields})
    raise ProtocolError(
        "$.params", "expected an error variant name or a one-key object", frame
    )


def encode_response(msg: Response, seq_id: int | None = None) -> str:
    """Server side: a response frame, with the top-level ``seqId`` when sequenced."""
    out: dict[str, Any] = {} if seq_id is None else {"seqId": seq_id}
    if isinstance(msg, UnknownResponse):
        out["method"] = msg.method
        if msg.params is not None:
            out["params"] = msg.params
        return _dumps(out)
    out["method"] = _RESPONSE_METHODS[type(msg)]
    if isinstance(msg, SessionEvent):
        out["params"] = {"session_id": msg.session_id, "seq_id": msg.seq_id,
                         "event": orjson.loads(encode_response(msg.event))}
        return _dumps(out)
    if isinstance(msg, SlotNotification):
        out["params"] = msg.slot
    elif isinstance(msg, Error):
        out["params"] = encode_backtest_error(msg.error)
    elif isinstance(msg, Completed):
        out["params"] = {"summary": msg.summary}
    elif not isinstance(msg, ReadyForContinue | Success):
        out["params"] = converter.unstructure(msg)
    return _dumps(out)


SequencedResponse = tuple[int | None, Response]
"""What a control frame decodes to: ``(seq_id or None, message)``."""


def _decode_response(frame: str | bytes) -> SequencedResponse:
    """The slow path of :func:`decode_response`: field by field, names the field at fault."""
    obj = _object(_load(frame), "$", frame)
    method = _field(obj, "method", str, "$", frame)
    seq_id = obj.get("seqId", obj.get("seq_id"))
    if seq_id is not None and (type(seq_id) is not int or seq_id < 0):
        raise ProtocolError("$.seqId", f"expected integer >= 0, got {seq_id!r:.40}", frame)
    params = obj.get("params")
    msg: Response
    if method in ("sessionCreated", "sessionAttached"):
        if method == "sessionCreated":
            msg = _structure(params, SessionCreated, "$.params", frame)
        else:
            msg = _structure(params, SessionAttached, "$.params", frame)
    elif method == "readyForContinue":
        msg = ReadyForContinue()
    elif method == "success":
        msg = Success()
    elif method == "slotNotification":
        if isinstance(params, dict):  # tolerate {"slot": n}
            params = params.get("slot")
        if type(params) is not int or params < 0:
            raise ProtocolError("$.params", f"expected a slot number, got {params!r:.40}", frame)
        msg = SlotNotification(params)
    elif method == "status":
        body = _object(params, "$.params", frame)
        msg = Status(_field(body, "status", str, "$.params", frame))
    elif method == "completed":
        body = {} if params is None else _object(params, "$.params", frame)
        summary = body.get("summary")
        if summary is not None:
            summary = {snake_case(k): v for k, v in _object(summary, "$.params.summary",
                                                            frame).items()}
        msg = Completed(summary)
    elif method == "error":
        msg = Error(decode_backtest_error(params, frame))
    elif method == "sessionEventV2":
        body = _object(params, "$.params", frame)
        session_id = _field(body, "session_id", str, "$.params", frame)
        inner_seq = body.get("seq_id", body.get("seqId"))
        if inner_seq is not None and (type(inner_seq) is not int or inner_seq < 0):
            raise ProtocolError("$.params.seq_id", f"expected integer >= 0, got "
                                f"{inner_seq!r:.40}", frame)
        event = _object(body.get("event"), "$.params.event", frame)
        # The event is a whole response, decoded as one (its own errors name it).
        try:
            _, inner = decode_response(_dumps(event))
        except ProtocolError as exc:
            raise ProtocolError("$.params.event" + exc.path[1:], exc.detail, frame) from None
        msg = SessionEvent(session_id, inner_seq, inner)
    elif method == "sessionsCreatedV2":
        msg = _structure(params, SessionsCreated, "$.params", frame)
    elif method == "parallelSessionAttachedV2":
        msg = _structure(params, ParallelAttached, "$.params", frame)
    elif method == "paused":
        msg = _structure(params, Paused, "$.params", frame)
    elif method == "discoveryBatch":
        msg = _discovery_batch(params, frame)
    else:
        msg = UnknownResponse(method, params)
    return seq_id, msg


def _discovery_batch(params: Any, frame: str | bytes) -> DiscoveryBatch:
    """``discoveryBatch``: typed, except ``matched`` filters of a kind this client does
    not know, which stay raw JSON (a newer server must not make it fail)."""
    body = _object(params, "$.params", frame)
    matched = body.get("matched", [])
    if not isinstance(matched, list):
        raise ProtocolError("$.params.matched", "expected an array", frame)
    known = []
    for index, item in enumerate(matched):
        if isinstance(item, dict) and len(item) == 1 and snake_case(
                next(iter(item))) == "program_executed":
            known.append(_structure(item, DiscoveryFilter, f"$.params.matched[{index}]", frame))
        else:
            known.append(item)
    rest = {k: v for k, v in body.items() if k != "matched"}
    batch = _structure(rest, DiscoveryBatch, "$.params", frame)
    return attrs.evolve(batch, matched=tuple(known))


decode_response = response_loads(_decode_response)
converter.register_loads_hook(SequencedResponse, decode_response)


def encode_record(obj: Any, **extra: Any) -> str:
    """Any attrs value object as one JSON line, tagged with its type (event logs).

    Nested attrs values are tagged too, so a status inside an event stays
    readable: ``{"type": "ConnectionChanged", "status": {"type": "Up"}}``.
    """
    return _dumps({**extra, **_tagged(obj)})


def _tagged(obj: Any) -> Any:
    if attrs.has(type(obj)):
        out = {"type": type(obj).__name__}
        for field in attrs.fields(type(obj)):
            out[field.name] = _tagged(getattr(obj, field.name))
        return out
    if isinstance(obj, tuple | list):
        return [_tagged(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _tagged(v) for k, v in obj.items()}
    return converter.unstructure(obj)


# --- PubSub ------------------------------------------------------------------------

_SUBSCRIBE_METHOD = {kind: method for method, kind in SUBSCRIBE_METHODS.items()}
_UNSUBSCRIBE_METHOD = {kind: method for method, kind in UNSUBSCRIBE_METHODS.items()}


def encode_subscribe(msg: PubsubRequest) -> str:
    """A subscribe or unsubscribe request as a JSON-RPC 2.0 text frame."""
    if isinstance(msg, ActionSubscribe):
        # No filter: the config alone (protocol/WIRE.md, Actions).
        action_config = ({} if msg.replay_from_slot is None
                         else {"replayFromSlot": msg.replay_from_slot})
        return _dumps({"jsonrpc": "2.0", "id": msg.id, "method": ACTION_SUBSCRIBE,
                       "params": [action_config]})
    if isinstance(msg, Unsubscribe):
        return _dumps({"jsonrpc": "2.0", "id": msg.id, "method": _UNSUBSCRIBE_METHOD[msg.kind],
                       "params": [msg.subscription]})
    config: dict[str, Any] = {}
    if msg.replay_from_slot is not None:
        config["replayFromSlot"] = msg.replay_from_slot
    target: Any = {"mentions": [msg.address]} if msg.kind == "transactions" else msg.address
    return _dumps({"jsonrpc": "2.0", "id": msg.id, "method": _SUBSCRIBE_METHOD[msg.kind],
                   "params": [target, config]})


def decode_pubsub_request(frame: str | bytes) -> PubsubRequest:
    """Server side: a subscribe/unsubscribe request."""
    obj = _object(_load(frame), "$", frame)
    request_id = _field(obj, "id", int, "$", frame)
    method = _field(obj, "method", str, "$", frame)
    params = obj.get("params", [])
    if method == ACTION_SUBSCRIBE:
        if not isinstance(params, list) or len(params) > 1:
            raise ProtocolError("$.params", "expected [] or [config]", frame)
        return ActionSubscribe(request_id, _replay_from(params[0] if params else {}, "$.params[0]",
                                                        frame))
    if not isinstance(params, list) or not params:
        raise ProtocolError("$.params", "expected a non-empty array", frame)
    if method in UNSUBSCRIBE_METHODS:
        if type(params[0]) is not int:
            raise ProtocolError("$.params[0]", "expected a subscription id", frame)
        return Unsubscribe(request_id, UNSUBSCRIBE_METHODS[method], params[0])
    stream = SUBSCRIBE_METHODS.get(method)
    if stream is None:
        raise ProtocolError("$.method", f"unknown method {method!r}", frame)
    target = params[0]
    if stream == "transactions":
        mentions = target.get("mentions") if isinstance(target, dict) else None
        if not (isinstance(mentions, list) and len(mentions) == 1
                and isinstance(mentions[0], str) and mentions[0]):
            raise ProtocolError("$.params[0].mentions", "expected one address", frame)
        address = mentions[0]
    else:
        if not isinstance(target, str) or not target:
            raise ProtocolError("$.params[0]", "expected an account address", frame)
        address = target
    config = params[1] if len(params) > 1 else {}
    return Subscribe(request_id, stream, address, _replay_from(config, "$.params[1]", frame))


def _replay_from(config: Any, path: str, frame: str | bytes) -> int | None:
    replay = config.get("replayFromSlot") if isinstance(config, dict) else None
    if replay is not None and (type(replay) is not int or replay < 0):
        raise ProtocolError(f"{path}.replayFromSlot", "expected a slot number", frame)
    return replay


def encode_action_result(msg: ActionResultNotification) -> str:
    """The ``result`` of an ``actionNotification`` (camelCase, as the other results)."""
    result: dict[str, Any] = {"slot": msg.slot, "actionIndex": msg.action_index,
                              "label": msg.label, "signatures": list(msg.signatures),
                              "status": msg.status}
    if msg.error is not None:
        result["error"] = msg.error
    return _dumps(result)


def encode_notification_result(msg: TransactionNotification | AccountDiffNotification) -> str:
    """The ``result`` object of a notification, so a server can encode it once per item."""
    if isinstance(msg, TransactionNotification):
        result: dict[str, Any] = {"slot": msg.slot, "signature": msg.signature,
                                  "transaction": msg.transaction, "meta": msg.meta}
        if msg.index is not None:
            result["index"] = msg.index
    else:
        result = {"context": {"slot": msg.slot}, "account": msg.account,
                  "signature": msg.signature, "pre": msg.pre, "post": msg.post}
        if msg.write_index is not None:
            result["writeIndex"] = msg.write_index
    return _dumps(result)


def notification_frame(method: str, result_json: str, subscription: int) -> str:
    """Wrap a pre-encoded result for one subscriber (no re-encoding per subscriber)."""
    return (f'{{"jsonrpc":"2.0","method":"{method}","params":'
            f'{{"result":{result_json},"subscription":{subscription}}}}}')


def encode_pubsub(msg: PubsubMessage) -> str:
    """Server side: an ack, error or notification frame."""
    if isinstance(msg, SubscribeAck):
        return _dumps({"jsonrpc": "2.0", "result": msg.subscription, "id": msg.id})
    if isinstance(msg, UnsubscribeAck):
        return _dumps({"jsonrpc": "2.0", "result": msg.result, "id": msg.id})
    if isinstance(msg, JsonRpcError):
        return _dumps({"jsonrpc": "2.0", "id": msg.id,
                       "error": {"code": msg.code, "message": msg.message}})
    if isinstance(msg, TransactionNotification | AccountDiffNotification):
        stream: StreamKind = (
            "transactions" if isinstance(msg, TransactionNotification) else "account_diffs"
        )
        return notification_frame(NOTIFICATION_METHOD[stream], encode_notification_result(msg),
                                  msg.subscription)
    if isinstance(msg, ActionResultNotification):
        return notification_frame(ACTION_NOTIFICATION, encode_action_result(msg),
                                  msg.subscription)
    return _dumps({"jsonrpc": "2.0", "method": msg.method, "params": msg.params})


def _slow_pubsub(frame: str | bytes) -> PubsubMessage:
    """The slow path of :func:`decode_pubsub`: field by field, names the field at fault."""
    return _decode_pubsub(_load(frame), frame)


decode_pubsub = pubsub_loads(_slow_pubsub)
converter.register_loads_hook(PubsubMessage, decode_pubsub)


def _decode_pubsub(obj: Any, frame: str | bytes) -> PubsubMessage:
    obj = _object(obj, "$", frame)
    method = obj.get("method")
    if method is None:
        request_id = obj.get("id")
        if "error" in obj:
            err = _object(obj["error"], "$.error", frame)
            return JsonRpcError(
                request_id if type(request_id) is int else None,
                _field(err, "code", int, "$.error", frame),
                _field(err, "message", str, "$.error", frame),
            )
        request_id = _field(obj, "id", int, "$", frame)
        result = obj.get("result")
        if type(result) is int:
            return SubscribeAck(request_id, result)
        if type(result) is bool:
            return UnsubscribeAck(request_id, result)
        raise ProtocolError("$.result", "expected a subscription id or a boolean", frame)
    if type(method) is not str:
        raise ProtocolError("$.method", "expected str", frame)
    if method not in ("transactionNotification", "accountDiffNotification",
                      ACTION_NOTIFICATION):
        return UnknownPubsub(method, obj.get("params"))
    params = _object(obj.get("params"), "$.params", frame)
    subscription = _field(params, "subscription", int, "$.params", frame)
    result = _object(params.get("result"), "$.params.result", frame)
    path = "$.params.result"
    if method == ACTION_NOTIFICATION:
        signatures = result.get("signatures", [])
        if not isinstance(signatures, list) or not all(isinstance(x, str) for x in signatures):
            raise ProtocolError(f"{path}.signatures", "expected a list of strings", frame)
        label = result.get("label", "")
        error = result.get("error")
        if not isinstance(label, str) or not (error is None or isinstance(error, str)):
            raise ProtocolError(path, "label and error: expected strings", frame)
        index = _position(result, "actionIndex", path, frame)
        if index is None:
            raise ProtocolError(f"{path}.actionIndex", "required field missing", frame)
        return ActionResultNotification(
            subscription, _field(result, "slot", int, path, frame), index, label,
            tuple(signatures), _field(result, "status", str, path, frame), error)
    if method == "transactionNotification":
        return TransactionNotification(
            subscription,
            _field(result, "slot", int, path, frame),
            _field(result, "signature", str, path, frame),
            result.get("transaction"),
            result.get("meta"),
            _position(result, "index", path, frame),
        )
    context = _object(result.get("context"), f"{path}.context", frame)
    return AccountDiffNotification(
        subscription,
        _field(context, "slot", int, f"{path}.context", frame),
        _field(result, "account", str, path, frame),
        _field(result, "signature", str, path, frame),
        result.get("pre"),
        result.get("post"),
        _position(result, "writeIndex", path, frame),
    )


def _position(result: dict[str, Any], key: str, path: str, frame: str | bytes) -> int | None:
    """An optional position (``index``/``writeIndex``): absent is fine, wrong is not."""
    value = result.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ProtocolError(f"{path}.{key}", "expected a position (int >= 0)", frame)
    return value


# --- documents (cursors, journals) ------------------------------------------------------


def dump_document(doc: Any) -> str:
    """A JSON document on one line (a cursor, a journal line); keys kept in order."""
    return json.dumps(doc, separators=(",", ":"))


def load_document(text: str | bytes) -> Any:
    """Parse one JSON document; ``ValueError`` when it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None


def request_document(msg: Request) -> Any:
    """A request as its wire JSON value (kept inside a cursor or a journal line)."""
    return json.loads(encode_request(msg))


def request_from_document(doc: Any) -> Request:
    """The inverse of :func:`request_document`; ``ProtocolError`` when it is not one."""
    return decode_request(json.dumps(doc))
