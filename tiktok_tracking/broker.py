"""A server-less Celery broker: kombu's filesystem transport, with atomic publishing and claiming.

kombu's ``filesystem://`` transport creates each message file under its final name and then
writes it, so a consumer listing the folder in between reads an empty file and the worker dies
with ``JSONDecodeError``; an exchange table is created the same way. Here every file appears
under its final name only once it is whole (written under a hidden name, then renamed, which
POSIX makes atomic), a consumer claims a message by renaming it into a folder of its own (only
one can win), and a file that still cannot be read is set aside with a warning instead of
stopping the worker. A claimed message stays on disk until it is acknowledged: a consumer that
closes puts back what it did not acknowledge, and the messages of one that was killed (its
folder's lock released by the kernel) go back to the queue the next time another consumer
looks. So a worker killed mid-task loses nothing, as with a broker server::

    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT = "tiktok_tracking.broker:FilesystemTransport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": ..., "data_folder_out": ...,
                                       "control_folder": ...}

Delivery is at least once, as Celery's ``acks_late`` expects: a task a killed worker had
finished but not yet acknowledged runs again.
"""

import logging
import os
import shutil
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic, monotonic_ns

from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

# What CELERY_BROKER_TRANSPORT names (checked by tiktok_tracking.W007).
TRANSPORT_PATH = "tiktok_tracking.broker:FilesystemTransport"

# Beside the messages, hidden from kombu's listing (it reads only "<stamp>.<queue>.msg").
WRITING = ".writing"
CLAIMED = ".claimed"
UNREADABLE = ".unreadable"
# In each consumer's claim folder: the file it holds locked while it lives.
LOCK_NAME = ".lock"
# How often a consumer looks for the claims of dead consumers, in seconds.
RECOVER_EVERY = 1.0


def publish_atomically(folder, name, data):
    """Write ``data`` to ``folder/name`` so that no reader ever sees the file partly written."""
    folder = Path(folder)
    staging = folder / WRITING
    staging.mkdir(exist_ok=True)
    partial = staging / f"{uuid.uuid4().hex}.{name}"
    with open(partial, "wb") as file:
        file.write(data)
    os.replace(partial, folder / name)


def create_atomically(path, data):
    """Create ``path`` holding ``data`` unless it exists; never visible half written."""
    path = Path(path)
    staging = path.parent / WRITING
    staging.mkdir(parents=True, exist_ok=True)
    partial = staging / f"{uuid.uuid4().hex}.{path.name}"
    partial.write_bytes(data)
    try:
        os.link(partial, path)  # fails, leaving the other's file whole, if it exists already
    except FileExistsError:
        pass
    finally:
        partial.unlink()


def message_name(queue):
    """A message file's name: the time orders the queue, the uuid makes it unique.

    kombu's names carry the time in milliseconds, so two messages of one millisecond come out in
    the order of their uuids. Nanoseconds of the system-wide monotonic clock, zero-padded so
    that the names sort as the numbers do, keep the order in which they were published.
    """
    return f"{monotonic_ns():020d}_{uuid.uuid4()}.{queue}.msg"


class ClaimFolder:
    """A consumer's folder of claimed messages, locked for as long as the consumer lives."""

    def __init__(self, claims):
        import fcntl

        self.claims = Path(claims)
        self.claims.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        # Locked before it gets its name, so no one ever finds it unlocked while we live.
        staging = self.claims / f".new-{token}"
        staging.mkdir()
        self._lock = open(staging / LOCK_NAME, "w")  # noqa: SIM115 - held until close()
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = self.claims / token
        os.rename(staging, self.path)

    def close(self, queue_folder):
        """Put back what is left in the folder, then release the lock and drop the folder."""
        if self._lock.closed:
            return
        for message in self.path.iterdir():
            if message.name != LOCK_NAME:
                os.rename(message, Path(queue_folder) / message.name)
        self._lock.close()
        shutil.rmtree(self.path, ignore_errors=True)


def recover_dead_claims(claims, queue_folder, own=None):
    """Put back the messages of every consumer whose claim folder is no longer locked (it died:
    the kernel releases a dead process's locks). Returns how many went back."""
    import fcntl

    claims = Path(claims)
    if not claims.is_dir():
        return 0
    returned = 0
    for folder in claims.iterdir():
        if folder.name.startswith(".") or folder == own:
            continue
        try:
            lock = open(folder / LOCK_NAME)  # noqa: SIM115 - closed below
        except OSError:
            continue  # being removed by its owner or another recoverer
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its consumer is alive
            for message in folder.iterdir():
                if message.name == LOCK_NAME:
                    continue
                try:
                    os.rename(message, Path(queue_folder) / message.name)
                except FileNotFoundError:
                    continue
                returned += 1
            shutil.rmtree(folder, ignore_errors=True)
    if returned:
        logger.warning("Put back %d broker message(s) claimed by a consumer that died", returned)
    return returned


