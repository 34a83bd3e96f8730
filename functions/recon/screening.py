"""What is refused before a settlement file is parsed: too large a file, or a compressed one.

Both are decided without reading the body: the size from the S3 notification and HeadObject, the format from
the first bytes alone (a ranged GET). We never decompress, so a compression bomb never expands.
"""

from __future__ import annotations

from typing import Any

from functions.recon.errors import CompressedFile, OversizedFile
from functions.shared import aws

# Leading bytes of the archive and compression formats (whatever the key's extension says).
COMPRESSED_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"PK\x03\x04": "zip",
    b"PK\x05\x06": "zip",
    b"PK\x07\x08": "zip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"7z\xbc\xaf\x27\x1c": "7z",
}
HEAD_BYTES = max(len(magic) for magic in COMPRESSED_MAGIC)


def check_size(size: int, limit: int, source: str) -> None:
    """Raise OversizedFile when `size` (bytes, as `source` tells it) passes `limit`."""
    if size > limit:
        raise OversizedFile(f"the file has {size} bytes ({source}), more than the {limit} a run reads; "
                            "ask the PSP for shorter report intervals")


def compression_of(head: bytes) -> str | None:
    return next((name for magic, name in COMPRESSED_MAGIC.items() if head.startswith(magic)), None)


def screen(bucket: str, key: str, notified_size: int | None, limit: int) -> str:
    """Refuse the object before any parse; return the ETag of the version that was screened, for the reads that
    follow (IfMatch), so a key overwritten in between fails rather than slip a file past the checks."""
    if notified_size is not None:
        check_size(notified_size, limit, "S3 notification")
    s3: Any = aws.client("s3")
    head = s3.head_object(Bucket=bucket, Key=key)
    check_size(int(head["ContentLength"]), limit, "HeadObject")
    if head["ContentLength"]:
        first = s3.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"], Range=f"bytes=0-{HEAD_BYTES - 1}")
        kind = compression_of(first["Body"].read())
        if kind:
            raise CompressedFile(f"a {kind} file: compressed settlement files are not read (never decompressed)")
    return str(head["ETag"])
