"""dicom_io: real DICOM from pydicom's test data, Secondary Capture output, and a reason for
every malformed input."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import UID_dictionary

from hxsched.runtime.service.dicom_io import (
    LABEL,
    MODALITIES,
    PHOTOMETRIC,
    SECONDARY_CAPTURE,
    BadInput,
    encode_ct_dicom,
    read_slice,
    synthetic_phantom,
    write_secondary_capture,
)
from hxsched.runtime.service.pipeline import Accept, Limits

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
# every modality, SOP class and photometric interpretation: reading beyond the CT default
ANY = Accept(
    modalities=tuple(MODALITIES),
    sop_classes=tuple(uid for uid, e in UID_dictionary.items() if e[1] == "SOP Class"),
    photometric=tuple(PHOTOMETRIC),
)


@pytest.fixture(scope="module")
def ct():
    return read_slice(CT_SMALL)


def _bad(path: Path, reason: str, **kw) -> BadInput:
    with pytest.raises(BadInput) as info:
        read_slice(path, **kw)
    exc = info.value
    assert exc.reason == reason, str(exc)
    assert path.name in str(exc)
    assert "\n" not in str(exc)
    return exc


# ---------------------------------------------------------------------------------------------
# Reading real files
# ---------------------------------------------------------------------------------------------
def test_ct_small_reads_in_hu(ct):
    assert ct.kind == "dicom"
    assert ct.is_hu
    assert ct.pixels.dtype == np.float32
    assert ct.pixels.ndim == 2
    assert ct.pixels.shape == (128, 128)
    assert -1100.0 <= float(ct.pixels.min()) < 0.0
    assert 0.0 < float(ct.pixels.max()) <= 4000.0
    assert ct.meta["Modality"] == "CT"
    assert ct.meta["Rows"] == 128 and ct.meta["Columns"] == 128
    assert len(ct.content_sha) == 64
    assert ct.source_name == "CT_small.dcm"


def test_mr_small_reads_but_is_not_hu():
    exc = _bad(Path(get_testdata_file("MR_small.dcm")), "not-accepted")  # the CT default
    assert "modality MR is not accepted" in str(exc)
    sl = read_slice(get_testdata_file("MR_small.dcm"), accept=ANY)
    assert sl.kind == "dicom"
    assert not sl.is_hu
    assert sl.pixels.shape == (64, 64)


def test_repr_and_log_id_hold_no_patient_data(ct):
    ds = pydicom.dcmread(CT_SMALL)
    name, pid = str(ds.PatientName), str(ds.PatientID)
    assert ct.patient["PatientID"] == pid  # kept for the output, ...
    for text in (repr(ct), ct.log_id, str(ct.meta)):  # ... but never shown
        assert name not in text
        assert pid not in text
    assert "CompressedSamples" not in repr(ct)
    assert len(ct.log_id) == 12
    ph = synthetic_phantom(0, size=64)
    assert "PHANTOM" not in repr(ph) and "PHANTOM" not in ph.log_id


def test_png_reads_as_image(tmp_path):
    img = (np.arange(64 * 48).reshape(48, 64) % 256).astype(np.uint8)
    p = tmp_path / "slice.png"
    assert cv2.imwrite(str(p), img)
    sl = read_slice(p)
    assert sl.kind == "image"
    assert not sl.is_hu
    assert sl.pixels.dtype == np.float32
    assert sl.pixels.shape == (48, 64)
    np.testing.assert_array_equal(sl.pixels, img.astype(np.float32))


def test_compressed_dicom_is_unsupported_or_decodes():
    path = Path(get_testdata_file("JPEG2000.dcm"))
    try:
        sl = read_slice(path, accept=ANY)
    except BadInput as exc:
        assert exc.reason == "unsupported"
        assert path.name in str(exc)
    else:
        assert sl.pixels.ndim == 2 and np.isfinite(sl.pixels).all()


# ---------------------------------------------------------------------------------------------
# Malformed inputs
# ---------------------------------------------------------------------------------------------
def test_truncated_ct(tmp_path):
    data = CT_SMALL.read_bytes()
    p = tmp_path / "cut.dcm"
    p.write_bytes(data[: len(data) - 10000])  # header intact, pixel data cut short
    _bad(p, "truncated")


def test_pydicoms_truncated_mr():
    _bad(Path(get_testdata_file("MR_truncated.dcm")), "truncated", accept=ANY)
    _bad(Path(get_testdata_file("MR_truncated.dcm")), "not-accepted")


def test_garbage_bytes(tmp_path):
    p = tmp_path / "garbage.dcm"
    p.write_bytes(bytes(range(256)) * 20)
    _bad(p, "unreadable")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.dcm"
    p.write_bytes(b"")
    _bad(p, "unreadable")


def test_missing_file(tmp_path):
    _bad(tmp_path / "nope.dcm", "unreadable")


def test_dicom_without_pixel_data(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    del ds.PixelData
    p = tmp_path / "nopixels.dcm"
    ds.save_as(p)
    _bad(p, "not-an-image")
    _bad(Path(get_testdata_file("rtplan.dcm")), "not-an-image")


def test_tiny_png(tmp_path):
    p = tmp_path / "tiny.png"
    assert cv2.imwrite(str(p), np.zeros((8, 8), np.uint8))
    _bad(p, "wrong-size")


def test_nan_tiff(tmp_path):
    img = np.zeros((64, 64), np.float32)
    img[10, 10] = np.nan
    p = tmp_path / "nan.tiff"
    assert cv2.imwrite(str(p), img)
    _bad(p, "nan")


def test_oversize_file(tmp_path):
    p = tmp_path / "big.dcm"
    shutil.copy(CT_SMALL, p)
    _bad(p, "oversize", max_bytes=1000)


def test_oversize_dimensions(tmp_path):
    # a header over the limits is decode-limit (refused before decoding), not oversize
    exc = _bad(CT_SMALL, "decode-limit", limits=Limits(max_side=100))
    assert "128x128" in str(exc) and "100" in str(exc)


def test_multi_frame(tmp_path):
    rtdose = Path(get_testdata_file("rtdose.dcm"))
    _bad(rtdose, "wrong-size", accept=ANY, limits=Limits(max_frames=64))
    _bad(rtdose, "decode-limit", accept=ANY)  # more frames than the default limit of 1
    exc = _bad(rtdose, "not-accepted")
    assert "modality RTDOSE" in str(exc)


# ---------------------------------------------------------------------------------------------
# Secondary Capture
# ---------------------------------------------------------------------------------------------
def test_secondary_capture(ct, tmp_path):
    img = (np.arange(128 * 128).reshape(128, 128) % 251).astype(np.uint8)
    out = write_secondary_capture(img, ct, tmp_path / "sub" / "sc.dcm")
    assert out == tmp_path / "sub" / "sc.dcm"
    ds = pydicom.dcmread(out)
    src = pydicom.dcmread(CT_SMALL)
    assert ds.SOPClassUID == SECONDARY_CAPTURE
    assert ds.file_meta.MediaStorageSOPClassUID == SECONDARY_CAPTURE
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert ds.SOPInstanceUID != src.SOPInstanceUID
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert ds.SourceImageSequence[0].ReferencedSOPClassUID == src.SOPClassUID
    assert "NOT FOR DIAGNOSTIC USE" in ds.ImageComments
    assert ds.ImageComments == LABEL
    assert ds.PatientID == src.PatientID  # copied into the output (not into logs)
    assert (ds.Rows, ds.Columns) == (128, 128)
    np.testing.assert_array_equal(ds.pixel_array, img)
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_secondary_capture_is_idempotent(ct, tmp_path):
    img = np.full((128, 128), 77, np.uint8)
    a = write_secondary_capture(img, ct, tmp_path / "a.dcm")
    b = write_secondary_capture(img, ct, tmp_path / "b.dcm")
    assert a.read_bytes() == b.read_bytes()
    write_secondary_capture(img, ct, a)  # overwrite in place
    assert a.read_bytes() == b.read_bytes()


def test_secondary_capture_rejects_3d(ct, tmp_path):
    from hxsched.errors import HxschedError

    with pytest.raises(HxschedError):
        write_secondary_capture(np.zeros((2, 8, 8), np.uint8), ct, tmp_path / "x.dcm")


def test_secondary_capture_with_empty_instance_number(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.InstanceNumber = None
    p = tmp_path / "noinst.dcm"
    ds.save_as(p)
    sl = read_slice(p)
    out = write_secondary_capture(np.zeros((128, 128), np.uint8), sl, tmp_path / "sc.dcm")
    assert pydicom.dcmread(out).InstanceNumber == 1


# ---------------------------------------------------------------------------------------------
# Phantom
# ---------------------------------------------------------------------------------------------
def test_phantom_round_trip(tmp_path):
    ph = synthetic_phantom(3, size=128)
    assert ph.is_hu and ph.pixels.shape == (128, 128)
    assert float(ph.pixels.min()) < -900 and float(ph.pixels.max()) > 900
    np.testing.assert_array_equal(ph.pixels, synthetic_phantom(3, size=128).pixels)
    p = tmp_path / ph.source_name
    p.write_bytes(encode_ct_dicom(ph))
    back = read_slice(p)
    assert back.kind == "dicom" and back.is_hu
    assert back.pixels.shape == ph.pixels.shape
    assert float(np.abs(back.pixels - ph.pixels).max()) <= 1.0
    assert back.meta["SOPInstanceUID"] == ph.meta["SOPInstanceUID"]
    assert back.meta["StudyInstanceUID"] == ph.meta["StudyInstanceUID"]


# ---------------------------------------------------------------------------------------------
# Harder malformed inputs: every corrupt file gets a reason, never a crash
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cut", [1234, 3001, 5000])
def test_header_cut_short_is_truncated(tmp_path, cut):
    p = tmp_path / f"cut{cut}.dcm"
    p.write_bytes(CT_SMALL.read_bytes()[:cut])  # ends inside or right after the header
    _bad(p, "truncated")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"0.661468\\0.661468", b"0.661s68\\0.661468"),  # PixelSpacing that is not a number
        (b"\x10\x00\x20\x00LO", b"\x10\x00\x20\x00\x4c\xc5"),  # PatientID with an unknown VR
    ],
)
def test_corrupt_header_is_unreadable(tmp_path, old, new):
    data = CT_SMALL.read_bytes()
    assert old in data
    p = tmp_path / "corrupt.dcm"
    p.write_bytes(data.replace(old, new, 1))  # the first: the top-level element
    _bad(p, "unreadable")


def test_multi_page_tiff(tmp_path):
    p = tmp_path / "stack.tiff"
    assert cv2.imwritemulti(str(p), [np.zeros((64, 64), np.uint16)] * 3)
    _bad(p, "wrong-size")


def test_png_too_large_is_refused(tmp_path):
    p = tmp_path / "wide.png"
    assert cv2.imwrite(str(p), np.zeros((40, 5000), np.uint8))
    exc = _bad(p, "decode-limit")  # refused from its IHDR, before decoding
    assert "5000" in str(exc)


def test_monochrome1_keeps_hu_but_inverts_other_images(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.PhotometricInterpretation = "MONOCHROME1"
    p = tmp_path / "m1.dcm"
    ds.save_as(p)
    np.testing.assert_array_equal(read_slice(p).pixels, read_slice(CT_SMALL).pixels)
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    mr.PhotometricInterpretation = "MONOCHROME1"
    mr.save_as(tmp_path / "mr1.dcm")
    m2 = read_slice(get_testdata_file("MR_small.dcm"), accept=ANY).pixels
    m1 = read_slice(tmp_path / "mr1.dcm", accept=ANY).pixels
    np.testing.assert_allclose(m1, m2.max() + m2.min() - m2)


def test_rescaled_non_ct_is_not_hu(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.Modality = "PT"  # rescaled, but not Hounsfield units
    p = tmp_path / "pt.dcm"
    ds.save_as(p)
    sl = read_slice(p, accept=ANY)
    assert not sl.is_hu
    assert sl.modality == "PT"


def test_modality(ct, tmp_path):
    assert ct.modality == "CT"
    p = tmp_path / "img.png"
    assert cv2.imwrite(str(p), np.zeros((64, 64), np.uint8))
    assert read_slice(p).modality == "OT"


# ---------------------------------------------------------------------------------------------
# Secondary Capture details
# ---------------------------------------------------------------------------------------------
def test_secondary_capture_keeps_accented_names_and_is_readable_by_others(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.PatientName = "Müller^Jürgen"
    p = tmp_path / "accents.dcm"
    ds.save_as(p)
    out = write_secondary_capture(np.zeros((128, 128), np.uint8), read_slice(p), tmp_path / "o")
    back = pydicom.dcmread(out)
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert str(back.PatientName) == "Müller^Jürgen"
    assert "Müller".encode() in out.read_bytes()  # UTF-8 on disk, as declared
    assert out.stat().st_mode & 0o777 == 0o644


def test_secondary_capture_module_attributes(ct, tmp_path):
    src = pydicom.dcmread(CT_SMALL)
    same = pydicom.dcmread(
        write_secondary_capture(np.zeros((128, 128), np.uint8), ct, tmp_path / "same.dcm")
    )
    assert same.BurnedInAnnotation == "NO"
    assert same.RecognizableVisualFeatures == "NO"
    assert same.ConversionType == "WSD" and same.Manufacturer == "hxsched"
    assert same.ReferencedImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    purpose = same.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0]
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("121322", "DCM")
    assert same.FrameOfReferenceUID == src.FrameOfReferenceUID  # same grid: linked series
    np.testing.assert_allclose(same.ImagePositionPatient, src.ImagePositionPatient, atol=1e-5)
    np.testing.assert_allclose(same.PixelSpacing, src.PixelSpacing, atol=1e-6)
    half = pydicom.dcmread(
        write_secondary_capture(np.zeros((64, 64), np.uint8), ct, tmp_path / "half.dcm")
    )
    np.testing.assert_allclose(half.PixelSpacing, [2 * float(v) for v in src.PixelSpacing])
    assert "FrameOfReferenceUID" not in half  # another grid: no claim of alignment


def test_secondary_capture_type2_attributes_present_for_phantom(tmp_path):
    ph = synthetic_phantom(1, size=64)
    ds = pydicom.dcmread(write_secondary_capture(np.zeros((64, 64), np.uint8), ph, tmp_path / "p"))
    for k in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "ReferringPhysicianName",
        "PatientOrientation",
    ):
        assert k in ds, k
    assert str(ds.PatientName) == "PHANTOM^HXSCHED"
    assert ds.StudyInstanceUID == ph.meta["StudyInstanceUID"]


def test_uids_keep_their_parts_apart():
    from hxsched.runtime.service.dicom_io import _uid

    assert _uid("ab", "c") != _uid("a", "bc")
    assert _uid("a", "b") == _uid("a", "b")


def test_secondary_capture_series_template_is_byte_identical(ct):
    """The per-series template (constant elements encoded once) writes the same bytes as a
    dataset built whole for every slice."""
    from hxsched.runtime.service.dicom_io import ScTemplates, encode_secondary_capture

    templates = ScTemplates()
    slices = [synthetic_phantom(k, size=64) for k in range(3)] + [ct]
    for k, sl in enumerate(slices):
        img = (np.random.default_rng(k).random(sl.pixels.shape) * 255).astype(np.uint8)
        kw = {"series_uid": "1.2.826.0.1.3680043.8.498.1", "series_number": 1002}
        whole = encode_secondary_capture(img, sl, **kw)
        assert encode_secondary_capture(img, sl, templates=templates, **kw) == whole
        assert pydicom.dcmread(io.BytesIO(whole)).SOPInstanceUID
    assert len(templates._by_key) == 2  # one per series (the phantom's and CT_small's)


def test_native_pixels_match_pydicom():
    from hxsched.runtime.service.dicom_io import _native_pixels

    ds = pydicom.dcmread(CT_SMALL)
    ts = ds.file_meta.TransferSyntaxUID
    got = _native_pixels(ds, ts, ds.Rows, ds.Columns, ds.BitsAllocated, 1)
    assert got is not None and np.array_equal(got, ds.pixel_array)
    ds.BitsStored = 12  # high bits beyond the stored ones: sign-extended from bit 11
    raw = np.frombuffer(ds.PixelData, "<i2")
    got = _native_pixels(ds, ts, ds.Rows, ds.Columns, 16, 1)
    assert np.array_equal(got.ravel(), ((raw << 4) >> 4))


@pytest.mark.parametrize("shape", [(128, 128), (63, 65), (64, 64)], ids=["same", "odd", "resized"])
def test_secondary_capture_bytes_written_directly_match_pydicom(ct, shape):
    """The per-slice elements written as bytes (no pydicom dataset per slice) are the bytes
    pydicom writes: UIDs of odd and even lengths, multi-digit instance numbers, position and
    orientation on the same grid, both reference sequences, an odd pixel count (padded)."""
    import dataclasses

    from hxsched.runtime.service.dicom_io import ScTemplates, encode_secondary_capture

    templates = ScTemplates()
    for k in range(4):
        sl = dataclasses.replace(ct, meta=dict(ct.meta))
        sl.meta["SOPInstanceUID"] = "1.2.3." + "4" * (k + 1)  # odd and even lengths
        sl.meta["InstanceNumber"] = str(10**k)
        sl.meta["ImagePositionPatient"] = [-125.5, 3.25 * k, 1e-7 * k]  # written on its grid
        img = (np.random.default_rng(k).random(shape) * 255).astype(np.uint8)
        kw = {"series_uid": "1.2.826.0.1.3680043.8.498.12", "series_number": 1001 + k % 2}
        whole = encode_secondary_capture(img, sl, **kw)
        fast = encode_secondary_capture(img, sl, templates=templates, **kw)
        assert fast == whole
        back = pydicom.dcmread(io.BytesIO(fast))
        np.testing.assert_array_equal(back.pixel_array, img)
        assert back.SourceImageSequence[0].ReferencedSOPInstanceUID == sl.meta["SOPInstanceUID"]
        assert back.InstanceNumber == 10**k


def test_content_sha_is_the_files_hash_computed_on_demand(tmp_path):
    import hashlib

    sl = read_slice(CT_SMALL)
    assert sl._sha == "" and sl.content is not None  # not hashed while nothing asks
    assert sl.content_sha == hashlib.sha256(CT_SMALL.read_bytes()).hexdigest()
    assert sl.content is None  # the bytes let go once hashed
    assert synthetic_phantom(0).content_sha == ""  # made in memory: no file


def test_integer_pixels_rescaled_past_float32_are_nan(tmp_path):
    """Integer pixels skip the NaN/inf scan only while their rescale stays inside float32: a
    slope that overflows it is still refused."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import hostile

    p = tmp_path / "huge.dcm"
    p.write_bytes(hostile.ct(RescaleSlope="1e38"))
    _bad(p, "nan")
    p.write_bytes(hostile.ct(RescaleSlope="1e30"))
    assert np.all(np.isfinite(read_slice(p).pixels))


