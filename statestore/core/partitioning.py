"""Which Kafka partition a state's events go to, as Dapr's Kafka publisher picks it.

Dapr's pubsub.kafka hashes a message's ``partitionKey`` with sarama's hash partitioner:
32-bit FNV-1a of the key's bytes, taken as a signed int32, modulo the partition count,
sign dropped. (Java clients use murmur2: the mapping agrees among Dapr publishers only.)
The publisher packs each message with one partition's events and gives it the state key
of its first event as partitionKey, so every event of a state lands on the partition its
own key hashes to, and so reaches the one replica that owns that partition.
"""

from __future__ import annotations

__all__ = ["partition_for", "topic_partitions", "UNPARTITIONED_PUBSUB_TYPES"]

# Pub/sub component types whose topics have no partitions: Redis Streams is one stream per
# topic, read by one consumer group, so a message's partition key means nothing there.
UNPARTITIONED_PUBSUB_TYPES = frozenset({"pubsub.redis", "pubsub.in-memory"})

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def partition_for(key: str, partitions: int) -> int:
    """The partition (0 .. partitions-1) sarama's hash partitioner picks for ``key``."""
    h = _FNV_OFFSET
    for byte in key.encode():
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    signed = h - (1 << 32) if h & 0x80000000 else h
    partition = int(abs(signed) % partitions)  # Go's % keeps the dividend's sign; sarama then negates
    return partition


def topic_partitions(component_type: str | None, configured: int) -> int:
    """The partitions to pack a topic's messages by: 1 (pack regardless) on a pub/sub
    type without partitions, else ``configured`` (STATESTORE_PARTITIONS; also when the
    type is not known). Splitting a batch by partitions on Redis only made smaller
    messages: fewer events per delivery, so fewer events per state write."""
    return 1 if component_type in UNPARTITIONED_PUBSUB_TYPES else configured
