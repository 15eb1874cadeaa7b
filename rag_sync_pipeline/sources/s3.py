"""The `s3` source: the objects of S3 buckets, or of S3-compatible stores (MinIO, Ceph, R2), as documents.

Partitions are buckets, written `bucket` or, when a prefix is configured, `bucket/prefix`. The partition key
alone says what to list, so a partition keeps meaning the same objects if the configuration changes later, and
a run for it needs nothing but its key.

Change detection is one paginated ListObjectsV2 per partition (one call per 1,000 keys), which names every live
object with its ETag. The ETag exactly as listed, quotes and multipart `-N` suffix included, is the version
token, compared as an opaque string: it is not an MD5 of the content for multipart or KMS-encrypted objects.
The partition mark is a hash of the sorted (key, ETag) pairs the source indexes, so the sensor's probe is that
same listing, and a change to an object the source skips requests no run. The listing is complete, so
deletions are found on every sync. An object re-uploaded with the same bytes gets a new ETag and is fetched
once; the raw stage's content hash then finds it unchanged and nothing downstream is redone, which is why the
ETag is the document's version (and row column), not part of its metadata.

Objects that are never fetched, reported per reason in `Listing.skipped`: folder keys (ending in `/`), keys
whose extension is not a format the markdown stage converts, empty objects, archived objects (GLACIER,
DEEP_ARCHIVE: a GET fails until restored) and objects over the size cap.

The boto3 client comes ready from defs/ (dagster-aws's S3Resource), with its credentials from boto3's usual
chain; nothing here reads, logs or reports a credential, and errors carry S3's code and message only.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from rag_sync_pipeline.identity import sha256_hex
from rag_sync_pipeline.sources.base import DocumentError, DocumentRef, Listing, PartitionError, RawDocument, Source

DEFAULT_MAX_OBJECT_BYTES = 50_000_000
EXTENSION_TYPES = {
    ".md": "text/markdown", ".markdown": "text/markdown", ".txt": "text/plain", ".text": "text/plain",
    ".html": "text/html", ".htm": "text/html", ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".json": "application/json", ".csv": "text/csv", ".tsv": "text/tab-separated-values",
}
SUPPORTED_TYPES = frozenset(EXTENSION_TYPES.values()) | {"text/x-markdown", "application/xhtml+xml"}
ARCHIVED_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
CREDENTIAL_ERRORS = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                               "TokenRefreshRequired", "InvalidClientTokenId", "AuthorizationHeaderMalformed"})
ACCESS_ERRORS = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem"})
MISSING_OBJECT_ERRORS = frozenset({"NoSuchKey", "404", "NotFound"})
MAX_EXTENSION_REASONS = 10
"""Distinct `unsupported type (.ext)` reasons kept per listing; rotated logs (`app.log.1`, ...) would
otherwise give one reason per file."""


@dataclass(frozen=True)
class ListedObject:
    """What the listing says of one object the source indexes."""

    key: str
    etag: str
    size: int
    last_modified: str


def split_partition(partition: str) -> tuple[str, str]:
    """(bucket, prefix) of a partition key; the prefix is '' or ends with '/'."""
    bucket, _, prefix = partition.partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def partition_key(bucket: str, prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{bucket}/{prefix}" if prefix else bucket


def content_type_for(key: str, declared: str | None = None) -> str | None:
    """The object's own Content-Type when it names a supported format, else the key's extension's, else None.

    Uploaders often leave the default `binary/octet-stream` (or `application/octet-stream`), so only a
    specific, supported type overrides the extension.
    """
    if declared and declared.split(";")[0].strip().lower() in SUPPORTED_TYPES:
        return declared
    return EXTENSION_TYPES.get(PurePosixPath(key).suffix.lower())


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _error_code(error: ClientError) -> tuple[str, str]:
    details = error.response.get("Error", {})
    return str(details.get("Code", "Unknown")), str(details.get("Message", "")).strip()


class S3Source(Source):
    type = "s3"
    external = True
    default_interval_seconds = 300

    def __init__(self, name: str, client: Any, buckets: list[str], prefix: str = "",
                 max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES) -> None:
        super().__init__(name)
        self.client = client
        self._count_lock = threading.Lock()  # the raw stage fetches on several threads
        self.buckets = list(dict.fromkeys(buckets))
        self.prefix = prefix.strip("/")
        self.max_object_bytes = max_object_bytes
        self._listed: dict[str, dict[str, ListedObject]] = {}

    # -- configuration ------------------------------------------------------------------------------------

    secret_options = {"access_key_id_env": "", "secret_access_key_env": "", "session_token_env": ""}

    @classmethod
    def options_from_environment(cls, environ: Mapping[str, str]) -> dict[str, Any] | None:
        """S3_SYNC_BUCKET (comma-separated), S3_SYNC_PREFIX, S3_ENDPOINT_URL, AWS_REGION, S3_SYNC_MAX_OBJECT_BYTES.

        Credentials are not options: boto3 reads them from its usual chain (AWS_ACCESS_KEY_ID /
        AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE, an instance or pod role) when a run builds its
        client.
        """
        buckets = [b.strip() for b in environ.get("S3_SYNC_BUCKET", "").split(",") if b.strip()]
        if not buckets:
            return None
        options: dict[str, Any] = {"buckets": buckets}
        for option, variable in (("prefix", "S3_SYNC_PREFIX"), ("endpoint_url", "S3_ENDPOINT_URL"),
                                 ("region", "AWS_REGION"), ("max_object_bytes", "S3_SYNC_MAX_OBJECT_BYTES")):
            value = environ.get(variable, "").strip()
            if value:
                options[option] = value
        if "region" not in options and environ.get("AWS_DEFAULT_REGION", "").strip():
            options["region"] = environ["AWS_DEFAULT_REGION"].strip()
        cls._check_options("s3", options, "S3_SYNC_BUCKET", "S3_SYNC_MAX_OBJECT_BYTES")
        return options

    @staticmethod
    def _buckets(options: Mapping[str, Any]) -> list[str]:
        value = options.get("buckets", options.get("bucket", []))
        items = value.split(",") if isinstance(value, str) else list(value)
        return [str(b).strip() for b in items if str(b).strip()]

    @classmethod
    def _check_options(cls, name: str, options: Mapping[str, Any], buckets_setting: str = "buckets",
                       size_setting: str = "max_object_bytes") -> int:
        from rag_sync_pipeline.settings import ConfigurationError

        buckets = cls._buckets(options)
        if not buckets:
            raise ConfigurationError(f"s3 source {name!r}: {buckets_setting} names no bucket")
        bad = [b for b in buckets if "/" in b]
        if bad:
            raise ConfigurationError(f"s3 source {name!r}: {buckets_setting} holds {bad[0]!r}; a bucket name has "
                                     "no '/' (set the prefix separately)")
        size = options.get("max_object_bytes", DEFAULT_MAX_OBJECT_BYTES)
        try:
            limit = int(size)
        except (TypeError, ValueError):
            raise ConfigurationError(f"s3 source {name!r}: {size_setting} must be a whole number of bytes, "
                                     f"got {size!r}") from None
        if limit <= 0:
            raise ConfigurationError(f"s3 source {name!r}: {size_setting} must be positive, got {limit}")
        return limit

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any], environ: Mapping[str, str],
                     client: Any = None) -> S3Source:
        if client is None:
            raise ValueError(f"s3 source {name!r} needs a boto3 S3 client (built in defs/clients.py)")
        limit = cls._check_options(name, options)
        return cls(name, client, cls._buckets(options), prefix=str(options.get("prefix") or ""),
                   max_object_bytes=limit)

    # -- the protocol -------------------------------------------------------------------------------------

    def partitions(self) -> list[str]:
        """The configured buckets, no call made: whether each exists is the probe's to find out."""
        return [partition_key(bucket, self.prefix) for bucket in self.buckets]

    def list_documents(self, partition: str, since_mark: str | None) -> Listing:
        objects, skipped = self._list(partition)
        self._listed[partition] = objects
        refs = [DocumentRef(doc_id, listed.etag) for doc_id, listed in sorted(objects.items())]
        mark = sha256_hex(*(part for ref in refs for part in (ref.doc_id, ref.version)))
        return Listing(refs=refs, complete=True, mark=mark, skipped=skipped)

    def probe(self, partition: str, committed_mark: str | None) -> str:
        return self.list_documents(partition, committed_mark).mark

    def fetch(self, partition: str, ref: DocumentRef) -> RawDocument:
        bucket, prefix = split_partition(partition)
        key = prefix + ref.doc_id
        name = self.describe(partition, ref.doc_id)
        with self._count_lock:
            self.api_calls += 1
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            raise self._fetch_error(bucket, name, error) from None
        except BotoCoreError as error:
            raise PartitionError(f"{self._where(bucket)}: {error}") from None
        body = response["Body"]
        size = int(response.get("ContentLength") or 0)
        try:
            if size > self.max_object_bytes:
                raise DocumentError(f"{name}: {size} bytes is over the {self.max_object_bytes}-byte limit "
                                    "(it grew after the listing)", permanent=True)
            content = body.read()
        except (BotoCoreError, OSError) as error:
            raise DocumentError(f"{name}: reading the object failed: {error}") from None
        finally:
            body.close()
        content_type = content_type_for(key, response.get("ContentType"))
        if content_type is None:  # the listing skips such keys; only a hand-made ref gets here
            raise DocumentError(f"{name}: unsupported type {response.get('ContentType')!r}", permanent=True)
        listed = self._listed.get(partition, {}).get(ref.doc_id)
        modified = listed.last_modified if listed else _iso(response["LastModified"])
        return RawDocument(
            doc_id=ref.doc_id,
            version=response.get("ETag") or ref.version,
            content=content,
            content_type=content_type,
            title="",  # taken from the document itself in the markdown stage
            url=f"s3://{bucket}/{key}",
            path=[bucket, *(part for part in key.split("/")[:-1] if part)],
            last_modified=modified,
            metadata={"bucket": bucket, "key": key, "size": len(content), "content_type": content_type},
        )

    def describe(self, partition: str, doc_id: str) -> str:
        bucket, prefix = split_partition(partition)
        return f"s3 object s3://{bucket}/{prefix}{doc_id}"

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()

    # -- listing and errors -------------------------------------------------------------------------------

    def _skip_reason(self, key: str, item: Mapping[str, Any], unsupported: set[str]) -> str | None:
        if key.endswith("/"):
            return "folder key"
        if content_type_for(key) is None:
            extension = PurePosixPath(key).suffix.lower() or "no extension"
            if extension not in unsupported and len(unsupported) >= MAX_EXTENSION_REASONS:
                extension = "other"
            unsupported.add(extension)
            return f"unsupported type ({extension})"
        size = int(item.get("Size") or 0)
        if size == 0:
            return "empty object"
        storage_class = str(item.get("StorageClass") or "")
        if storage_class in ARCHIVED_STORAGE_CLASSES:
            return f"archived ({storage_class})"
        if size > self.max_object_bytes:
            return f"larger than {self.max_object_bytes} bytes"
        return None

    def _list(self, partition: str) -> tuple[dict[str, ListedObject], dict[str, int]]:
        """Every object under the partition's prefix, in one paginated ListObjectsV2, split into kept / skipped."""
        bucket, prefix = split_partition(partition)
        objects: dict[str, ListedObject] = {}
        skipped: Counter[str] = Counter()
        unsupported: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                self.api_calls += 1
                for item in page.get("Contents", []):
                    key = item["Key"]
                    reason = self._skip_reason(key, item, unsupported)
                    if reason:
                        skipped[reason] += 1
                        continue
                    modified = _iso(item["LastModified"])
                    etag = item.get("ETag") or f"size={item['Size']};modified={modified}"
                    objects[key[len(prefix):]] = ListedObject(key, etag, int(item["Size"]), modified)
        except ClientError as error:
            raise self._listing_error(bucket, error) from None
        except NoCredentialsError:
            raise PartitionError(f"{self._where(bucket)}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                                 "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the process a role)") from None
        except BotoCoreError as error:
            raise PartitionError(f"{self._where(bucket)}: listing failed: {error}") from None
        return objects, dict(skipped)

    def _where(self, bucket: str) -> str:
        endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", "") or ""
        at = f" at {endpoint}" if endpoint and "amazonaws.com" not in endpoint else ""
        return f"s3 source {self.name!r}: bucket {bucket!r}{at}"

    def _listing_error(self, bucket: str, error: ClientError) -> PartitionError:
        code, message = _error_code(error)
        where = self._where(bucket)
        if code == "NoSuchBucket":
            return PartitionError(f"{where} does not exist")
        if code in CREDENTIAL_ERRORS:
            return PartitionError(f"{where}: credentials refused ({code}: {message})")
        if code in ACCESS_ERRORS:
            return PartitionError(f"{where}: access denied to list objects ({code}: {message}); the "
                                  "credentials need s3:ListBucket on it")
        return PartitionError(f"{where}: listing failed ({code}: {message})")

    def _fetch_error(self, bucket: str, name: str, error: ClientError) -> Exception:
        """One object's failure is a DocumentError; a bucket or credentials gone mid-run fail the partition."""
        code, message = _error_code(error)
        if code in MISSING_OBJECT_ERRORS:
            return DocumentError(f"{name}: deleted while syncing", permanent=True)
        if code == "NoSuchBucket" or code in CREDENTIAL_ERRORS:
            return self._listing_error(bucket, error)
        if code == "InvalidObjectState":
            return DocumentError(f"{name}: archived; restore it to sync it ({message})", permanent=True)
        return DocumentError(f"{name}: GetObject failed ({code}: {message})")
