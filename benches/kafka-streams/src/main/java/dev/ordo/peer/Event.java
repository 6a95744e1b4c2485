package dev.ordo.peer;

/** A validated input event (contract §1). {@code target} is kept for associations only. */
record Event(Kind kind, String eventId, String reservationNo, String userId, String target) {

    /** What an event asks for, by its wire name. */
    enum Kind {
        RESERVATION("reservation"),
        ASSOCIATION("association"),
        CANCELLATION("cancellation");

        final String wire;

        Kind(String wire) {
            this.wire = wire;
        }

        static Kind of(String wire) {
            for (Kind k : values()) {
                if (k.wire.equals(wire)) {
                    return k;
                }
            }
            return null;
        }
    }
}
