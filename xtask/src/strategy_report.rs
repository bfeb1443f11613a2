//! `cargo xtask strategy-report`: compute time, balance and movement of every strategy, one
//! JSON object per line.

use std::time::Instant;

use parti_strategy::{
    Assignment, Balance, ConsistentHash, Partition, RoundRobin, Sticky, Strategy, StrategyInput,
    Worker,
};

/// What to measure.
pub(crate) struct Options {
    partitions: usize,
    workers: usize,
    skewed: bool,
    runs: usize,
    vnodes: u32,
    only: Option<String>,
    trials: usize,
    churn: usize,
}

pub(crate) const USAGE: &str = "\
  strategy-report --partitions P --workers N [--weights uniform|skewed] [--runs R] [--vnodes V]
                  [--trials T] [--only NAME] [--churn K]
          per strategy: compute time (release build, median and max of R >= 20 runs from the
          previous assignment), balance, partitions moved on N -> N+1 and N -> N-1
          against the optimum (means over T >= 1 different joining / leaving workers,
          default 10: one join is dominated by where one hash lands), and the share of
          partitions on their first choice on the plain ring; with --churn K, also K
          pseudo-random joins and leaves, each from the assignment before: partitions moved
          per change and the first-choice share at the end; one JSON object per line";

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Self {
            partitions: 0,
            workers: 0,
            skewed: false,
            runs: 20,
            vnodes: ConsistentHash::DEFAULT_VNODES,
            only: None,
            trials: 10,
            churn: 0,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<usize>()
                    .map_err(|e| format!("{flag} {value}: {e}"))
            };
            match flag.as_str() {
                "--partitions" => options.partitions = number()?,
                "--workers" => options.workers = number()?,
                "--runs" => options.runs = number()?,
                "--trials" => options.trials = number()?,
                "--churn" => options.churn = number()?,
                "--vnodes" => {
                    options.vnodes = u32::try_from(number()?).map_err(|e| e.to_string())?
                }
                "--only" => options.only = Some(value.clone()),
                "--weights" => {
                    options.skewed = match value.as_str() {
                        "uniform" => false,
                        "skewed" => true,
                        other => return Err(format!("--weights {other}: uniform or skewed")),
                    }
                }
                other => return Err(format!("unknown option {other}")),
            }
        }
        if options.partitions == 0 || options.workers < 2 {
            return Err("--partitions must be at least 1 and --workers at least 2".to_owned());
        }
        if options.trials == 0 || options.trials > options.workers {
            return Err("--trials must be between 1 and the number of workers".to_owned());
        }
        if options.runs < 20 {
            return Err("--runs must be at least 20".to_owned());
        }
        Ok(options)
    }
}

/// splitmix64: a fixed pseudo-random function of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Deterministic skewed weights: 5 % weigh 10, 15 % weigh 3, the rest 1.
fn weight(index: usize, skewed: bool) -> u32 {
    if !skewed {
        return 1;
    }
    let x = splitmix64(index as u64);
    match x % 100 {
        0..5 => 10,
        5..20 => 3,
        _ => 1,
    }
}

