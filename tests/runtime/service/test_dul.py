"""The upper layer's PDUs and command sets, checked against pynetdicom's own encoders and
decoders (an independent implementation of PS3.8 / PS3.7), and bounded on bad bytes."""

from __future__ import annotations

import io
import struct

import pydicom
import pytest

from hxsched.runtime.service import dul
from hxsched.runtime.service.dul import ContextResult, DulError, Reject

pynetdicom = pytest.importorskip("pynetdicom")

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"


def _rq_bytes(*, roles: bool = False, window: bool = False) -> bytes:
    """An A-ASSOCIATE-RQ as pynetdicom encodes it."""
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import (
        A_ASSOCIATE,
        AsynchronousOperationsWindowNegotiation,
        ImplementationClassUIDNotification,
        ImplementationVersionNameNotification,
        MaximumLengthNotification,
        SCP_SCU_RoleSelectionNegotiation,
    )
    from pynetdicom.presentation import build_context

    p = A_ASSOCIATE()
    p.application_context_name = dul.APPLICATION_CONTEXT
    p.calling_ae_title = "MODALITY"
    p.called_ae_title = "HXSCHED"
    cx = [build_context(CT, [EXPLICIT, IMPLICIT]), build_context(MR), build_context(CT, ["1.2.3"])]
    for i, c in enumerate(cx):
        c.context_id = 2 * i + 1
    p.presentation_context_definition_list = cx
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16384
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.3.4"
    ver = ImplementationVersionNameNotification()
    ver.implementation_version_name = "SENDER_1"
    user = [ml, impl, ver]
    if window:
        w = AsynchronousOperationsWindowNegotiation()
        w.maximum_number_operations_invoked = 5
        w.maximum_number_operations_performed = 5
        user.append(w)
    if roles:
        r = SCP_SCU_RoleSelectionNegotiation()
        r.sop_class_uid = CT
        r.scu_role = True
        r.scp_role = False
        user.append(r)
    p.user_information = user
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(p)
    return bytes(pdu.encode())


def test_an_a_associate_rq_parses_as_pynetdicom_wrote_it():
    raw = _rq_bytes(roles=True, window=True)
    assert raw[0] == dul.A_ASSOCIATE_RQ
    rq = dul.parse_associate_rq(raw[6:])
    assert (rq.called_ae, rq.calling_ae, rq.protocol_version) == ("HXSCHED", "MODALITY", 1)
    assert rq.application_context == dul.APPLICATION_CONTEXT
    assert [(c.id, c.abstract_syntax) for c in rq.contexts] == [(1, CT), (3, MR), (5, CT)]
    assert rq.contexts[0].transfer_syntaxes == (EXPLICIT, IMPLICIT)
    assert (rq.max_length, rq.implementation_class_uid) == (16384, "1.2.3.4")
    assert rq.implementation_version == "SENDER_1" and rq.async_window
    assert rq.roles == (dul.RoleProposal(CT, True, False),)


def test_negotiation_and_the_a_associate_ac_decode_in_pynetdicom():
    from pynetdicom.pdu import A_ASSOCIATE_AC

    rq = dul.parse_associate_rq(_rq_bytes(roles=True, window=True)[6:])
    answers = dul.negotiate(rq, {CT: (IMPLICIT, EXPLICIT)})
    assert [(a.id, a.result, a.transfer_syntax) for a in answers] == [
        (1, ContextResult.ACCEPTANCE, EXPLICIT),  # the requestor's order decides
        (3, ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, IMPLICIT),
        (5, ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, "1.2.3"),
    ]
    raw = dul.associate_ac(
        rq,
        answers,
        max_length=131072,
        implementation_class_uid="1.2.9",
        implementation_version="HX_1",
    )
    pdu = A_ASSOCIATE_AC()
    pdu.decode(raw)
    prim = pdu.to_primitive()
    assert prim.called_ae_title == "HXSCHED" and prim.calling_ae_title == "MODALITY"
    got = {
        c.context_id: (c.result, c.transfer_syntax[0])
        for c in prim.presentation_context_definition_results_list
    }
    assert got == {1: (0, EXPLICIT), 3: (3, IMPLICIT), 5: (4, "1.2.3")}
    items = {type(i).__name__: i for i in prim.user_information}
    assert items["MaximumLengthNotification"].maximum_length_received == 131072
    assert items["ImplementationClassUIDNotification"].implementation_class_uid == "1.2.9"
    assert items["AsynchronousOperationsWindowNegotiation"].maximum_number_operations_invoked == 1
    role = items["SCP_SCU_RoleSelectionNegotiation"]
    assert (role.sop_class_uid, role.scu_role, role.scp_role) == (CT, True, False)


