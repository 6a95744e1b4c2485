#!/usr/bin/env python3
"""Follows ordo's output topics the way a downstream service should.

reservation-state is a changelog, not a plain "latest value per key" topic. Besides state
records it holds ordo's own records, and an owner that was replaced (a zombie) may have
written records that ordo's readers ignore. This consumer applies the same rules:

* keys that begin with "__ordo." are ordo's own: an epoch marker ("__ordo.epoch/<n>") raises
  the partition's fence to its epoch; a position mark ("__ordo.position/...") is ordo's
  bookkeeping and is skipped;
* a record without a value (a tombstone) deletes its reservation;
* a state record whose "epoch" is below the partition's fence was written by a replaced owner
  (a zombie) after its successor started: skip it;
* an epoch at or above 2**53 was not written by ordo: skip the record.

Run with --guarantee exactly-once deployments as well: with isolation.level=read_committed
(the default here) aborted transactions never reach the consumer, and the fence rule costs
nothing. The dead-letter topic is read with its headers; a repeat after a crash (at-least-once)
has the same ordo.source.partition and ordo.source.offset, which this consumer uses to drop it.

Usage:
  follow_state.py --brokers HOST:PORT [--topic-prefix P] [--until-idle] [--dead-letters]

With --until-idle it reads every partition to its end and prints the view, one state record
per reservation (NDJSON, sorted by reservation), or with --dead-letters one line per dead
letter; without it, it follows the topic and prints each change as it happens.
"""

import argparse
import json
import sys

from confluent_kafka import Consumer, KafkaError, TopicPartition

EPOCH_LIMIT = 2**53
MARKER = "__ordo.epoch/"
OWN = "__ordo."


class StateView:
    """The current state of every reservation, folded as ordo folds its changelog."""

    def __init__(self):
        self.states = {}  # reservation_no -> state record
        self.fence = {}  # partition -> highest epoch marker seen

    def apply(self, partition, key, value):
        """Folds one record; returns the change it made, or None."""
        key = key.decode() if key else ""
        if key.startswith(MARKER):
            epoch = json.loads(value)["epoch_marker"]["epoch"]
            if epoch < EPOCH_LIMIT:
                self.fence[partition] = max(self.fence.get(partition, 0), epoch)
            return None
        if key.startswith(OWN):
            return None  # a position mark: ordo's own bookkeeping
        if not value:
            return ("deleted", self.states.pop(key, None))
        record = json.loads(value)
        epoch = record.get("epoch", 0)
        if epoch >= EPOCH_LIMIT or epoch < self.fence.get(partition, 0):
            return None  # fenced: a replaced owner's write
        self.states[key] = record
        return ("state", record)


def consumer(brokers, isolation):
    return Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": "ordo-example-consumer",  # never joined: partitions are assigned
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
            "auto.offset.reset": "earliest",
        }
    )


def read(brokers, topic, isolation, until_idle, on_record):
    """Reads every partition of topic from its beginning; stops at the ends with until_idle."""
    c = consumer(brokers, isolation)
    meta = c.list_topics(topic, timeout=10).topics[topic]
    if meta.error is not None:
        sys.exit(f"follow_state: {topic}: {meta.error}")
    partitions = sorted(meta.partitions)
    c.assign([TopicPartition(topic, p, 0) for p in partitions])
    at_end = set()
    try:
        while not (until_idle and at_end == set(partitions)):
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                    continue
                sys.exit(f"follow_state: {m.error()}")
            at_end.discard(m.partition())
            on_record(m)
    finally:
        c.close()


def main():
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a.add_argument("--brokers", required=True)
    a.add_argument("--topic-prefix", default="")
    a.add_argument("--isolation", default="read_committed")
    a.add_argument("--until-idle", action="store_true")
    a.add_argument("--dead-letters", action="store_true")
    args = a.parse_args()

    if args.dead_letters:
        seen = set()
        lines = []

        def dead_letter(m):
            headers = {k: v.decode() for k, v in (m.headers() or [])}
            source = (headers["ordo.source.partition"], headers["ordo.source.offset"])
            if source in seen:
                return  # the same dead letter again, after a crash
            seen.add(source)
            line = {
                "reason": headers["ordo.reason"],
                "error": headers.get("ordo.error"),
                "source_partition": int(source[0]),
                "source_offset": int(source[1]),
                "key": (m.key() or b"").decode(errors="replace"),
                "value": (m.value() or b"").decode(errors="replace"),
            }
            if args.until_idle:
                lines.append(line)
            else:
                print(json.dumps(line), flush=True)

        read(args.brokers, args.topic_prefix + "reservation-events.dlq", args.isolation,
             args.until_idle, dead_letter)
        for line in sorted(lines, key=lambda l: (l["source_partition"], l["source_offset"])):
            print(json.dumps(line))
        return

    view = StateView()

    def state(m):
        change = view.apply(m.partition(), m.key(), m.value())
        if change is not None and not args.until_idle:
            print(json.dumps({"change": change[0], "record": change[1]}), flush=True)

    read(args.brokers, args.topic_prefix + "reservation-state", args.isolation,
         args.until_idle, state)
    if args.until_idle:
        for key in sorted(view.states):
            print(json.dumps(view.states[key]))


if __name__ == "__main__":
    main()
