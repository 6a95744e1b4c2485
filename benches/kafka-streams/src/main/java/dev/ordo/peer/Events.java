package dev.ordo.peer;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * Decoding and validation of input events, as contract §1 states them: a JSON object whose
 * {@code type}, {@code event_id}, {@code reservation_no} and {@code user_id} are non-empty
 * strings of at most 128 characters, an optional string {@code target}, an optional integer
 * {@code ts}; a JSON {@code null} counts as absent, unknown fields are ignored, and a record
 * key, when there is one, must be the reservation number.
 */
final class Events {
    static final int MAX_ID_CHARS = 128;

    /** Strict JSON: a repeated field or anything after the object is not an event. */
    static final ObjectMapper JSON = JsonMapper.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .build();

    private Events() {}

    static Event decode(byte[] key, byte[] value) throws Malformed {
        JsonNode root = parse(value);
        if (!root.isObject()) {
            throw new Malformed("not a JSON object: expected `{`");
        }
        String type = required(root, "type");
        Event.Kind kind = Event.Kind.of(type);
        if (kind == null) {
            throw new Malformed("unknown event type `" + type + "`; use reservation, association or cancellation");
        }
        String eventId = required(root, "event_id");
        String reservationNo = required(root, "reservation_no");
        String userId = required(root, "user_id");
        String target = optional(root, "target");
        JsonNode ts = present(root, "ts");
        if (ts != null && !(ts.isIntegralNumber() && ts.canConvertToLong())) {
            throw new Malformed("field `ts` must be an integer");
        }
        if (key != null && key.length > 0
                && !Arrays.equals(key, reservationNo.getBytes(StandardCharsets.UTF_8))) {
            throw new Malformed("record key `" + new String(key, StandardCharsets.UTF_8)
                    + "` differs from reservation_no `" + reservationNo + "`");
        }
        return new Event(kind, eventId, reservationNo, userId,
                kind == Event.Kind.ASSOCIATION ? target : null);
    }

    private static JsonNode parse(byte[] value) throws Malformed {
        if (value == null || value.length == 0) {
            throw new Malformed("not valid JSON: an empty record");
        }
        try {
            JsonNode root = JSON.readTree(value);
            if (root == null || root.isMissingNode()) {
                throw new Malformed("not valid JSON: no value");
            }
            return root;
        } catch (JsonProcessingException e) {
            throw new Malformed("not valid JSON: " + e.getOriginalMessage());
        } catch (IOException e) {
            throw new Malformed("not valid JSON: " + e.getMessage());
        }
    }

    /** The field's value, or null when it is absent or JSON {@code null}. */
    private static JsonNode present(JsonNode root, String field) {
        JsonNode v = root.get(field);
        return v == null || v.isNull() ? null : v;
    }

    private static String required(JsonNode root, String field) throws Malformed {
        String s = optional(root, field);
        if (s == null) {
            throw new Malformed("missing required field `" + field + "`");
        }
        return s;
    }

    private static String optional(JsonNode root, String field) throws Malformed {
        JsonNode v = present(root, field);
        if (v == null) {
            return null;
        }
        if (!v.isTextual()) {
            throw new Malformed("field `" + field + "` must be a string, found " + v.getNodeType());
        }
        String s = v.textValue();
        if (s.isEmpty()) {
            throw new Malformed("field `" + field + "` is empty");
        }
        if (hasLoneSurrogate(s)) {
            throw new Malformed("not valid JSON: field `" + field + "` holds a lone surrogate");
        }
        int chars = s.codePointCount(0, s.length());
        if (chars > MAX_ID_CHARS) {
            throw new Malformed("field `" + field + "` is " + chars + " characters long; the limit is " + MAX_ID_CHARS);
        }
        return s;
    }

    /** JSON text is Unicode: an escaped half of a surrogate pair alone is not a character. */
    private static boolean hasLoneSurrogate(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                i++;
            } else if (Character.isSurrogate(c)) {
                return true;
            }
        }
        return false;
    }
}