class Channel(filesystem.Channel):
    """The filesystem channel with whole files only, and claims kept until acknowledged."""

    def __init__(self, *args, **kwargs):
        self._claim_folder = None
        # delivery_tag -> the claimed file of a message not yet acknowledged.
        self._claimed = {}
        self._no_ack_queues = set()
        self._recovered_at = None
        super().__init__(*args, **kwargs)

    def _put(self, queue, payload, **kwargs):
        publish_atomically(self.data_folder_out, message_name(queue), str_to_bytes(dumps(payload)))

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        # kombu creates a missing table by opening it for writing, so that a reader in between
        # reads an empty file: create it whole, empty, and let kombu add to it under its lock.
        exchange_file = self.control_folder / f"{exchange}.exchange"
        if not exchange_file.exists():
            create_atomically(exchange_file, str_to_bytes(dumps([])))
        super()._queue_bind(exchange, routing_key, pattern, queue)

    def _claims(self):
        return Path(self.data_folder_in) / CLAIMED

    def _recover(self):
        now = monotonic()
        if self._recovered_at is not None and now - self._recovered_at < RECOVER_EVERY:
            return
        self._recovered_at = now
        own = self._claim_folder.path if self._claim_folder else None
        recover_dead_claims(self._claims(), self.data_folder_in, own=own)

    def _get(self, queue):
        self._recover()
        if self._claim_folder is None:
            self._claim_folder = ClaimFolder(self._claims())
        folder = Path(self.data_folder_in)
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(folder)):
            if name.partition(".")[2] != wanted:
                continue
            mine = self._claim_folder.path / name
            try:
                os.rename(folder / name, mine)
            except FileNotFoundError:
                continue  # another consumer claimed it first
            data = mine.read_bytes()
            try:
                payload = loads(bytes_to_str(data))
            except ValueError:
                self._set_aside(folder, mine)
                continue
            tag = (payload.get("properties") or {}).get("delivery_tag")
            if queue in self._no_ack_queues or tag is None:
                self._done(mine, name)
            else:
                self._claimed[tag] = mine
            return payload
        raise Empty()

    def _done(self, claimed, name=None):
        """A message acknowledged (or never to be): kept if STORE_PROCESSED, else removed."""
        try:
            if self.store_processed:
                os.replace(claimed, Path(self.processed_folder) / (name or claimed.name))
            else:
                claimed.unlink()
        except FileNotFoundError:
            pass

    def _forget(self, delivery_tag):
        claimed = self._claimed.pop(delivery_tag, None)
        if claimed is not None:
            self._done(claimed)

    def basic_consume(self, queue, no_ack, callback, consumer_tag, **kwargs):
        if no_ack:
            # Nothing will acknowledge these: a claim is done once read.
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_get(self, queue, no_ack=False, **kwargs):
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self._forget(message.delivery_tag)
        return message

    def basic_ack(self, delivery_tag, multiple=False):
        super().basic_ack(delivery_tag, multiple=multiple)
        self._forget(delivery_tag)

    def basic_reject(self, delivery_tag, requeue=False):
        # With requeue, _restore below has put the claimed file back already.
        super().basic_reject(delivery_tag, requeue=requeue)
        self._forget(delivery_tag)

    def _restore(self, message):
        """Put an unacknowledged message back where it was, at its place in the queue."""
        claimed = self._claimed.pop(message.delivery_tag, None)
        if claimed is not None:
            try:
                os.rename(claimed, Path(self.data_folder_in) / claimed.name)
                return
            except FileNotFoundError:
                pass
        super()._restore(message)

    def close(self):
        super().close()  # puts back what was not acknowledged, through _restore
        if self._claim_folder is not None:
            self._claim_folder.close(self.data_folder_in)

    @staticmethod
    def _set_aside(folder, path):
        """Keep an unreadable message for a person to look at, out of the queue."""
        unreadable = folder / UNREADABLE
        unreadable.mkdir(exist_ok=True)
        os.replace(path, unreadable / path.name)
        logger.warning(
            "Broker message %s could not be read (%d bytes) and was moved to %s",
            path.name,
            (unreadable / path.name).stat().st_size,
            unreadable,
        )


class FilesystemTransport(filesystem.Transport):
    """kombu's filesystem transport with :class:`Channel`."""

    Channel = Channel
