"""The part of the DICOM upper layer (PS3.8) and of DIMSE (PS3.7) that a C-STORE SCP needs, as
pure functions on bytes: the A-ASSOCIATE-RQ parsed by a small bounded parser, the answers
(A-ASSOCIATE-AC/RJ, A-RELEASE-RP, A-ABORT, P-DATA-TF) built, command sets (implicit VR little
endian, group 0000) read and written, and the file meta group (PS3.10) that makes a received
data set a DICOM file. No pynetdicom on the receive path: it costs ~8 ms of CPU per 512 x 512
slice in Python (benchmarks/bench_scp_floor.py), this ~1 ms."""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

Bytes = bytes | bytearray | memoryview

# PDU types (PS3.8 Section 9.3.1)
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # the DICOM application context (PS3.7 A.2.1)
VERIFICATION = "1.2.840.10008.1.1"  # Verification SOP Class (C-ECHO), PS3.4 Annex A
# DIMSE command fields (PS3.7 Section 9.3 and 9.1.5)
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
NO_DATA_SET = 0x0101  # (0000,0800) CommandDataSetType: no data set follows
_RQ_FIXED = 68  # protocol version, reserved, called AE, calling AE, 32 reserved (PS3.8 9.3.2)


class DulError(ValueError):
    """A PDU or command set that does not parse: the association is aborted (A-ABORT)."""


class ContextResult(enum.IntEnum):
    """A presentation context's result in the A-ASSOCIATE-AC (PS3.8 Table 9-18)."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


class Reject(enum.Enum):
    """Why an association is rejected: (result, source, reason) of the A-ASSOCIATE-RJ
    (PS3.8 Table 9-21)."""

    APPLICATION_CONTEXT = (1, 1, 2)  # application context name not supported
    CALLING_AE = (1, 1, 3)  # calling AE title not recognized
    CALLED_AE = (1, 1, 7)  # called AE title not recognized
    PROTOCOL_VERSION = (1, 2, 2)  # protocol version not supported
    LOCAL_LIMIT = (2, 3, 2)  # transient: local limit exceeded (associations)


class Abort(enum.IntEnum):
    """The service provider's A-ABORT reasons (PS3.8 Table 9-26)."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    UNRECOGNIZED_PARAMETER = 4
    UNEXPECTED_PARAMETER = 5
    INVALID_PARAMETER = 6


@dataclass(frozen=True)
class ProposedContext:
    id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class RoleProposal:
    sop_class: str
    scu: bool
    scp: bool


@dataclass(frozen=True)
class AssociateRq:
    """What an A-ASSOCIATE-RQ asks for (PS3.8 Section 9.3.2, Annex D user information)."""

    protocol_version: int
    called_ae: str
    calling_ae: str
    application_context: str
    contexts: tuple[ProposedContext, ...]
    max_length: int  # the longest P-DATA-TF variable field the requestor takes; 0: no limit
    implementation_class_uid: str = ""
    implementation_version: str = ""
    async_window: bool = False  # an Asynchronous Operations Window item was proposed
    roles: tuple[RoleProposal, ...] = ()


@dataclass(frozen=True)
class ContextAnswer:
    id: int
    result: ContextResult
    abstract_syntax: str
    transfer_syntax: str  # the accepted one; the first proposed when not accepted


@dataclass(frozen=True)
class Command:
    """A DIMSE command set's fields that a storage SCP acts on (PS3.7 Section 9.3)."""

    field: int
    message_id: int
    sop_class: str
    sop_instance: str
    has_data_set: bool


def _text(raw: Bytes) -> str:
    return bytes(raw).decode("ascii", "replace").rstrip("\0 ").lstrip(" ")


def _items(body: Bytes, off: int, end: int) -> Iterator[tuple[int, memoryview]]:
    """The variable items of an A-ASSOCIATE PDU (type, reserved, 2-byte length, value)."""
    view = memoryview(body)
    while off < end:
        if off + 4 > end:
            raise DulError("a truncated item in an A-ASSOCIATE-RQ")
        item_type, _, length = struct.unpack_from(">BBH", view, off)
        if off + 4 + length > end:
            raise DulError(f"an item (type 0x{item_type:02X}) runs past its PDU")
        yield item_type, view[off + 4 : off + 4 + length]
        off += 4 + length


