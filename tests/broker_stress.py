"""Publisher and consumer processes for the filesystem broker's stress test.

    python -m tests.broker_stress publish FOLDER TRANSPORT TAG COUNT
    python -m tests.broker_stress consume FOLDER TRANSPORT RECEIVED_FILE

The consumer appends each message's id to RECEIVED_FILE (one line, flushed) before it acks, and
runs until it is killed or an error ends it (its traceback then goes to stderr).
"""

import sys
from pathlib import Path

from kombu import Connection

from tiktok_tracking.broker import TRANSPORT_PATH

QUEUE = "stress"
KOMBU_TRANSPORT = "filesystem"
APP_TRANSPORT = TRANSPORT_PATH


def connection(folder, transport):
    folder = Path(folder)
    return Connection(
        transport=transport,
        transport_options={
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),
        },
    )


def publish(folder, transport, tag, count):
    with connection(folder, transport) as conn:
        queue = conn.SimpleQueue(QUEUE)
        for i in range(count):
            queue.put({"id": f"{tag}-{i}", "padding": "x" * 2000})
        queue.close()


def consume(folder, transport, received_file):
    with connection(folder, transport) as conn, open(received_file, "a") as received:
        queue = conn.SimpleQueue(QUEUE)
        while True:
            try:
                message = queue.get(timeout=0.5)
            except queue.Empty:
                continue
            received.write(message.payload["id"] + "\n")
            received.flush()
            message.ack()


if __name__ == "__main__":
    command, folder, transport, *rest = sys.argv[1:]
    if command == "publish":
        publish(folder, transport, rest[0], int(rest[1]))
    elif command == "consume":
        consume(folder, transport, rest[0])
    else:
        sys.exit(f"unknown command {command!r}")
