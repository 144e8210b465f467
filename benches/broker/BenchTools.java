import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.stream.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Helpers for benches/broker/run.sh, run on Kafka's own jars (compiled by run.sh with javac).
 *
 * <pre>
 * BenchTools watch BOOTSTRAP GROUP INPUT SLACK INTERVAL_MS TIMEOUT_S
 *     prints "ready ..." and then "input_done EPOCH_MS" once GROUP has committed the end offset of every
 *     INPUT partition (polled every INTERVAL_MS by one Admin client; a JVM per poll would cost a core), then
 *     "all_done EPOCH_MS" once every partition of every other topic the group commits (its repartition
 *     topics) is committed up to its end offset less SLACK (1 under exactly-once: the last transaction's
 *     commit marker is never consumed).
 * BenchTools maxts BOOTSTRAP TOPIC
 *     prints the largest record timestamp of TOPIC (epoch ms).
 * BenchTools dump BOOTSTRAP TOPIC
 *     prints every committed record of TOPIC (read_committed, from the beginning to the end offsets) as
 *     "KEY\tVALUE" lines (UTF-8; tabs and newlines inside are not expected in these JSON values).
 * </pre>
 */
public class BenchTools {
    public static void main(String[] a) throws Exception {
        switch (a[0]) {
            case "watch" -> watch(a[1], a[2], a[3], Long.parseLong(a[4]), Long.parseLong(a[5]), Long.parseLong(a[6]));
            case "dump" -> dump(a[1], a[2]);
            case "maxts" -> maxts(a[1], a[2]);
            default -> throw new IllegalArgumentException(a[0]);
        }
    }

    static Properties admin(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("request.timeout.ms", "15000");
        p.put("default.api.timeout.ms", "20000");
        return p;
    }

    static void watch(String bootstrap, String group, String input, long slack, long interval, long timeoutS)
            throws Exception {
        long deadline = System.currentTimeMillis() + timeoutS * 1000;
        try (Admin admin = Admin.create(admin(bootstrap))) {
            TopicDescription d = admin.describeTopics(List.of(input)).allTopicNames().get().get(input);
            List<TopicPartition> tps = d.partitions().stream().map(i -> new TopicPartition(input, i.partition()))
                .collect(Collectors.toList());
            Map<TopicPartition, OffsetSpec> q = new HashMap<>();
            for (TopicPartition tp : tps) q.put(tp, OffsetSpec.latest());
            Map<TopicPartition, Long> end = new HashMap<>();
            admin.listOffsets(q).all().get().forEach((k, v) -> end.put(k, v.offset()));
            committed(admin, group);
            System.out.println("ready " + System.currentTimeMillis() + " input_end "
                + end.values().stream().mapToLong(Long::longValue).sum());
            long lastProgress = 0;
            while (System.currentTimeMillis() < deadline) {
                Map<TopicPartition, OffsetAndMetadata> c = committed(admin, group);
                long t = System.currentTimeMillis();
                boolean done = true;
                long at = 0;
                for (Map.Entry<TopicPartition, Long> e : end.entrySet()) {
                    OffsetAndMetadata m = c.get(e.getKey());
                    long o = m == null ? 0 : m.offset();
                    at += o;
                    if (o < e.getValue()) done = false;
                }
                if (done) {
                    System.out.println("input_done " + t);
                    drained(admin, group, input, slack, interval, deadline);
                    return;
                }
                if (t - lastProgress >= 5000) {
                    System.out.println("progress " + t + " input_committed " + at);
                    lastProgress = t;
                }
                Thread.sleep(interval);
            }
            System.out.println("timeout " + System.currentTimeMillis());
            System.exit(2);
        }
    }

    static void drained(Admin admin, String group, String input, long slack, long interval, long deadline)
            throws Exception {
        while (System.currentTimeMillis() < deadline) {
            Map<TopicPartition, OffsetAndMetadata> c = committed(admin, group);
            long t = System.currentTimeMillis();
            Set<String> topics = c.keySet().stream().map(TopicPartition::topic).filter(x -> !x.equals(input))
                .collect(Collectors.toSet());
            if (!topics.isEmpty()) {
                Map<TopicPartition, OffsetSpec> q = new HashMap<>();
                admin.describeTopics(topics).allTopicNames().get().forEach((name, d) ->
                    d.partitions().forEach(i -> q.put(new TopicPartition(name, i.partition()), OffsetSpec.latest())));
                boolean done = true;
                for (Map.Entry<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> e
                        : admin.listOffsets(q).all().get().entrySet()) {
                    long end = e.getValue().offset();
                    OffsetAndMetadata m = c.get(e.getKey());
                    long at = m == null ? 0 : m.offset();
                    if (end > 0 && at < end - slack) done = false;
                }
                if (done) {
                    System.out.println("all_done " + t + " topics " + topics);
                    return;
                }
            }
            Thread.sleep(interval);
        }
        System.out.println("timeout " + System.currentTimeMillis());
        System.exit(2);
    }

    static void maxts(String bootstrap, String topic) throws Exception {
        try (Admin admin = Admin.create(admin(bootstrap))) {
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            Map<TopicPartition, OffsetSpec> q = new HashMap<>();
            d.partitions().forEach(i -> q.put(new TopicPartition(topic, i.partition()), OffsetSpec.maxTimestamp()));
            long max = -1;
            for (ListOffsetsResult.ListOffsetsResultInfo r : admin.listOffsets(q).all().get().values()) {
                max = Math.max(max, r.timestamp());
            }
            System.out.println(max);
        }
    }

    static Map<TopicPartition, OffsetAndMetadata> committed(Admin admin, String group) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> out = new HashMap<>();
        admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
            .forEach((k, v) -> { if (v != null) out.put(k, v); });
        return out;
    }

    static void dump(String bootstrap, String topic) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("isolation.level", "read_committed");
        p.put("enable.auto.commit", "false");
        p.put("key.deserializer", ByteArrayDeserializer.class.getName());
        p.put("value.deserializer", ByteArrayDeserializer.class.getName());
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            List<TopicPartition> tps = c.partitionsFor(topic, Duration.ofSeconds(20)).stream()
                .map(i -> new TopicPartition(topic, i.partition())).collect(Collectors.toList());
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps); // last stable offsets under read_committed
            long deadline = System.currentTimeMillis() + 120_000;
            StringBuilder b = new StringBuilder();
            while (System.currentTimeMillis() < deadline) {
                boolean done = true;
                for (TopicPartition tp : tps) if (c.position(tp) < end.get(tp)) done = false;
                if (done) break;
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                    b.setLength(0);
                    b.append(r.key() == null ? "" : new String(r.key(), StandardCharsets.UTF_8)).append('\t')
                        .append(r.value() == null ? "" : new String(r.value(), StandardCharsets.UTF_8));
                    System.out.println(b);
                }
            }
        }
    }
}
