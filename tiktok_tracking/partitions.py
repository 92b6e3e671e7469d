"""Connection settings that bound how long a process stays on a link that went silent.

Plain values, importable from a settings module: a shop adds them to its ``DATABASES`` and
``CELERY_BROKER_TRANSPORT_OPTIONS``. docs/deployment.md ("Network partitions") works them out
against ``LEASE_SECONDS`` (120 s), and tests/faults/test_partition.py measures them.
"""

# libpq's connection parameters (psycopg passes DATABASES' OPTIONS to it): a connection attempt
# gives up after 5 s; a statement whose bytes go unacknowledged for 20 s fails
# (tcp_user_timeout, in ms); a wait for an answer on a silent link fails too: keepalive probes
# from 10 s idle, every 5 s, 3 unanswered. Without them the kernel's defaults apply: some
# 15 minutes of retransmissions (tcp_retries2 = 15), the first probe after 2 h idle.
POSTGRES_OPTIONS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20000,
}

# kombu's Redis transport: a command on a dead link fails after 10 s (kombu's default: never),
# a connection attempt after 5 s, and a consumer whose BRPOP reply is overdue is dropped and
# reconnected within about 1 + 2 x 10 s (health_check_interval; kombu's default 25 gives 51 s).
REDIS_TRANSPORT_OPTIONS = {
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "health_check_interval": 10,
}

# RabbitMQ (CELERY_BROKER_HEARTBEAT): a link that carries no heartbeat for two of them is
# dead, so 10 s notices within about 20 s (Celery's default, 120, within about 4 minutes).
AMQP_HEARTBEAT = 10