def test_series_header_decoded_once_gives_what_a_fresh_read_gives(tmp_path):
    """Slices of one series reuse the decoded header of the one before (same raw bytes): the
    same meta, patient values and pixels as a read with nothing remembered; a changed
    element, another accept or other limits are decided afresh."""
    import sys

    from hxsched.runtime.service import dicom_io

    sys.path.insert(0, str(Path(__file__).parent))
    import hostile

    paths = []
    for k in range(3):
        paths.append(tmp_path / f"s{k}.dcm")
        paths[-1].write_bytes(hostile.ct(index=k))
    reused = [read_slice(p) for p in paths]
    assert dicom_io._SERIES.last is not None
    for p, got in zip(paths, reused, strict=True):
        dicom_io._SERIES.last = None
        fresh = read_slice(p)
        assert got.meta == fresh.meta and got.is_hu == fresh.is_hu
        assert {k: str(v) for k, v in got.patient.items()} == {
            k: str(v) for k, v in fresh.patient.items()
        }
        np.testing.assert_array_equal(got.pixels, fresh.pixels)
    assert reused[0].meta["SOPInstanceUID"] != reused[1].meta["SOPInstanceUID"]
    read_slice(paths[0])  # remembered, then refused under another accept or limits
    _bad(paths[1], "not-accepted", accept=Accept(modalities=("MR",)))
    read_slice(paths[0])
    _bad(paths[1], "decode-limit", limits=Limits(max_side=32))
    read_slice(paths[0])
    slope = tmp_path / "slope.dcm"
    slope.write_bytes(hostile.ct(index=1, RescaleSlope="2"))
    np.testing.assert_array_equal(read_slice(slope).pixels, 2 * reused[1].pixels)
