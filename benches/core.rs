//! The pure core on one thread: decode + route + apply, no I/O.
//! `cargo bench --bench core`; the figure in the README is events/s from `thrpt`.

use std::collections::HashMap;

/// The allocator the `ordo` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ordo::core::Epoch;
use ordo::core::changelog::Stored;
use ordo::core::event::ReservationNo;
use ordo::core::partitioner::{Partition, PartitionCount, Partitioner};
use ordo::core::step::{Processor, Step};

fn core(c: &mut Criterion) {
    const EVENTS: usize = 100_000;
    let lines: Vec<(Vec<u8>, Vec<u8>)> = ordo::tools::generate::generate(EVENTS, 3)
        .into_iter()
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
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    group.bench_function("decode_route_apply", |b| {
        b.iter(|| {
            let mut state: HashMap<ReservationNo, Stored> = HashMap::with_capacity(EVENTS);
            let mut applied = 0u64;
            for (offset, (key, value)) in lines.iter().enumerate() {
                if let Step::Applied { key, stored, .. } =
                    processor.step(Some(key), value, ordo::core::Offset(offset as u64), &state)
                {
                    state.insert(key, stored);
                    applied += 1;
                }
            }
            applied
        })
    });
    group.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);