def parse_associate_rq(body: Bytes) -> AssociateRq:
    """An A-ASSOCIATE-RQ's variable field (what follows its 6-byte header)."""
    if len(body) < _RQ_FIXED:
        raise DulError(f"an A-ASSOCIATE-RQ of {len(body)} bytes (at least {_RQ_FIXED})")
    (version,) = struct.unpack_from(">H", body, 0)
    called, calling = _text(body[4:20]), _text(body[20:36])
    app_context = ""
    contexts: list[ProposedContext] = []
    max_length, impl_uid, impl_version, window = 0, "", "", False
    roles: list[RoleProposal] = []
    for item_type, value in _items(body, _RQ_FIXED, len(body)):
        if item_type == 0x10:
            app_context = _text(value)
        elif item_type == 0x20:
            if len(value) < 4:
                raise DulError("a presentation context item shorter than 4 bytes")
            abstract, syntaxes = "", []
            for sub_type, sub in _items(value, 4, len(value)):
                if sub_type == 0x30:
                    abstract = _text(sub)
                elif sub_type == 0x40:
                    syntaxes.append(_text(sub))
            contexts.append(ProposedContext(value[0], abstract, tuple(syntaxes)))
        elif item_type == 0x50:
            for sub_type, sub in _items(value, 0, len(value)):
                if sub_type == 0x51:
                    if len(sub) != 4:
                        raise DulError("a Maximum Length item that is not 4 bytes")
                    (max_length,) = struct.unpack(">L", sub)
                elif sub_type == 0x52:
                    impl_uid = _text(sub)
                elif sub_type == 0x55:
                    impl_version = _text(sub)
                elif sub_type == 0x53:
                    window = True
                elif sub_type == 0x54:
                    if len(sub) < 4:
                        raise DulError("a role selection item shorter than 4 bytes")
                    (n,) = struct.unpack_from(">H", sub, 0)
                    if 2 + n + 2 > len(sub):
                        raise DulError("a role selection item runs past its length")
                    roles.append(
                        RoleProposal(_text(sub[2 : 2 + n]), bool(sub[2 + n]), bool(sub[3 + n]))
                    )
    return AssociateRq(
        version, called, calling, app_context, tuple(contexts), max_length, impl_uid,
        impl_version, window, tuple(roles),
    )  # fmt: skip


def negotiate(rq: AssociateRq, supported: Mapping[str, Sequence[str]]) -> tuple[ContextAnswer, ...]:
    """Each proposed context's answer: accepted with the first of the requestor's transfer
    syntaxes that ``supported`` lists for its abstract syntax, else why not."""
    out = []
    for cx in rq.contexts:
        first = cx.transfer_syntaxes[0] if cx.transfer_syntaxes else ""
        ours = supported.get(cx.abstract_syntax)
        if ours is None:
            out.append(
                ContextAnswer(
                    cx.id, ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, cx.abstract_syntax, first
                )
            )
            continue
        ts = next((t for t in cx.transfer_syntaxes if t in ours), None)
        if ts is None:
            out.append(
                ContextAnswer(
                    cx.id, ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, cx.abstract_syntax, first
                )
            )
        else:
            out.append(ContextAnswer(cx.id, ContextResult.ACCEPTANCE, cx.abstract_syntax, ts))
    return tuple(out)  # fmt: skip


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16, b" ")


