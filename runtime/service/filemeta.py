"""The SOP Instance UID of a DICOM file from its file meta group alone, by a small bounded parser
(no pydicom on untrusted bytes in the service process): the journal's deduplication key."""

from __future__ import annotations

import os
import re
import struct

HEAD_BYTES = 4096  # (0002,0003) comes third in the group: far inside this for any real file
_PREAMBLE = 128
_MAGIC = b"DICM"
_MEDIA_SOP_INSTANCE = 0x0003  # (0002,0003) MediaStorageSOPInstanceUID, PS3.10 Table 7.1-1
# explicit VR with a reserved field and a 4-byte length (PS3.5 Section 7.1.2)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
_LONG_VRS |= {b"UV"}
_UID = re.compile(rb"[0-9]+(\.[0-9]+)*")  # PS3.5 Section 9.1, at most 64 characters


def sop_instance_uid(head: bytes) -> str | None:
    """(0002,0003) from the start of a DICOM file (preamble, "DICM", then the group 0002
    elements, always explicit VR little endian: PS3.10 Section 7.1), or None when there is no
    such file meta or no valid UID in it."""
    head = bytes(head[:HEAD_BYTES])
    if head[_PREAMBLE : _PREAMBLE + 4] != _MAGIC:
        return None
    off = _PREAMBLE + 4
    while off + 8 <= len(head):
        group, elem = struct.unpack_from("<HH", head, off)
        vr = head[off + 4 : off + 6]
        if group != 0x0002 or elem > _MEDIA_SOP_INSTANCE:
            return None  # past the element (the group is in ascending tag order)
        if vr in _LONG_VRS:
            if off + 12 > len(head):
                return None
            (length,) = struct.unpack_from("<L", head, off + 8)
            off += 12
        else:
            (length,) = struct.unpack_from("<H", head, off + 6)
            off += 8
        if elem == _MEDIA_SOP_INSTANCE:
            return _uid(head[off : off + length]) if off + length <= len(head) else None
        off += length
    return None


def _uid(value: bytes) -> str | None:
    text = value.rstrip(b"\x00 ")
    if not 0 < len(text) <= 64 or not _UID.fullmatch(text):
        return None
    return text.decode("ascii")


def file_key(path: str | os.PathLike[str]) -> str | None:
    """``sop_instance_uid`` of the file at ``path`` (reads at most HEAD_BYTES; never follows
    a symlink); None when unreadable or not a DICOM file with file meta."""
    try:
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except OSError:
        return None
    try:
        return sop_instance_uid(os.read(fd, HEAD_BYTES))
    except OSError:
        return None
    finally:
        os.close(fd)