def test_rejections_aborts_and_release_are_the_standards_bytes():
    assert dul.associate_rj(Reject.CALLED_AE) == bytes([3, 0, 0, 0, 0, 4, 0, 1, 1, 7])
    assert dul.associate_rj(Reject.LOCAL_LIMIT)[-3:] == bytes([2, 3, 2])  # transient
    assert dul.abort(dul.Abort.UNEXPECTED_PDU) == bytes([7, 0, 0, 0, 0, 4, 0, 0, 2, 2])
    assert bytes([6, 0, 0, 0, 0, 4, 0, 0, 0, 0]) == dul.RELEASE_RP


def test_command_sets_round_trip_through_pydicom():
    raw = dul.command_set(dul.C_STORE_RQ, 7, CT, "1.2.3.45")
    ds = pydicom.dcmread(io.BytesIO(raw), force=True)  # implicit VR little endian, group 0000
    assert (ds.CommandField, ds.MessageID, ds.AffectedSOPClassUID) == (1, 7, CT)
    assert ds.CommandGroupLength == len(raw) - 12
    cmd = dul.parse_command(raw)
    assert cmd == dul.Command(dul.C_STORE_RQ, 7, CT, "1.2.3.45", True)
    rsp = pydicom.dcmread(io.BytesIO(dul.response(cmd, 0xA700)), force=True)
    assert (rsp.CommandField, rsp.MessageIDBeingRespondedTo, rsp.Status) == (0x8001, 7, 0xA700)
    assert rsp.AffectedSOPInstanceUID == "1.2.3.45" and rsp.CommandDataSetType == 0x0101


def test_pdvs_are_split_to_the_peers_maximum_and_read_back():
    data = bytes(range(256)) * 40
    pdus = dul.p_data(3, data, command=False, max_length=4096)
    assert all(len(p) - 6 <= 4096 for p in pdus) and len(pdus) == 3
    got = b""
    for i, p in enumerate(pdus):
        ((cx, control, frag),) = list(dul.pdvs(p[6:]))
        assert cx == 3 and control == (2 if i == len(pdus) - 1 else 0)
        got += bytes(frag)
    assert got == data
    (one,) = dul.p_data(1, b"abc", command=True, max_length=0)
    assert list(dul.pdvs(one[6:]))[0][1] == 3


def test_the_file_header_makes_a_dicom_file_of_the_data_set_as_received(tmp_path):
    src = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    buf = io.BytesIO()
    src.save_as(buf, enforce_file_format=True)
    body = buf.getvalue()
    meta_end = 132 + 12 + struct.unpack_from("<L", body, 140)[0]
    head = dul.file_header(
        CT,
        src.SOPInstanceUID,
        EXPLICIT,
        implementation_class_uid="1.2.9",
        implementation_version="HX",
        source_ae="SCU",
    )
    path = tmp_path / "x.dcm"
    path.write_bytes(head + body[meta_end:])
    got = pydicom.dcmread(path)
    assert got.file_meta.MediaStorageSOPInstanceUID == src.SOPInstanceUID
    assert got.file_meta.TransferSyntaxUID == EXPLICIT
    assert got.file_meta.SourceApplicationEntityTitle == "SCU"
    assert got.PixelData == src.PixelData


@pytest.mark.parametrize(
    "body",
    [
        b"",
        bytes(67),
        bytes(68) + b"\x20\x00\xff\xff",  # an item longer than the PDU
        bytes(68) + b"\x20\x00\x00\x02\x01\x00",  # a presentation context of 2 bytes
        bytes(68) + b"\x50\x00\x00\x06\x51\x00\x00\x02\x00\x00",  # a 2-byte maximum length
    ],
)
def test_a_malformed_a_associate_rq_is_a_dul_error(body):
    with pytest.raises(DulError):
        dul.parse_associate_rq(body)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x00\x01",  # truncated element
        struct.pack("<HHL", 0x0008, 0x0016, 0),  # not group 0000
        struct.pack("<HHL", 0, 0x0100, 100) + b"\x01\x00",  # past its end
        struct.pack("<HHL", 0, 0x0800, 2) + b"\x01\x01",  # no command field
    ],
)
def test_a_malformed_command_set_is_a_dul_error(raw):
    with pytest.raises(DulError):
        dul.parse_command(raw)


def test_a_pdv_that_does_not_fit_is_a_dul_error():
    with pytest.raises(DulError):
        list(dul.pdvs(struct.pack(">LBB", 100, 1, 3)))
    with pytest.raises(DulError):
        list(dul.pdvs(struct.pack(">LB", 1, 1)))