def associate_ac(
    rq: AssociateRq,
    answers: Sequence[ContextAnswer],
    *,
    max_length: int,
    implementation_class_uid: str,
    implementation_version: str,
) -> bytes:
    """The A-ASSOCIATE-AC PDU (PS3.8 Section 9.3.3): the called and calling AE titles as the
    requestor sent them, each context's answer, our Maximum Length and implementation; one
    outstanding operation each way when a window was proposed; the SCU role (only) for each
    role the requestor proposed under an accepted context."""
    items = [_item(0x10, APPLICATION_CONTEXT.encode())]
    for a in answers:
        syntax = _item(0x40, a.transfer_syntax.encode())
        items.append(_item(0x21, bytes([a.id, 0, int(a.result), 0]) + syntax))
    user = [
        _item(0x51, struct.pack(">L", max_length)),
        _item(0x52, implementation_class_uid.encode()),
    ]
    if rq.async_window:
        user.append(_item(0x53, struct.pack(">HH", 1, 1)))
    accepted = {a.abstract_syntax for a in answers if a.result is ContextResult.ACCEPTANCE}
    for role in rq.roles:
        if role.sop_class in accepted:
            uid = role.sop_class.encode()
            user.append(_item(0x54, struct.pack(">H", len(uid)) + uid + bytes([role.scu, 0])))
    user.append(_item(0x55, implementation_version.encode()[:16]))
    items.append(_item(0x50, b"".join(user)))
    head = struct.pack(">HH", 1, 0) + _ae(rq.called_ae) + _ae(rq.calling_ae) + bytes(32)
    return _pdu(A_ASSOCIATE_AC, head + b"".join(items))


def associate_rj(why: Reject) -> bytes:
    result, source, reason = why.value
    return _pdu(A_ASSOCIATE_RJ, bytes([0, result, source, reason]))


def abort(reason: Abort = Abort.NOT_SPECIFIED) -> bytes:
    """An A-ABORT from the service provider (source 2)."""
    return _pdu(A_ABORT, bytes([0, 0, 2, int(reason)]))


RELEASE_RP = _pdu(A_RELEASE_RP, bytes(4))


def pdvs(body: Bytes) -> Iterator[tuple[int, int, memoryview]]:
    """A P-DATA-TF PDU's PDV items (PS3.8 Section 9.3.5, Annex E): (context ID, message
    control header, fragment)."""
    view = memoryview(body)
    off = 0
    while off < len(view):
        if off + 6 > len(view):
            raise DulError("a truncated PDV item")
        (length,) = struct.unpack_from(">L", view, off)
        if length < 2 or off + 4 + length > len(view):
            raise DulError(f"a PDV item of {length} bytes does not fit its PDU")
        yield view[off + 4], view[off + 5], view[off + 6 : off + 4 + length]
        off += 4 + length


def p_data(context_id: int, data: bytes, *, command: bool, max_length: int) -> list[bytes]:
    """``data`` as P-DATA-TF PDUs of one PDV each, no longer than the peer's ``max_length``
    (0: no limit), the last fragment marked."""
    room = len(data) if max_length == 0 else max(1, max_length - 6)
    out = []
    for start in range(0, max(1, len(data)), room):
        chunk = data[start : start + room]
        last = start + room >= len(data)
        control = (1 if command else 0) | (2 if last else 0)
        out.append(
            _pdu(P_DATA_TF, struct.pack(">LBB", len(chunk) + 2, context_id, control) + chunk)
        )
    return out


# -- command sets (PS3.7 Section 6.3.1: implicit VR little endian, group 0000) -----------------

_AFFECTED_SOP_CLASS, _COMMAND_FIELD, _MESSAGE_ID = 0x0002, 0x0100, 0x0110
_RESPONDED_TO, _DATA_SET_TYPE, _STATUS, _AFFECTED_SOP_INSTANCE = 0x0120, 0x0800, 0x0900, 0x1000


