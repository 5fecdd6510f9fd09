"""Copy the datasets from S3 to this node's default data folder.

Usage (a setup command in cluster/aws.yaml runs it on every node):
    python cluster/sync_data.py [--source s3://BUCKET/data] [--destination DIR]

The source defaults to s3://$HMLC_BUCKET/data and the destination to
~/.cache/hmlc/data, the folder that hmlc_core.data searches after --data-dir and
$HMLC_DATA_DIR. Upload the dataset folders there once, e.g.
`aws s3 sync ~/.cache/hmlc/data s3://BUCKET/data`. A missing source prefix is not
an error: the node then starts without datasets and logs a warning.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import pyarrow.fs

logger = logging.getLogger("hmlc.cluster.sync_data")

DEFAULT_DESTINATION = Path("~/.cache/hmlc/data")


def sync_datasets(source_uri: str, destination: Path) -> int:
    """Copy every file under source_uri into destination and return the number of files.

    Returns 0 without copying when source_uri does not exist.
    """
    filesystem, source_path = pyarrow.fs.FileSystem.from_uri(source_uri)
    selector = pyarrow.fs.FileSelector(source_path, recursive=True, allow_not_found=True)
    infos = filesystem.get_file_info(selector)
    files = [info for info in infos if info.type == pyarrow.fs.FileType.File]
    if not files:
        logger.warning(
            "No dataset files under %s, so this node starts without datasets", source_uri
        )
        return 0
    destination.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(
        source_path,
        str(destination),
        source_filesystem=filesystem,
        destination_filesystem=pyarrow.fs.LocalFileSystem(),
    )
    total_bytes = sum(info.size for info in files)
    logger.info(
        "Copied %d files (%d bytes) from %s to %s",
        len(files),
        total_bytes,
        source_uri,
        destination,
    )
    return len(files)


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        default=None,
        help="S3 URI of the data prefix (default: s3://$HMLC_BUCKET/data)",
    )
    parser.add_argument(
        "--destination",
        type=Path,
        default=DEFAULT_DESTINATION,
        help="local folder (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    source = args.source
    if source is None:
        bucket = os.environ.get("HMLC_BUCKET")
        if not bucket:
            logger.error("HMLC_BUCKET is not set. Set it or pass --source s3://BUCKET/data")
            return 2
        source = f"s3://{bucket}/data"
    sync_datasets(source, args.destination.expanduser())
    return 0


if __name__ == "__main__":
    sys.exit(main())
