package dev.ordo.peer;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.TopicConfig;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.state.Stores;

/**
 * The reservation workflow (contract §1–2) as a Kafka Streams application: the peer ordo is
 * measured against. Reads the input topic, keeps one state record per reservation in a
 * RocksDB store with a changelog, writes each new state to the state topic and each reject or
 * malformed record to the dead-letter topic. See README.md for the settings and why.
 *
 * <p>It prints one JSON line when it first reaches RUNNING and one when it stops. With
 * {@code --until-end} it stops once it has processed the input up to the end offsets it saw at
 * start; else on SIGTERM.
 */
public final class Peer {
    private Peer() {}

    static final class Usage extends Exception {
        private static final long serialVersionUID = 1L;

        Usage(String m) {
            super(m);
        }
    }

    /** The command line. */
    static final class Options {
        String brokers;
        String input = "reservation-events";
        String stateTopic;
        String dlqTopic;
        String applicationId;
        int partitions;
        int threads;
        String guarantee = "at-least-once";
        Long commitIntervalMs;
        String stateDir;
        long cacheBytes = 64L << 20;
        boolean untilEnd;
        final Map<String, String> extra = new HashMap<>();

        static Options parse(String[] args) throws Usage {
            Options o = new Options();
            for (int i = 0; i < args.length; i++) {
                String flag = args[i];
                if (flag.equals("--until-end")) {
                    o.untilEnd = true;
                    continue;
                }
                if (i + 1 == args.length) {
                    throw new Usage(flag + " needs a value");
                }
                String v = args[++i];
                switch (flag) {
                    case "--brokers" -> o.brokers = v;
                    case "--input" -> o.input = v;
                    case "--state-topic" -> o.stateTopic = v;
                    case "--dlq-topic" -> o.dlqTopic = v;
                    case "--application-id" -> o.applicationId = v;
                    case "--partitions" -> o.partitions = positive(flag, v);
                    case "--threads" -> o.threads = positive(flag, v);
                    case "--guarantee" -> {
                        if (!v.equals("at-least-once") && !v.equals("exactly-once")) {
                            throw new Usage("--guarantee is at-least-once or exactly-once, not " + v);
                        }
                        o.guarantee = v;
                    }
                    case "--commit-interval" -> o.commitIntervalMs = (long) positive(flag, v);
                    case "--state-dir" -> o.stateDir = v;
                    case "--cache-mib" -> o.cacheBytes = ((long) positive(flag, v)) << 20;
                    case "-X" -> {
                        int eq = v.indexOf('=');
                        if (eq <= 0) {
                            throw new Usage("-X takes key=value (a Kafka Streams, producer. or consumer. property), not " + v);
                        }
                        o.extra.put(v.substring(0, eq), v.substring(eq + 1));
                    }
                    default -> throw new Usage("unknown flag " + flag);
                }
            }
            if (o.brokers == null || o.partitions == 0 || o.applicationId == null || o.stateTopic == null
                    || o.dlqTopic == null || o.stateDir == null) {
                throw new Usage("--brokers, --partitions, --application-id, --state-topic, --dlq-topic and --state-dir are required");
            }
            if (o.threads == 0) {
                o.threads = o.partitions;
            }
            return o;
        }

        private static int positive(String flag, String v) throws Usage {
            try {
                int n = Integer.parseInt(v);
                if (n > 0) {
                    return n;
                }
            } catch (NumberFormatException e) {
                // reported below
            }
            throw new Usage(flag + " takes a positive integer, not " + v);
        }

