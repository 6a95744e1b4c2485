package dev.ordo.peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/**
 * One reservation's state (contract §2), kept in the store as the JSON state record that is also
 * written to the output topic: the fields of ordo's {@code reservation-state} records, with
 * epoch 0 (Kafka Streams fences through its transactional producers, not through epochs).
 */
record Entity(String userId, Status status, String target, int version, List<String> appliedEventIds) {

    enum Status {
        RESERVED("reserved"),
        ASSOCIATED("associated"),
        CANCELLED("cancelled");

        final String wire;

        Status(String wire) {
            this.wire = wire;
        }

        static Status of(String wire) {
            for (Status s : values()) {
                if (s.wire.equals(wire)) {
                    return s;
                }
            }
            throw new IllegalArgumentException("unknown state " + wire);
        }
    }

    byte[] toRecord(String reservationNo, int sourcePartition, long sourceOffset) {
        ObjectNode o = Events.JSON.createObjectNode();
        o.put("reservation_no", reservationNo);
        o.put("user_id", userId);
        o.put("state", status.wire);
        o.put("target", target);
        o.put("version", version);
        ArrayNode ids = o.putArray("applied_event_ids");
        appliedEventIds.forEach(ids::add);
        o.put("source_partition", sourcePartition);
        o.put("source_offset", sourceOffset);
        o.put("epoch", 0);
        try {
            return Events.JSON.writeValueAsBytes(o);
        } catch (IOException e) {
            throw new IllegalStateException("a state record always serialises", e);
        }
    }

    static Entity fromRecord(byte[] bytes) {
        try {
            JsonNode o = Events.JSON.readTree(bytes);
            List<String> ids = new ArrayList<>(3);
            o.get("applied_event_ids").forEach(id -> ids.add(id.textValue()));
            JsonNode target = o.get("target");
            return new Entity(o.get("user_id").textValue(), Status.of(o.get("state").textValue()),
                    target == null || target.isNull() ? null : target.textValue(),
                    o.get("version").intValue(), ids);
        } catch (IOException e) {
            throw new IllegalStateException("the store holds only state records it wrote", e);
        }
    }
}
