package dev.ordo.peer;

import java.util.ArrayList;
import java.util.List;

/** Contract §2: apply(state, event) → outcome. Pure. */
final class StateMachine {
    private StateMachine() {}

    /** What applying an event did: exactly one of the three is set. */
    record Outcome(Entity applied, boolean duplicate, String rejected) {
        static Outcome applied(Entity e) {
            return new Outcome(e, false, null);
        }

        static final Outcome DUPLICATE = new Outcome(null, true, null);

        static Outcome rejected(String reason) {
            return new Outcome(null, false, reason);
        }
    }

    static Outcome apply(Entity state, Event event) {
        if (state != null && state.appliedEventIds().contains(event.eventId())) {
            return Outcome.DUPLICATE;
        }
        if (state == null) {
            if (event.kind() != Event.Kind.RESERVATION) {
                return Outcome.rejected("not_reserved");
            }
            return Outcome.applied(new Entity(event.userId(), Entity.Status.RESERVED, null, 1,
                    List.of(event.eventId())));
        }
        Entity.Status next;
        switch (state.status()) {
            case RESERVED -> {
                if (event.kind() == Event.Kind.RESERVATION) {
                    return Outcome.rejected("already_reserved");
                }
                if (!state.userId().equals(event.userId())) {
                    return Outcome.rejected("user_mismatch");
                }
                next = event.kind() == Event.Kind.ASSOCIATION ? Entity.Status.ASSOCIATED : Entity.Status.CANCELLED;
            }
            case ASSOCIATED -> {
                return Outcome.rejected("already_associated");
            }
            case CANCELLED -> {
                return Outcome.rejected("cancelled");
            }
            default -> throw new IllegalStateException("unknown state " + state.status());
        }
        List<String> ids = new ArrayList<>(state.appliedEventIds().size() + 1);
        ids.addAll(state.appliedEventIds());
        ids.add(event.eventId());
        String target = event.kind() == Event.Kind.ASSOCIATION ? event.target() : state.target();
        return Outcome.applied(new Entity(state.userId(), next, target, state.version() + 1, ids));
    }
}
