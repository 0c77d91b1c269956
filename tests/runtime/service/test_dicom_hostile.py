"""read_slice under hostile bytes: sizes refused before any allocation, non-CT objects and
nonsense headers refused by kind, and no value of the file in a reason, a warning or stderr."""

from __future__ import annotations

import logging
import os
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from hxsched.runtime.service.dicom_io import BadInput, read_slice
from hxsched.runtime.service.pipeline import Accept, Limits

sys.path.insert(0, str(Path(__file__).parent))
import hostile  # noqa: E402

SMALL_INFLATE = Limits(max_inflated_bytes=1 << 20)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _refused(path: Path, reason: str, **kw) -> str:
    with pytest.raises(BadInput) as info:
        read_slice(path, **kw)
    text = str(info.value)
    assert info.value.reason == reason, text
    assert path.name in text and "\n" not in text
    for s in hostile.SENTINELS:
        assert s not in text, (s, text)
    return text


def _peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 1e6


@pytest.mark.parametrize("case", hostile.CASES, ids=lambda c: c.name)
def test_every_hostile_class_has_its_disposition_and_no_value_in_its_reason(tmp_path, case):
    # a small inflate limit only makes the deflate bomb quick to refuse: same disposition
    p = _write(tmp_path, case.name + case.suffix, case.make())
    _refused(p, case.reason, limits=SMALL_INFLATE)


@pytest.mark.parametrize(
    "make",
    [
        hostile.rle_bomb,
        hostile.jpeg_bomb,
        hostile.png_bomb,
        hostile.tiff_bomb,
        lambda: hostile.header_lie("Rows", 60000),
        lambda: hostile.header_lie("NumberOfFrames", 100000),
        lambda: hostile.header_lie("SamplesPerPixel", 65535),
        lambda: hostile.ct(Rows=4096, Columns=4096, NumberOfFrames=2),
    ],
    ids=["rle", "jpeg", "png", "tiff", "rows", "frames", "samples", "frames-x-pixels"],
)
def test_bombs_are_refused_before_allocating(tmp_path, make):
    p = _write(tmp_path, "bomb.bin", make())
    peak = _peak_mb(lambda: _refused(p, "decode-limit", limits=Limits(max_frames=2)))
    assert peak < 50, f"{peak:.0f} MB allocated before refusing"


def test_deflate_bomb_is_refused_while_inflating_bounded(tmp_path):
    data = hostile.deflate_bomb(inflated=64 << 20)
    assert len(data) < 1 << 20
    p = _write(tmp_path, "deflate.dcm", data)
    peak = _peak_mb(lambda: _refused(p, "decode-limit", limits=SMALL_INFLATE))
    assert peak < 50, f"{peak:.0f} MB allocated before refusing"


def test_deflate_bomb_past_the_default_limit(tmp_path):
    p = _write(tmp_path, "deflate300.dcm", hostile.deflate_bomb(inflated=300 << 20))
    assert p.stat().st_size < 1 << 20
    _refused(p, "decode-limit")  # inflating in bounded pieces, kept by none (peak: above)


def test_deflated_good_slice_reads_like_the_plain_one(tmp_path):
    plain = read_slice(_write(tmp_path, "plain.dcm", hostile.good_ct()))
    sl = read_slice(_write(tmp_path, "deflated.dcm", hostile.deflated_ct()), limits=SMALL_INFLATE)
    assert sl.is_hu and sl.meta["SOPInstanceUID"] == plain.meta["SOPInstanceUID"]
    np.testing.assert_array_equal(sl.pixels, plain.pixels)


def test_a_bomb_without_preamble_is_still_a_decode_limit(tmp_path):
    data = hostile.header_lie("Rows", 60000)[132:]  # no preamble, no "DICM"
    _refused(_write(tmp_path, "bare.dcm", data), "decode-limit")


def test_good_images_read_and_images_can_be_refused(tmp_path):
    for name, data in (("g.png", hostile.good_png()), ("g.tiff", hostile.good_tiff())):
        p = _write(tmp_path, name, data)
        assert read_slice(p).pixels.shape == (64, 64)
        text = _refused(p, "not-accepted", accept=Accept(images=False))
        assert "PNG/TIFF" in text


def test_image_dimensions_over_the_pixel_budget(tmp_path):
    p = _write(tmp_path, "wide.png", hostile.png_bomb(4000, 4000))  # sides fine, pixels not
    _refused(p, "decode-limit", limits=Limits(max_pixels=1 << 20))
    assert os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"]  # OpenCV's own bound, set before decoding


# ---------------------------------------------------------------------------------------------
# DICOM semantics
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "named"),
    [("MR", "modality MR"), ("US", "modality US"), ("SC", "modality OT"), ("SEG", "modality SEG")],
)
def test_non_ct_objects_are_not_accepted_by_their_coded_value(tmp_path, kind, named):
    text = _refused(_write(tmp_path, f"{kind}.dcm", hostile.other_object(kind)), "not-accepted")
    assert f"{named} is not accepted" in text


def test_sop_class_is_named_by_its_keyword(tmp_path):
    mr_sop = "1.2.840.10008.5.1.4.1.1.4"
    p = _write(tmp_path, "ct-mr.dcm", hostile.ct(SOPClassUID=mr_sop))
    text = _refused(p, "not-accepted")
    assert "SOP class MRImageStorage" in text and mr_sop not in text


