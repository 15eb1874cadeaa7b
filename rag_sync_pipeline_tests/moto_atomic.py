"""moto's S3 server handling one request at a time, so a conditional PUT is atomic as it is on S3.

moto (5.2.5, the newest release; pinned in pyproject) answers `If-None-Match: *` and `If-Match` on PutObject
with 412 when the condition fails, but its threaded server checks the condition and stores the object as two
steps, so two concurrent conditional PUTs of one key can both succeed (test_lancedb_object_store shows it with
large bodies). LanceDB commits a table version with exactly such a PUT, so the S3 tests run moto's own
application behind one lock: the check and the write of a request then happen with no other request between.

Run as `python -m rag_sync_pipeline_tests.moto_atomic -H 127.0.0.1 -p PORT` (the arguments of moto.server).
"""

from __future__ import annotations

import argparse
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def one_request_at_a_time(app):
    lock = threading.Lock()

    def serialized(environ, start_response):
        with lock:
            return list(app(environ, start_response))  # the whole body is produced while the lock is held

    return serialized


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, one_request_at_a_time(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
