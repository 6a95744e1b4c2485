package dev.ordo.peer;

/** Why a record is not a valid event: it is dead-lettered with reason {@code malformed}. */
final class Malformed extends Exception {
    private static final long serialVersionUID = 1L;

    Malformed(String message) {
        // No stack trace: a malformed record is input, not a bug, and may be frequent.
        super(message, null, false, false);
    }
}
