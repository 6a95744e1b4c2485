package dev.ordo.peer;

import java.nio.charset.StandardCharsets;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * One input record through the state machine: its new state to the store and the state topic,
 * or a dead letter (reason and source in headers, the original bytes as value) to the DLQ.
 */
final class ReservationProcessor implements Processor<byte[], byte[], byte[], byte[]> {
    static final String STORE = "reservations";
    static final String STATE_SINK = "state";
    static final String DLQ_SINK = "dlq";

    private final int partitions;
    private final Progress progress;
    private ProcessorContext<byte[], byte[]> context;
    private KeyValueStore<String, byte[]> store;

    ReservationProcessor(int partitions, Progress progress) {
        this.partitions = partitions;
        this.progress = progress;
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
        this.store = context.getStateStore(STORE);
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        RecordMetadata source = context.recordMetadata().orElseThrow();
        int partition = source.partition();
        long offset = source.offset();
        try {
            Event event = Events.decode(record.key(), record.value());
            int belongsTo = Math.abs(event.reservationNo().hashCode() % partitions);
            if (belongsTo != partition) {
                deadLetter(record, partition, offset, "misrouted", "key " + event.reservationNo()
                        + " belongs to partition " + belongsTo + " under abs-hash-mod-n, not " + partition);
            } else {
                byte[] current = store.get(event.reservationNo());
                StateMachine.Outcome outcome =
                        StateMachine.apply(current == null ? null : Entity.fromRecord(current), event);
                if (outcome.applied() != null) {
                    byte[] value = outcome.applied().toRecord(event.reservationNo(), partition, offset);
                    store.put(event.reservationNo(), value);
                    byte[] key = event.reservationNo().getBytes(StandardCharsets.UTF_8);
                    context.forward(new Record<>(key, value, record.timestamp()), STATE_SINK);
                } else if (outcome.rejected() != null) {
                    deadLetter(record, partition, offset, outcome.rejected(),
                            event.kind().wire + " rejected: " + outcome.rejected());
                }
            }
        } catch (Malformed m) {
            deadLetter(record, partition, offset, "malformed", m.getMessage());
        }
        progress.processed(partition, offset);
    }

    private void deadLetter(Record<byte[], byte[]> record, int partition, long offset, String reason, String error) {
        Headers headers = new RecordHeaders();
        headers.add("ordo.reason", reason.getBytes(StandardCharsets.UTF_8));
        headers.add("ordo.source.partition", Integer.toString(partition).getBytes(StandardCharsets.UTF_8));
        headers.add("ordo.source.offset", Long.toString(offset).getBytes(StandardCharsets.UTF_8));
        headers.add("ordo.error", error.getBytes(StandardCharsets.UTF_8));
        context.forward(new Record<>(record.key(), record.value(), record.timestamp(), headers), DLQ_SINK);
    }
}
