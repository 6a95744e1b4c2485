package dev.ordo.peer;

import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * How far each input partition is processed, against the input's end offsets when the peer
 * started ({@code --until-end}): {@link #caughtUp} opens once every partition has reached
 * its end.
 */
final class Progress {
    private final long[] ends;
    private final AtomicLongArray next;
    private final CountDownLatch caughtUp;

    /** {@code ends}: end offset per partition; {@code from}: where each one starts. */
    Progress(int partitions, Map<Integer, Long> ends, Map<Integer, Long> from) {
        this.ends = new long[partitions];
        this.next = new AtomicLongArray(partitions);
        int behind = 0;
        for (int p = 0; p < partitions; p++) {
            this.ends[p] = ends.getOrDefault(p, 0L);
            this.next.set(p, from.getOrDefault(p, 0L));
            if (this.next.get(p) < this.ends[p]) {
                behind++;
            }
        }
        this.caughtUp = new CountDownLatch(behind);
    }

    void processed(int partition, long offset) {
        long before = next.getAndAccumulate(partition, offset + 1, Math::max);
        if (before < ends[partition] && offset + 1 >= ends[partition]) {
            caughtUp.countDown();
        }
    }

    void awaitCaughtUp() throws InterruptedException {
        caughtUp.await();
    }
}