        Properties streamsConfig() {
            Properties p = new Properties();
            p.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
            p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
            // One stream thread per partition: each task gets a thread, as ordo gives each
            // partition one.
            p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
            p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                    guarantee.equals("exactly-once") ? StreamsConfig.EXACTLY_ONCE_V2 : StreamsConfig.AT_LEAST_ONCE);
            if (commitIntervalMs != null) {
                p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, commitIntervalMs);
            }
            p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, cacheBytes);
            p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
            // Larger producer batches than the 16 KiB default: every input record makes an
            // output record, and the state topic and the store's changelog take most bytes.
            p.put(StreamsConfig.producerPrefix(ProducerConfig.BATCH_SIZE_CONFIG), 256 * 1024);
            p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), 5);
            // Only this topology's processor runs; the setting silences a warning per thread.
            p.put("processing.exception.handler.global.enabled", true);
            p.putAll(extra);
            return p;
        }
    }

    public static void main(String[] args) {
        Options o;
        try {
            o = Options.parse(args);
        } catch (Usage u) {
            System.err.println("kafka-streams-peer: " + u.getMessage());
            System.exit(2);
            return;
        }
        try {
            System.exit(run(o));
        } catch (Exception e) {
            System.err.println("kafka-streams-peer: " + e);
            System.exit(1);
        }
    }

    static int run(Options o) throws InterruptedException, ExecutionException {
        Map<Integer, Long> ends = new HashMap<>();
        Map<Integer, Long> from = new HashMap<>();
        prepare(o, ends, from);
        Progress progress = new Progress(o.partitions, ends, from);
        Topology topology = topology(o, progress);
        KafkaStreams streams = new KafkaStreams(topology, o.streamsConfig());
        CountDownLatch stop = new CountDownLatch(1);
        AtomicBoolean failed = new AtomicBoolean();
        AtomicBoolean running = new AtomicBoolean();
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.RUNNING && running.compareAndSet(false, true)) {
                line("running", "");
            }
            if (now == KafkaStreams.State.ERROR) {
                failed.set(true);
                stop.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("kafka-streams-peer: a stream thread failed: " + e);
            failed.set(true);
            stop.countDown();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        // SIGTERM: stop, and hold the JVM's exit until close() below has committed. The JVM
        // then exits with 143 (128 + SIGTERM), whatever main returns.
        CountDownLatch closedDown = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            stop.countDown();
            try {
                closedDown.await(90, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }));
        if (o.untilEnd) {
            Thread caughtUp = new Thread(() -> {
                try {
                    progress.awaitCaughtUp();
                    // Caught up on every partition, and RUNNING: nothing is left to restore.
                    while (!running.get() && stop.getCount() > 0) {
                        TimeUnit.MILLISECONDS.sleep(5);
                    }
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                stop.countDown();
            }, "until-end");
            caughtUp.setDaemon(true);
            caughtUp.start();
        }
        streams.start();
        stop.await();
        // close() commits what was processed (under exactly-once, the open transactions). It
        // leaves the group, as ordo does on exit: a member that stays in it (Kafka Streams'
        // default) holds its partitions until its session times out, 45 s, and the next start
        // of the same application waits that long.
        boolean closed = streams.close(CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
                .withTimeout(Duration.ofSeconds(60)));
        line("done", ",\"closed\":" + closed);
        closedDown.countDown();
        return failed.get() || !closed ? 1 : 0;
    }

    /**
     * Creates the output topics when they are missing (N partitions, the state topic compacted as
     * ordo's is) and, with {@code --until-end}, reads the end offsets of the input and where this
     * application's group resumes.
     */
    private static void prepare(Options o, Map<Integer, Long> ends, Map<Integer, Long> from)
            throws InterruptedException, ExecutionException {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, o.brokers);
        for (Map.Entry<String, String> e : o.extra.entrySet()) {
            if (e.getKey().startsWith("security.") || e.getKey().startsWith("ssl.") || e.getKey().startsWith("sasl.")) {
                p.put(e.getKey(), e.getValue());
            }
        }
        try (Admin admin = Admin.create(p)) {
            Set<String> existing = admin.listTopics().names().get();
            List<NewTopic> missing = new ArrayList<>();
            if (!existing.contains(o.stateTopic)) {
                missing.add(new NewTopic(o.stateTopic, Optional.of(o.partitions), Optional.empty())
                        .configs(Map.of(TopicConfig.CLEANUP_POLICY_CONFIG, TopicConfig.CLEANUP_POLICY_COMPACT)));
            }
            if (!existing.contains(o.dlqTopic)) {
                missing.add(new NewTopic(o.dlqTopic, Optional.of(o.partitions), Optional.empty()));
            }
            if (!missing.isEmpty()) {
                admin.createTopics(missing).all().get();
            }
            if (!o.untilEnd) {
                return;
            }
            Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < o.partitions; i++) {
                TopicPartition tp = new TopicPartition(o.input, i);
                tps.add(tp);
                latest.put(tp, OffsetSpec.latest());
            }
            Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> got =
                    admin.listOffsets(latest).all().get();
            got.forEach((tp, info) -> ends.put(tp.partition(), info.offset()));
            Map<TopicPartition, OffsetAndMetadata> committed =
                    admin.listConsumerGroupOffsets(o.applicationId).partitionsToOffsetAndMetadata().get();
            for (TopicPartition tp : tps) {
                OffsetAndMetadata c = committed.get(tp);
                if (c != null) {
                    from.put(tp.partition(), c.offset());
                }
            }
        }
    }

    static Topology topology(Options o, Progress progress) {
        Topology t = new Topology();
        t.addSource("events", new ByteArrayDeserializer(), new ByteArrayDeserializer(), o.input);
        t.addProcessor("reservations", () -> new ReservationProcessor(o.partitions, progress), "events");
        t.addStateStore(Stores.keyValueStoreBuilder(
                        Stores.persistentKeyValueStore(ReservationProcessor.STORE), Serdes.String(), Serdes.ByteArray())
                .withCachingEnabled(), "reservations");
        CoPartitioner partitioner = new CoPartitioner();
        t.addSink(ReservationProcessor.STATE_SINK, o.stateTopic, new ByteArraySerializer(), new ByteArraySerializer(),
                partitioner, "reservations");
        t.addSink(ReservationProcessor.DLQ_SINK, o.dlqTopic, new ByteArraySerializer(), new ByteArraySerializer(),
                partitioner, "reservations");
        return t;
    }

    private static void line(String event, String more) {
        System.out.println("{\"event\":\"" + event + "\",\"ms\":" + System.currentTimeMillis() + more + "}");
        System.out.flush();
    }
}
