package dev.ordo.peer;

import java.nio.charset.StandardCharsets;
import java.util.Optional;
import java.util.Set;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.streams.processor.StreamPartitioner;

/**
 * Output partition = input partition, as ordo lays out its state and dead letters: a state
 * record goes to abs-hash-mod-N of its key (which is the partition it came from), a dead letter
 * to the partition its {@code ordo.source.partition} header names.
 */
final class CoPartitioner implements StreamPartitioner<byte[], byte[]> {
    /** Still abstract in 4.4 though marked for removal; the headers variant below is used. */
    @Override
    @SuppressWarnings("removal")
    public Optional<Set<Integer>> partitions(String topic, byte[] key, byte[] value, int numPartitions) {
        return byKey(key, numPartitions);
    }

    @Override
    public Optional<Set<Integer>> partitions(String topic, byte[] key, byte[] value, Headers headers, int numPartitions) {
        Header source = headers == null ? null : headers.lastHeader("ordo.source.partition");
        if (source != null) {
            int p = Integer.parseInt(new String(source.value(), StandardCharsets.UTF_8));
            return Optional.of(Set.of(p % numPartitions));
        }
        return byKey(key, numPartitions);
    }

    private static Optional<Set<Integer>> byKey(byte[] key, int numPartitions) {
        if (key == null) {
            return Optional.of(Set.of(0));
        }
        String k = new String(key, StandardCharsets.UTF_8);
        return Optional.of(Set.of(Math.abs(k.hashCode() % numPartitions)));
    }
}