def parse_command(data: Bytes) -> Command:
    """The fields of a command set that a storage SCP acts on."""
    view = memoryview(data)
    fields: dict[int, memoryview] = {}
    off = 0
    while off < len(view):
        if off + 8 > len(view):
            raise DulError("a truncated element in a command set")
        group, elem, length = struct.unpack_from("<HHL", view, off)
        if group != 0x0000 or off + 8 + length > len(view):
            raise DulError("a command set element outside group 0000 or past its end")
        fields[elem] = view[off + 8 : off + 8 + length]
        off += 8 + length

    def us(elem: int) -> int:
        v = fields.get(elem)
        if v is None or len(v) != 2:
            raise DulError(f"a command set without a 2-byte (0000,{elem:04X})")
        return int(struct.unpack("<H", v)[0])

    def ui(elem: int) -> str:
        v = fields.get(elem)
        return "" if v is None else _text(v)

    return Command(
        us(_COMMAND_FIELD),
        us(_MESSAGE_ID) if _MESSAGE_ID in fields else 0,
        ui(_AFFECTED_SOP_CLASS),
        ui(_AFFECTED_SOP_INSTANCE),
        us(_DATA_SET_TYPE) != NO_DATA_SET,
    )


def _element(elem: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"  # UIDs are padded with a NUL to an even length (PS3.5 Section 9.1)
    return struct.pack("<HHL", 0x0000, elem, len(value)) + value


def _command(elements: list[bytes]) -> bytes:
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<L", len(body))) + body


def response(rq: Command, status: int, *, field: int | None = None) -> bytes:
    """The response command set to ``rq`` (C-STORE-RSP, C-ECHO-RSP: PS3.7 Tables 9.3-2, 9.3-13)."""
    rsp_field = field if field is not None else rq.field | 0x8000
    elements = [_element(_AFFECTED_SOP_CLASS, rq.sop_class.encode())]
    elements += [
        _element(_COMMAND_FIELD, struct.pack("<H", rsp_field)),
        _element(_RESPONDED_TO, struct.pack("<H", rq.message_id)),
        _element(_DATA_SET_TYPE, struct.pack("<H", NO_DATA_SET)),
        _element(_STATUS, struct.pack("<H", status)),
    ]
    if rq.sop_instance:
        elements.append(_element(_AFFECTED_SOP_INSTANCE, rq.sop_instance.encode()))
    return _command(elements)


def command_set(field: int, message_id: int, sop_class: str, sop_instance: str) -> bytes:
    """A request command set with a data set following (a C-STORE-RQ when ``field`` is 1)."""
    return _command(
        [
            _element(_AFFECTED_SOP_CLASS, sop_class.encode()),
            _element(_COMMAND_FIELD, struct.pack("<H", field)),
            _element(_MESSAGE_ID, struct.pack("<H", message_id)),
            _element(0x0700, struct.pack("<H", 0)),  # Priority: medium
            _element(_DATA_SET_TYPE, struct.pack("<H", 0x0000)),
            _element(_AFFECTED_SOP_INSTANCE, sop_instance.encode()),
        ]
    )


# -- the file meta group (PS3.10 Section 7.1; explicit VR little endian) -----------------------


def _meta(elem: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr == b"OB":
        return (
            struct.pack("<HH", 0x0002, elem) + vr + b"\0\0" + struct.pack("<L", len(value)) + value
        )
    return struct.pack("<HH", 0x0002, elem) + vr + struct.pack("<H", len(value)) + value


def file_header(
    sop_class: str,
    sop_instance: str,
    transfer_syntax: str,
    *,
    implementation_class_uid: str,
    implementation_version: str,
    source_ae: str = "",
) -> bytes:
    """The preamble, "DICM" and the file meta group that precede a received data set (its
    bytes as they arrived, in ``transfer_syntax``) in a DICOM file."""
    group = [
        _meta(0x0001, b"OB", b"\0\1"),
        _meta(0x0002, b"UI", sop_class.encode()),
        _meta(0x0003, b"UI", sop_instance.encode()),
        _meta(0x0010, b"UI", transfer_syntax.encode()),
        _meta(0x0012, b"UI", implementation_class_uid.encode()),
        _meta(0x0013, b"SH", implementation_version.encode()[:16]),
    ]
    ae = source_ae.strip().encode("ascii", "replace")[:16]
    if ae:
        group.append(_meta(0x0016, b"AE", ae))
    body = b"".join(group)
    return bytes(128) + b"DICM" + _meta(0x0000, b"UL", struct.pack("<L", len(body))) + body
