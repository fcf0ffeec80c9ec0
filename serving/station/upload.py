"""An uploaded bundle archive, unpacked defensively: plain files and folders only, inside one folder, size-limited.

Refused: links and devices, absolute names and ``..``, more than :data:`MAX_MEMBERS` entries, more than
``max_bytes`` of data, and extension headers (long names, pax records, which tarfile reads whole into
memory) over :data:`MAX_HEADER`. Each refusal is a :class:`~serving.errors.BundleError` that says what to send.

>>> extract_plain_files(open("bundle.tar.gz", "rb"), Path("staging/x"), 512 << 20)  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path
from typing import BinaryIO

from serving.errors import BundleError

MAX_MEMBERS = 20_000  #: an upload with more entries is refused (a bundle has a few hundred)
MAX_HEADER = 64 * 1024  #: tar extension headers (long names, pax records) larger than this are refused


class _BoundedInfo(tarfile.TarInfo):
    """A tar member whose extension headers (read whole into memory by tarfile) are size-limited."""

    def _proc_member(self, tarfile_):  # tarfile's own hook, called with the header's size before its data is read
        if self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) \
                and self.size > MAX_HEADER:
            raise tarfile.HeaderError(f"an extension header of {self.size} bytes (limit {MAX_HEADER})")
        return super()._proc_member(tarfile_)


def extract_plain_files(stream: BinaryIO, dest: Path, max_bytes: int) -> None:
    """Unpack a (gzipped) tar stream of a bundle folder into ``dest``; refuse anything but plain files and folders.
    The caller removes ``dest`` if this raises."""
    try:
        with tarfile.open(fileobj=stream, mode="r|*", tarinfo=_BoundedInfo) as tar:
            total = 0
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise BundleError(f"upload: more than {MAX_MEMBERS} entries; not a bundle")
                parts = [x for x in Path(member.name).parts if x != "."]
                if Path(member.name).is_absolute() or ".." in parts:
                    raise BundleError(f"upload: member {member.name!r} leaves the bundle folder; refused")
                if not parts:
                    continue
                name = "/".join(parts)
                if member.isdir():
                    (dest / name).mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise BundleError(f"upload: member {member.name!r} is a link or device; bundles hold plain "
                                      "files only")
                total += member.size
                if total > max_bytes:
                    raise BundleError(f"upload: larger than bundles.max_upload_mb ({max_bytes / 2**20:.0f} MB)")
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as fh:
                    shutil.copyfileobj(tar.extractfile(member), fh, 1 << 20)
    except (tarfile.TarError, EOFError, ValueError, UnicodeError) as exc:
        raise BundleError(f"upload: not a tar archive of a bundle folder ({exc}); send `tar -czf - -C BUNDLE .`") from None
