//! One-time costs of the destination check, which criterion's warm loops never see: the
//! policy's build and the first check of the process, the first check of each region
//! (its patterns compiled), and the process's memory once every region has been seen, from
//! one thread and then from a second.
//!
//! `cargo bench --bench phone_regions`. Prints a report; asserts nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use otpgate::defense::{DestinationConfig, DestinationPolicy};
use phonenumber::metadata::DATABASE;

/// Resident memory of this process, from `/proc/self/status` (Linux).
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

/// Check each target once; the time of each check.
fn check_each(policy: &DestinationPolicy, targets: &[String]) -> Vec<Duration> {
    targets
        .iter()
        .map(|target| {
            let start = Instant::now();
            black_box(policy.check(black_box(target)));
            start.elapsed()
        })
        .collect()
}

fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let total: Duration = times.iter().sum();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    format!(
        "n={} mean={:?} median={:?} p90={:?} max={:?} total={:?}",
        times.len(),
        total / times.len() as u32,
        at(0.5),
        at(0.9),
        at(1.0),
        total
    )
}

fn main() {
    let mobiles: Vec<String> = include_str!("load/mobiles.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let rss_start = rss_mib();
    let start = Instant::now();
    let policy = DestinationPolicy::from_config(&DestinationConfig::default()).unwrap();
    let build = start.elapsed();

    let start = Instant::now();
    black_box(policy.check("+447400123456"));
    let first = start.elapsed();
    let rss_first = rss_mib();

    let mut cold = check_each(&policy, &mobiles);
    let rss_mobiles = rss_mib();

    // Every example number of every type of every plan, so every plan is compiled.
    let every: Vec<String> = (1..=999u16)
        .flat_map(|code| {
            DATABASE
                .by_code(&code)
                .unwrap_or_default()
                .into_iter()
                .flat_map(move |meta| {
                    let d = meta.descriptors();
                    [
                        Some(d.general()),
                        d.fixed_line(),
                        d.mobile(),
                        d.toll_free(),
                        d.premium_rate(),
                        d.shared_cost(),
                        d.personal_number(),
                        d.voip(),
                        d.pager(),
                        d.uan(),
                        d.voicemail(),
                    ]
                    .into_iter()
                    .flatten()
                    .filter_map(|desc| desc.example())
                    .map(move |example| format!("+{code}{example}"))
                })
        })
        .collect();
    check_each(&policy, &every);
    let rss_every = rss_mib();

    let mut warm = check_each(&policy, &mobiles);

    let second = std::thread::scope(|s| {
        s.spawn(|| {
            let times = check_each(&policy, &every);
            (times, rss_mib())
        })
        .join()
        .unwrap()
    });
    let (mut second_thread, rss_second) = second;

    println!("policy built from the default config: {build:?}");
    println!("first check of the process (GB): {first:?}");
    println!(
        "first check of each of {} regions: {}",
        mobiles.len(),
        summary(&mut cold)
    );
    println!("same numbers again, warm: {}", summary(&mut warm));
    println!(
        "every example number ({}) from a second thread: {}",
        every.len(),
        summary(&mut second_thread)
    );
    println!(
        "VmRSS MiB: start {rss_start:.1}, after first check {rss_first:.1}, after the \
         mobile list {rss_mobiles:.1}, after every example {rss_every:.1}, after a second \
         thread {rss_second:.1}"
    );
}