@pytest.mark.parametrize(
    ("attrs", "named"),
    [
        ({"Modality": "PIDSENT"}, "modality an unrecognised modality"),
        ({"SOPClassUID": "1.2.826.0.1.3680043.8.498.4417"}, "SOP class an unrecognised one"),
        ({"PhotometricInterpretation": "ZQX"}, "photometric an unrecognised interpretation"),
        ({"PhotometricInterpretation": "RGB"}, "photometric RGB"),
    ],
)
def test_unrecognised_values_are_never_quoted(tmp_path, attrs, named):
    text = _refused(_write(tmp_path, "odd.dcm", hostile.ct(**attrs)), "not-accepted")
    assert named in text
    for v in attrs.values():
        if v != "RGB":
            assert v not in text


def test_ybr_full_422_is_refused_by_photometric_not_called_truncated(tmp_path):
    text = _refused(_write(tmp_path, "ybr.dcm", hostile.ybr_full_422()), "not-accepted")
    assert "photometric YBR_FULL_422" in text


@pytest.mark.parametrize("image_attrs", [False, True])
def test_header_only_ct_is_not_an_image(tmp_path, image_attrs):
    p = _write(tmp_path, "hdr.dcm", hostile.header_only_ct(image_attrs))
    assert "no pixel data" in _refused(p, "not-an-image")


@pytest.mark.parametrize(
    "attrs",
    [
        {"RescaleSlope": "0"},
        {"RescaleSlope": "0.0"},
        {"Rows": 0},
        {"Columns": 0},
        {"BitsAllocated": 12, "BitsStored": 12, "HighBit": 11},
        {"BitsAllocated": 1, "BitsStored": 1, "HighBit": 0},
        {"PixelRepresentation": 2},
        {"BitsStored": 24},
        {"NumberOfFrames": 0},
        {"SamplesPerPixel": 0},
        {"RescaleSlope": ["1", "2"]},
    ],
)
def test_nonsense_headers_are_bad_header(tmp_path, attrs):
    _refused(_write(tmp_path, "bad.dcm", hostile.ct(**attrs)), "bad-header")


def test_rescale_slope_missing_means_one(tmp_path):
    sl = read_slice(_write(tmp_path, "noslope.dcm", hostile.ct(RescaleSlope=None)))
    ref = read_slice(_write(tmp_path, "ref.dcm", hostile.good_ct()))
    np.testing.assert_array_equal(sl.pixels, ref.pixels)


def test_rescale_slope_two_is_applied(tmp_path):
    sl = read_slice(_write(tmp_path, "slope2.dcm", hostile.ct(RescaleSlope="2")))
    ref = read_slice(_write(tmp_path, "ref.dcm", hostile.good_ct()))
    np.testing.assert_array_equal(sl.pixels, 2 * ref.pixels)


# ---------------------------------------------------------------------------------------------
# No value of the file anywhere: reasons, warnings, stderr, log records
# ---------------------------------------------------------------------------------------------
def test_parser_messages_are_not_quoted(tmp_path):
    data = hostile.good_ct()
    assert data.count(b"0.5\\0.5") == 1
    p = _write(tmp_path, "spacing.dcm", data.replace(b"0.5\\0.5", b"q8z\\0.5"))
    text = _refused(p, "unreadable")
    assert "q8z" not in text and "ValueError" in text


def test_an_unrecognised_transfer_syntax_is_not_quoted(tmp_path):
    data = hostile.good_ct()
    ts = b"1.2.840.10008.1.2.1\0"  # Explicit VR Little Endian, padded to even length
    assert data.count(ts) == 1
    p = _write(tmp_path, "private-ts.dcm", data.replace(ts, b"1.2.826.0.1.4417.1\0\0"))
    text = _refused(p, "unsupported")
    assert "4417" not in text and "unrecognised transfer syntax" in text


def test_reading_invalid_da_and_cs_values_is_silent(tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    filters = list(warnings.filters)
    paths = [_write(tmp_path, "good.dcm", hostile.good_ct())]
    paths += [_write(tmp_path, c.name + c.suffix, c.make()) for c in hostile.CASES[:20]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sl = read_slice(paths[0])
        for p in paths[1:]:
            with pytest.raises(BadInput):
                read_slice(p, limits=SMALL_INFLATE)
    assert str(sl.patient["PatientBirthDate"]) == "1961-02-03"  # still copied to the output
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    said = "\n".join(str(w.message) for w in caught)
    for s in hostile.SENTINELS:
        assert s not in out + err + logged + said, s
    assert not caught, said
    assert "Invalid value" not in err + logged
    assert warnings.filters == filters  # the suppression does not outlive the read


def test_writing_the_output_of_a_file_with_invalid_values_is_silent(tmp_path, capfd):
    from hxsched.runtime.service.dicom_io import ScTemplates, encode_secondary_capture

    sl = read_slice(_write(tmp_path, "good.dcm", hostile.good_ct()))
    img = np.zeros((64, 64), np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        whole = encode_secondary_capture(img, sl)
        templates = ScTemplates()
        for _ in range(2):
            assert encode_secondary_capture(img, sl, templates=templates) == whole
    out, err = capfd.readouterr()
    said = "\n".join(str(w.message) for w in caught) + out + err
    assert not caught and "1961-02-03" not in said and "female" not in said, said
    assert b"1961-02-03" in whole and b"female" in whole  # copied into the output as they were