pub(crate) fn run(options: &Options) -> Result<(), String> {
    let partitions: Vec<Partition> = (0..options.partitions)
        .map(|i| {
            Partition::new(format!("p-{i}"))
                .map(|p| p.with_weight(weight(i, options.skewed)))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let workers: Vec<Worker> = (0..options.workers)
        .map(|i| Worker::new(format!("worker-{i}")))
        .collect();
    let ring = ConsistentHash::new()
        .with_vnodes(options.vnodes)
        .map_err(|e| e.to_string())?;
    let strategies: [(&dyn Strategy, &str); 4] = [
        (&Sticky::new(), "sticky"),
        (
            &ring.with_epsilon(0.25).map_err(|e| e.to_string())?,
            "consistent-hash eps=0.25",
        ),
        (&ring, "consistent-hash plain"),
        (&RoundRobin::new(), "round-robin"),
    ];
    for (strategy, label) in strategies {
        if options
            .only
            .as_ref()
            .is_some_and(|only| !label.starts_with(only.as_str()))
        {
            continue;
        }
        println!(
            "{}",
            measure(strategy, label, &workers, &partitions, &ring, options)?
        );
    }
    Ok(())
}

/// One strategy's JSON line. `ring` is the plain ring that defines first choices.
fn measure(
    strategy: &dyn Strategy,
    label: &str,
    workers: &[Worker],
    partitions: &[Partition],
    ring: &ConsistentHash,
    options: &Options,
) -> Result<String, String> {
    let assign = |workers: &[Worker], previous: Option<&Assignment>| {
        let input = StrategyInput::new(workers, partitions);
        let input = match previous {
            Some(previous) => input.with_previous(previous),
            None => input,
        };
        strategy.assign(&input).map_err(|e| format!("{label}: {e}"))
    };
    let base = assign(workers, None)?;

    let mut times = Vec::with_capacity(options.runs);
    for _ in 0..options.runs {
        let start = Instant::now();
        let again = assign(workers, Some(&base))?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(again);
    }
    times.sort_by(f64::total_cmp);

    let balance = if options.skewed {
        Balance::of_weights(&base, workers, partitions)
    } else {
        Balance::of_counts(&base, workers)
    };

    // Scale out: T different workers join in turn (each alone, from `base`).
    let mut moved_out = 0;
    let mut optimal_out = 0;
    for trial in 0..options.trials {
        let mut more = workers.to_vec();
        more.push(Worker::new(format!("joiner-{trial}")));
        moved_out += assign(&more, Some(&base))?.moved_from(&base);
        optimal_out += partitions.len() / more.len();
    }
    // Scale in: T different workers, spread over the fleet, leave in turn.
    let mut moved_in = 0;
    let mut optimal_in = 0;
    for trial in 0..options.trials {
        let leaving = trial * workers.len() / options.trials;
        let mut fewer = workers.to_vec();
        let gone = fewer.remove(leaving);
        moved_in += assign(&fewer, Some(&base))?.moved_from(&base);
        optimal_in += base.partitions_of(gone.id()).len();
    }
    let mean = |total: usize| total as f64 / options.trials as f64;

    // The share of partitions on their first choice: the owner the plain ring gives them.
    let at_first_choice = |assignment: &Assignment, workers: &[Worker]| {
        let first = ring
            .assign(&StrategyInput::new(workers, partitions))
            .map_err(|e| format!("plain ring: {e}"))?;
        let on_first = partitions
            .iter()
            .filter(|p| assignment.owner(p.id()) == first.owner(p.id()))
            .count();
        Ok::<f64, String>(on_first as f64 / partitions.len() as f64)
    };
    let mut churn = String::new();
    if options.churn > 0 {
        // Pseudo-random joins and leaves, each computed from the assignment before.
        let mut fleet = workers.to_vec();
        let mut current = base.clone();
        let mut moved = 0;
        for step in 0..options.churn as u64 {
            let roll = splitmix64(step);
            if roll % 2 == 0 || fleet.len() == 1 {
                fleet.push(Worker::new(format!("churn-{step}")));
            } else {
                fleet.remove((roll >> 1) as usize % fleet.len());
            }
            let next = assign(&fleet, Some(&current))?;
            moved += next.moved_from(&current);
            current = next;
        }
        churn = format!(
            ",\"churn\":{},\"churn_moved_per_change\":{:.1},\"churn_at_first_choice\":{:.4}",
            options.churn,
            moved as f64 / options.churn as f64,
            at_first_choice(&current, &fleet)?,
        );
    }

    Ok(format!(
        "{{\"strategy\":\"{label}\",\"partitions\":{},\"workers\":{},\"weights\":\"{}\",\
         \"runs\":{},\"compute_ms_median\":{:.3},\"compute_ms_max\":{:.3},\
         \"max_over_avg\":{:.4},\"max_minus_min\":{},\"trials\":{},\
         \"moved_scale_out\":{:.1},\"optimal_scale_out\":{:.1},\"moved_over_optimal_out\":{:.3},\
         \"moved_scale_in\":{:.1},\"optimal_scale_in\":{:.1},\"moved_over_optimal_in\":{:.3},\
         \"at_first_choice\":{:.4}{churn}}}",
        partitions.len(),
        workers.len(),
        if options.skewed { "skewed" } else { "uniform" },
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1],
        balance.max_over_mean(),
        balance.spread(),
        options.trials,
        mean(moved_out),
        mean(optimal_out),
        moved_out as f64 / optimal_out.max(1) as f64,
        mean(moved_in),
        mean(optimal_in),
        moved_in as f64 / optimal_in.max(1) as f64,
        at_first_choice(&base, workers)?,
    ))
}
