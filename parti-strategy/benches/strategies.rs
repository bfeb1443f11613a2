//! Compute time of each strategy from its previous assignment, at 10k partitions × 200
//! workers and 100k × 10k. Run with `cargo bench -p parti-strategy`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use parti_strategy::{
    ConsistentHash, Partition, RoundRobin, Sticky, Strategy, StrategyInput, Worker,
};

fn fleet(partitions: usize, workers: usize) -> (Vec<Partition>, Vec<Worker>) {
    let partitions = (0..partitions)
        .map(|i| Partition::new(format!("p-{i}")).expect("valid id"))
        .collect();
    let workers = (0..workers)
        .map(|i| Worker::new(format!("worker-{i}")))
        .collect();
    (partitions, workers)
}

fn strategies(c: &mut Criterion) {
    let candidates: [(&str, Box<dyn Strategy>); 4] = [
        ("sticky", Box::new(Sticky::new())),
        (
            "consistent-hash-bounded",
            Box::new(ConsistentHash::bounded()),
        ),
        ("consistent-hash", Box::new(ConsistentHash::new())),
        ("round-robin", Box::new(RoundRobin::new())),
    ];
    for (partitions, workers) in [(10_000, 200), (100_000, 10_000)] {
        let (p, w) = fleet(partitions, workers);
        let mut group = c.benchmark_group(format!("assign/{partitions}x{workers}"));
        if partitions > 10_000 {
            group.sample_size(10);
        }
        for (name, strategy) in &candidates {
            let previous = strategy
                .assign(&StrategyInput::new(&w, &p))
                .expect("valid input");
            let input = StrategyInput::new(&w, &p).with_previous(&previous);
            group.bench_with_input(BenchmarkId::from_parameter(name), &input, |b, input| {
                b.iter(|| strategy.assign(black_box(input)).expect("valid input"));
            });
        }
        group.finish();
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    strategies(&mut criterion);
    criterion.final_summary();
}
