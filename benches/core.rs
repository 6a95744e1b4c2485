//! The pure core on one thread: decode + route + apply, no I/O.
//! `cargo bench --bench core`; the figure in the README is events/s from `thrpt`.

/// The allocator the `ordo` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ordo::core::Epoch;
use ordo::core::event::ReservationNo;
use ordo::core::partitioner::{Partition, PartitionCount, Partitioner};
use ordo::core::step::{Input, Processor, States, Step};

/// Runs the workload through `processor` once: the states and how many events applied.
fn run_once(processor: &Processor, lines: &[(Vec<u8>, Vec<u8>)]) -> (States, u64) {
    // The map the owners use.
    let mut state = States::with_capacity_and_hasher(lines.len(), Default::default());
    let mut applied = 0u64;
    for (offset, (key, value)) in lines.iter().enumerate() {
        if let Step::Applied { key, stored, .. } = processor.step(
            Input::of(key, value, &[]),
            ordo::core::Offset(offset as u64),
            &state,
        ) {
            state.insert(key, stored);
            applied += 1;
        }
    }
    (state, applied)
}

/// Checks, once and outside the timed loop, that what the loop computes is what the reference
/// model applies: the same reservations, each with its state, user, target and applied ids.
fn check_against_the_reference_model(
    processor: &Processor,
    events: &[ordo::core::event::Event],
    lines: &[(Vec<u8>, Vec<u8>)],
) {
    let model = ordo::core::reference::Model::run(events);
    let (state, applied) = run_once(processor, lines);
    assert_eq!(applied, model.applied, "events applied");
    assert_eq!(state.len(), model.states.len(), "reservations");
    for (no, want) in &model.states {
        let got = &state[&ReservationNo::from(no.as_str())].entity;
        assert_eq!(got.status().as_str(), want.state, "{no}: state");
        assert_eq!(got.user_id(), want.user, "{no}: user");
        assert_eq!(got.target(), want.target.as_deref(), "{no}: target");
        let ids: Vec<&str> = got.applied_event_ids().collect();
        assert_eq!(ids, want.applied, "{no}: applied event ids");
    }
}

fn core(c: &mut Criterion) {
    const EVENTS: usize = 100_000;
    let events = ordo::tools::generate::generate(EVENTS, 3);
    let lines: Vec<(Vec<u8>, Vec<u8>)> = events
        .iter()
        .map(|e| {
            (
                e.reservation_no.as_str().as_bytes().to_vec(),
                e.to_json().into_bytes(),
            )
        })
        .collect();
    // One partition owns every key, so the whole workload runs through one thread's loop.
    let processor = Processor {
        partition: Partition(0),
        partitions: PartitionCount::new(1).unwrap(),
        partitioner: Partitioner::AbsHashModN,
        epoch: Epoch(1),
    };
    check_against_the_reference_model(&processor, &events, &lines);
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    group.bench_function("decode_route_apply", |b| {
        b.iter(|| run_once(&processor, &lines).1)
    });
    group.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);
